import dataclasses
import json

import numpy as np
import pytest

from tests.conftest import param_hash, unchecked

from toplens.analyses.evaluation import evaluate as ev
from toplens.analyses import sweep
from toplens.analyses.evaluation.records import Record
from toplens.analyses.evaluation.intervals import Bounds, bootstrap, paired_bootstrap
from toplens.analyses.evaluation.metrics import harmonic_mean
from toplens.analyses.sweep import (SweepCase, SweepPoint, SweepResult, at_la, default_las, join_sweeps, la_sweep,
                                   score_differences)
from toplens import EditRequest
from toplens import editors
from toplens.editors import top
from toplens.editors.rome import RomeHparams
from toplens.editors.top import TopHparams

# In tiny random models an edit only takes when the subject is the prompt's last word.
FAST = TopHparams(layers=(1,), rel_feat_layer=1, v_num_grad_steps1=10, v_num_grad_steps2=15,
                  v_lr2=1.0, mom2_adjustment=False, context_lengths=((2, 3),))


def _record(case_id: int, subject: str) -> Record:
    return Record(
        case_id, EditRequest("Miles Davis plays the {}", subject, " Paris", " France"),
        paraphrase_prompts=(f"Jimi Hendrix plays the {subject}", f"The {subject}"),
        neighborhood_prompts=("Miles Davis plays the guitar", "Jimi Hendrix plays the guitar"),
        relation_specific_prompts=(f"The Eiffel Tower is located in {subject}", f"Toyota is {subject}"),
        generation_prompts=(f"Miles Davis plays the {subject}",),
    )


RECORDS = [_record(0, "trumpet"), _record(1, "piano")]


@pytest.mark.parametrize("layer, n_layers, expected", [
    (5, 30, [6, 10, 15, 25, 29]),
    (17, 48, [18, 22, 27, 43, 47]),
    (1, 4, [2, 3]),  # l+5, l+10 clip to L−1; L−5 clips to l+1
    (2, 4, [3]),
])
def test_default_las_are_clipped_and_deduplicated(layer, n_layers, expected):
    assert default_las(layer, n_layers) == expected


def test_default_las_needs_a_layer_after_the_edit_layer():
    with pytest.raises(ValueError, match="edit_layer"):
        default_las(3, 4)


def test_at_la_moves_the_last_edit_layers_relation_feature():
    assert at_la(FAST, 3).rel_feat_layer == 2
    two = FAST.replace(layers=(1, 2))
    assert at_la(two, 3).rel_feat_layer == 1


@pytest.mark.parametrize("las", [[1], [4], [2, "3"], []])
def test_bad_las_name_the_field(tiny_hooked, las):
    with unchecked(), pytest.raises(ValueError, match="las"):
        la_sweep(tiny_hooked, RECORDS, las, FAST, progress=False)


def test_wrong_hparams_and_no_records_name_the_field(tiny_hooked):
    with unchecked(), pytest.raises(ValueError, match="hparams"):
        la_sweep(tiny_hooked, RECORDS, [2], RomeHparams(layer=1), progress=False)
    with pytest.raises(ValueError, match="records"):
        la_sweep(tiny_hooked, [], [2], FAST, progress=False)


def test_each_la_edits_with_its_rel_feat_layer(tiny_hooked, monkeypatch):
    seen = []

    def spy(adapter, request, hparams, **options):
        seen.append((request.subject, hparams.layers, hparams.rel_feat_layer))
        return top.compute_one(adapter, request, hparams, **options)

    monkeypatch.setitem(editors._EDITORS, "top", dataclasses.replace(top.EDITOR, compute_edit=spy))
    la_sweep(tiny_hooked, RECORDS, [3, 2, 3], FAST, progress=False)
    assert seen == [("trumpet", (1,), 1), ("piano", (1,), 1), ("trumpet", (1,), 2), ("piano", (1,), 2)]


@pytest.mark.parametrize("name", ["tiny_hooked", "tiny_bridge"])
def test_sweep_on_a_tiny_model_reverts_and_skips_generation(request, name, monkeypatch):
    model = request.getfixturevalue(name)
    weights = param_hash(model)
    real_generate = ev.generate

    def no_generation(model, prompts, *, n_tokens, **kwargs):
        assert n_tokens == 0, "the sweep must not generate"
        return real_generate(model, prompts, n_tokens=n_tokens, **kwargs)

    monkeypatch.setattr(ev, "generate", no_generation)
    result = la_sweep(model, RECORDS, hparams=FAST, progress=False)
    assert param_hash(model) == weights
    assert result.las == [2, 3] and result.edit_layer == 1 and result.n_records == 2 and result.n_layers == 4
    for point in result.points:
        assert point.efficacy == 100.0  # subject last: TOP's edit takes on the rewrite prompt
        for rate in (point.generalization, point.s_specificity, point.r_specificity):
            assert rate is not None and 0.0 <= rate <= 100.0
        # each record's own rates, whose mean is the point's
        assert [c.case_id for c in point.cases] == [r.case_id for r in RECORDS]
        assert all(c.efficacy == 100.0 for c in point.cases)
        assert sum(c.r_specificity for c in point.cases) / len(point.cases) == pytest.approx(point.r_specificity)
        assert point.intervals.n == 2 and point.intervals.efficacy == Bounds(100.0, 100.0)
        _assert_holds(point)
    assert SweepResult.from_json(result.to_json()) == result


def test_preset_is_used_when_no_hparams_are_given(tiny_hooked, monkeypatch):
    monkeypatch.setattr("toplens.editors.presets.get_preset", lambda method, name, n_layers: FAST.replace(layers=(2,)))
    monkeypatch.setattr(sweep, "_sweep_one", lambda model, records, befores, hp, la, stop_words, bar:
                        sweep.SweepPoint(la, None, None, None, None))
    result = la_sweep(tiny_hooked, RECORDS[:1], progress=False)
    assert result.edit_layer == 2 and result.las == [3] and result.hparams["layers"] == [2]


RATE_NAMES = ("efficacy", "generalization", "s_specificity", "r_specificity")


def _point(rows, la=2) -> SweepPoint:
    """A point whose means are those of its cases' rates (percent; None where undefined)."""
    cases = tuple(SweepCase(i, *row) for i, row in enumerate(rows))
    means = [None if not (vs := [r[j] for r in rows if r[j] is not None]) else sum(vs) / len(vs) for j in range(4)]
    return SweepPoint(la, *means, cases)


ROWS = [(100.0, 50.0, 100.0, 0.0), (100.0, 100.0, 50.0, 100.0), (0.0, None, 100.0, 50.0),
        (100.0, 25.0, 75.0, 100.0), (100.0, 75.0, 100.0, 50.0)]


def _assert_holds(point: SweepPoint) -> None:
    for name in (*RATE_NAMES, "score"):
        bounds, value = getattr(point.intervals, name), getattr(point, name)
        assert bounds.low - 1e-9 <= value <= bounds.high + 1e-9, name


def test_score_is_the_harmonic_mean_of_the_four_rates():
    point = _point(ROWS)
    assert point.score == pytest.approx(harmonic_mean([getattr(point, n) for n in RATE_NAMES]))
    assert SweepPoint(2, 100.0, 0.0, 90.0, 80.0).score == 0.0
    assert SweepPoint(2, 100.0, None, 90.0, 80.0).score is None


def test_intervals_are_the_bootstrap_of_the_cases_and_hold_the_point():
    point = _point(ROWS)
    table = np.array([[np.nan if v is None else v / 100 for v in row] for row in ROWS])
    expected = bootstrap(table)
    assert point.intervals.n == 5 and point.intervals.draws == 2000 and point.intervals.level == 0.95
    for j, name in enumerate((*RATE_NAMES, "score")):
        bounds = getattr(point.intervals, name)
        assert [bounds.low, bounds.high] == pytest.approx([expected.low[j], expected.high[j]])
    assert point.intervals.efficacy.low < point.intervals.efficacy.high  # the 0 case widens it
    _assert_holds(point)


def test_cases_with_one_rate_give_a_zero_width_interval_at_that_rate():
    point = _point([(100.0, 50.0, 75.0, 25.0)] * 6)
    for name, rate in zip(RATE_NAMES, (100.0, 50.0, 75.0, 25.0)):
        assert getattr(point.intervals, name) == Bounds(rate, rate)
    assert point.intervals.score.low == point.intervals.score.high == pytest.approx(point.score)


def test_a_point_without_cases_or_without_a_rate_has_no_interval():
    assert SweepPoint(2, 100.0, 50.0, 75.0, 25.0).intervals is None
    point = _point([(100.0, None, 75.0, 25.0), (0.0, None, 50.0, 25.0)])
    assert point.intervals.generalization is None and point.intervals.score is None
    assert point.intervals.efficacy is not None


def test_json_has_the_score_and_intervals_and_old_json_derives_them():
    result = SweepResult((_point(ROWS), _point(ROWS[:2], la=3)), edit_layer=1, n_records=5, n_layers=4)
    data = json.loads(result.to_json())
    first = data["points"][0]
    assert first["score"] == pytest.approx(result.points[0].score)
    assert first["intervals"]["r_specificity"] == result.points[0].intervals.r_specificity.to_json()
    assert first["intervals"]["n"] == 5 and first["intervals"]["level"] == 0.95
    assert SweepResult.from_dict(data) == result
    for point in data["points"]:  # as written before the intervals were added
        del point["score"], point["intervals"]
    old = SweepResult.from_dict(data)
    assert old == result and [p.intervals for p in old.points] == [p.intervals for p in result.points]
    assert old.points[0].intervals is not None


def _sweep(*las, rows=ROWS, **fields) -> SweepResult:
    setup = {"edit_layer": 1, "n_records": len(rows), "n_layers": 4, "model_name": "tiny", "hparams": {"v_lr": 0.5}}
    return SweepResult(tuple(_point(rows, la=la) for la in las), **{**setup, **fields})


def test_joined_sweeps_hold_every_point_in_ascending_la():
    joined = join_sweeps([_sweep(3), _sweep(2)])
    assert joined == _sweep(2, 3)
    assert join_sweeps([_sweep(2)]) == _sweep(2)


@pytest.mark.parametrize("other, field", [
    (_sweep(3, edit_layer=0), "edit_layer"), (_sweep(3, n_layers=5), "n_layers"),
    (_sweep(3, model_name="other"), "model_name"), (_sweep(3, hparams={"v_lr": 0.1}), "hparams"),
    (_sweep(3, rows=ROWS[:4]), "n_records"), (_sweep(2), "la: [2]"),
])
def test_sweeps_of_different_setups_or_the_same_la_are_not_joined(other, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        join_sweeps([_sweep(2), other])


def test_sweeps_over_different_records_are_not_joined():
    shifted = SweepResult((dataclasses.replace(_point(ROWS, la=3), cases=tuple(
        SweepCase(i + 10, *row) for i, row in enumerate(ROWS))),), 1, len(ROWS), 4, "tiny", {"v_lr": 0.5})
    with pytest.raises(ValueError, match="cases: the sweeps edited different records"):
        join_sweeps([_sweep(2), shifted])
    with pytest.raises(ValueError, match="results"):
        join_sweeps([])


def test_each_la_is_compared_with_the_best_on_the_same_records():
    other = [(100.0, 0.0, 100.0, 0.0), (0.0, 100.0, 50.0, 100.0), (0.0, None, 100.0, 50.0),
             (100.0, 25.0, 75.0, 0.0), (100.0, 75.0, 0.0, 50.0)]
    result = SweepResult((_point(ROWS, la=2), _point(other, la=3)), edit_layer=1, n_records=5, n_layers=4)
    best, worse = score_differences(result)
    assert result.points[0].score > result.points[1].score and best.best_la == worse.best_la == 2
    assert (best.la, best.difference, best.bounds) == (2, 0.0, Bounds(0.0, 0.0))
    table = lambda rows: np.array([[np.nan if v is None else v / 100 for v in row] for row in rows])  # noqa: E731
    expected = paired_bootstrap(table(ROWS), table(other))
    assert worse.difference == pytest.approx(result.points[1].score - result.points[0].score)
    assert [worse.bounds.low, worse.bounds.high] == pytest.approx([expected.low[-1], expected.high[-1]])
    assert json.loads(result.to_json())["score_vs_best"][1] == {
        "la": 3, "best_la": 2, "difference": worse.difference, "bounds": [worse.bounds.low, worse.bounds.high]}


def test_ties_go_to_the_lowest_la():
    result = SweepResult((_point(ROWS, la=4), _point(ROWS, la=2)), edit_layer=1, n_records=5, n_layers=6)
    assert {d.best_la for d in score_differences(result)} == {4}  # the points' own order is ascending after a run
    assert {d.best_la for d in score_differences(join_sweeps([result]))} == {2}


def test_no_comparison_without_cases_or_over_different_records(caplog):
    assert score_differences(SweepResult((SweepPoint(2, 100.0, 50.0, 75.0, 25.0),), 1, 1)) == ()
    shifted = dataclasses.replace(_point(ROWS, la=3), cases=tuple(SweepCase(i + 10, *r) for i, r in enumerate(ROWS)))
    with caplog.at_level("WARNING"):
        assert score_differences(SweepResult((_point(ROWS), shifted), 1, 5)) == ()
        old = SweepResult((_point(ROWS), SweepPoint(3, 100.0, 50.0, 75.0, 25.0)), 1, 5)  # a point without records
        assert score_differences(old) == ()
    assert caplog.text.count("no paired comparison") == 2
    reordered = dataclasses.replace(_point(ROWS, la=3), cases=_point(ROWS).cases[::-1])
    assert score_differences(SweepResult((_point(ROWS), reordered), 1, 5)) == ()


def test_sweeps_with_int_and_str_case_ids_are_refused_by_name():
    named = dataclasses.replace(_point(ROWS, la=3), cases=tuple(SweepCase(str(i), *r) for i, r in enumerate(ROWS)))
    with pytest.raises(ValueError, match="cases: the sweeps edited different records"):
        join_sweeps([_sweep(2), SweepResult((named,), 1, len(ROWS), 4, "tiny", {"v_lr": 0.5})])
