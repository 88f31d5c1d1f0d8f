from bench import eval_throughput as bench
from toplens.analyses.evaluation.runner import run_eval
from tests.analyses.evaluation.test_evaluate import FAST, _record


def test_the_agreement_compares_every_prompt_of_both_paths(tiny_hooked, tmp_path):
    records = [_record(0), _record(1, "guitar"), _record(2, "drums")]
    kw = dict(hparams={"rome": FAST}, generation_tokens=0, progress=False)
    serial = run_eval(tiny_hooked, records, ["rome"], tmp_path / "a", **kw)
    batched = run_eval(tiny_hooked, records, ["rome"], tmp_path / "b", batch_size=3, **kw)
    agree = bench.agreement(batched, serial)["rome"]
    per_case = sum(len(getattr(serial.cases["rome"][0], n).outcomes)
                   for n in ("efficacy", "generalization", "s_specificity", "r_specificity", "efficacy_at_1"))
    assert agree["prompts"] == 3 * per_case and agree["outcomes_differing"] == 0
    assert agree["max_nll_difference"] < 1e-4
    assert bench.texts_differing(tmp_path / "a", tmp_path / "b") == (0, 0)  # no generations here
    rows = [{"batch_size": 1, "seconds": 120.0},
            {"batch_size": 8, "seconds": 60.0, "agreement": {"rome": agree}, "texts": (24, 1)}]
    text = bench.markdown(rows, 40, 30)
    assert "| batch size 1 | 120 | 20.00 | 1.00× |" in text and "| batch size 8 | 60 | 40.00 | 2.00× |" in text
    assert f"| batch size 8 | rome | {agree['prompts']} | " in text and "| 0 | 1 of 24 |" in text


def test_the_texts_of_two_runs_are_compared_one_by_one(tiny_hooked, tmp_path):
    records = [_record(0), _record(1, "guitar")]
    kw = dict(hparams={"rome": FAST}, generation_tokens=3, progress=False)
    run_eval(tiny_hooked, records, ["rome"], tmp_path / "a", **kw)
    run_eval(tiny_hooked, records, ["rome"], tmp_path / "b", batch_size=2, **kw)
    n, differing = bench.texts_differing(tmp_path / "a", tmp_path / "b")
    assert n == 2 * len(records[0].generation_prompts) and differing == 0
    run_eval(tiny_hooked, records, ["rome"], tmp_path / "c", **{**kw, "seed": 5})
    assert bench.texts_differing(tmp_path / "a", tmp_path / "c")[1] > 0  # the comparison can fail
