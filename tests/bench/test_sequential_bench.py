from bench import sequential as bench
from toplens import ModelAdapter
from toplens.core.covariance import key_second_moment, SampledCorpus
from toplens.core.nullspace import null_space


def test_each_config_is_its_methods_preset_on_the_fast_path_with_its_projection():
    memit = bench.hparams_for(bench.CONFIGS["memit-nullspace"], 30)
    top = bench.hparams_for(bench.CONFIGS["top"], 30)
    assert bench.CONFIGS["memit"].batch_size == 10 and bench.CONFIGS["rome"].batch_size == 1
    assert memit.project == "nullspace" and top.project == "none"
    assert memit.stop_rule == "fit" and top.rel_feat_layer == 18 and top.context_lengths == ((2, 5),)


def test_the_statistic_is_timed_per_layer_and_keeps_the_thresholds_share(tiny_model):
    adapter = ModelAdapter(tiny_model)
    rows = bench.statistic(adapter, [1, 0, 1], tokens=100, threshold=0.5)
    assert [r["layer"] for r in rows] == [0, 1] and all(r["tokens"] == 128 and r["seconds"] >= 0 for r in rows)
    moment = key_second_moment(adapter, 1, sampled=SampledCorpus(n_texts=2))
    assert rows[1]["kept_fraction"] == null_space(moment.float(), 1, 0.5).kept_fraction


def test_the_table_has_a_row_per_run_and_measured_checkpoint():
    point = dict(edits=10, efficacy=90.0, generalization=80.0, s_specificity=70.0, r_specificity=60.0,
                 efficacy_at_1=50.0, retention=None, fluency=612.3, seconds=41.0)
    runs = [{"label": "rome", "points": [point, {**point, "edits": 50}], "retention_facts": 100, "fluency_before": 620.0}]
    text = bench.markdown(runs, [{"layer": 5, "tokens": 100032, "seconds": 93.0, "kept_fraction": 0.45}], [10, 50, 100], 50)
    assert "| rome | 10 | 90.0 | 80.0 | 70.0 | 60.0 | 50.0 | – | 612.3 | 0 | 41 |" in text
    assert "| rome | 50 |" in text and "| rome | 100 |" not in text
    assert "| 5 | 100032 | 93 | 45.0% |" in text and "Fluency 620.0" in text


def test_a_summary_run_reads_back_as_its_result(tmp_path):
    hp = bench.hparams_for(bench.CONFIGS["top-nullspace"], 30)
    point = dict(edits=1, efficacy=100.0, generalization=50.0, s_specificity=70.0, r_specificity=60.0,
                 efficacy_at_1=100.0, retention=float("nan"), fluency=None, seconds=5.0)
    from toplens.analyses.evaluation.cases import jsonable
    run = {"method": "top", "label": "top+nullspace", "hparams": jsonable(hp.to_dict()), "points": [point],
           "retention_facts": 0, "fluency_before": None}
    result = bench.result_of(run)
    assert result.hparams == hp and result.label == "top+nullspace" and result.points[0].retention is None


def test_runs_of_an_earlier_invocation_with_the_same_n_stay_in_the_summary(tmp_path):
    import json
    summary = tmp_path / "summary.json"
    assert bench.earlier_runs(summary, 200, 100_000) == {}
    runs = [{"label": "rome", "points": []}, {"label": "top+nullspace", "points": []}]
    summary.write_text(json.dumps({"runs": runs, "statistic": [], "n": 200, "corpus_tokens": 100_000}))
    assert list(bench.earlier_runs(summary, 200, 100_000)) == ["rome", "top+nullspace"]
    assert bench.earlier_runs(summary, 100, 100_000) == {}  # another length: its curves are not comparable
    assert bench.earlier_runs(summary, 200, 50_000) == {}  # another corpus: another projection and statistic
    summary.write_text(json.dumps({"runs": runs, "statistic": [], "n": 200}))
    assert bench.earlier_runs(summary, 200, 100_000) == {}  # a summary that does not say its corpus size


def test_the_runs_keep_the_recorded_presets():
    from toplens.editors.presets import fast_path, get_preset
    rome = bench.hparams_for(bench.CONFIGS["rome"], 30)
    assert rome == fast_path(get_preset("rome", "smollm2-135m-reference"))  # lr 0.5: not ROME's short path
    assert rome.v_lr == 0.5 and rome.precision == "auto"


def test_a_tabulating_run_writes_the_figure_under_its_given_name(tmp_path):
    import json
    from toplens.analyses.evaluation.cases import jsonable
    hp = bench.hparams_for(bench.CONFIGS["rome"], 30)
    point = dict(edits=1, efficacy=100.0, generalization=50.0, s_specificity=70.0, r_specificity=60.0,
                 efficacy_at_1=100.0, retention=90.0, fluency=600.0, seconds=5.0)
    run = {"method": "rome", "label": "rome", "hparams": jsonable(hp.to_dict()), "points": [point],
           "retention_facts": 100, "fluency_before": 610.0}
    (tmp_path / "summary.json").write_text(json.dumps({"runs": [run], "statistic": [], "n": 1, "corpus_tokens": 10}))
    doc, figures = tmp_path / "curves.md", tmp_path / "figures"
    assert bench.main(["--skip-run", "--n", "1", "--out-dir", str(tmp_path), "--doc", str(doc),
                       "--figure-dir", str(figures), "--figure-name", "mine"]) == 0
    written = [p.stem for p in figures.iterdir()]
    assert written and set(written) == {"mine"}
    assert "| rome | 1 | 100.0 | 50.0 |" in doc.read_text()
