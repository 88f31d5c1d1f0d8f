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
    text = bench.markdown([{"batch_size": 1, "seconds": 120.0}, {"batch_size": 8, "seconds": 60.0}],
                          {"rome": agree}, 40, 30)
    assert "| batch size 1 | 120 | 20.00 | 1.00× |" in text and "| batch size 8 | 60 | 40.00 | 2.00× |" in text
