from types import SimpleNamespace

import pytest

from bench.edit_latency import StepClock, optimized_layer, with_section
from toplens.editors import get_editor
from toplens.editors.memit import MemitHparams
from toplens.editors.rets import RetsHparams
from toplens.editors.rome import RomeHparams
from toplens.editors.top import TopHparams


def test_step_clock_starts_a_stage_at_every_step_zero(monkeypatch):
    stamps = iter([0.0, 1.0, 3.0, 10.0, 10.5])
    monkeypatch.setattr("bench.edit_latency.time.perf_counter", lambda: next(stamps))
    clock = StepClock()
    for step, final in ((0, False), (1, False), (2, False), (3, True), (0, False), (1, False)):
        clock(None, SimpleNamespace(step=step, final=final))  # a stage's final evaluation is no step
    assert [len(stage) for stage in clock.stages] == [3, 2]
    assert clock.seconds_per_step(0) == [1.0, 2.0]
    assert clock.seconds_per_step(1) == [0.5]
    assert clock.seconds_per_step(2) == []  # no such stage (ROME has one)


@pytest.mark.parametrize("method, hp, layer", [
    ("rome", RomeHparams(layer=5), 5), ("rets", RetsHparams(layer=4), 4),
    ("memit", MemitHparams(layers=(3, 4, 6)), 6), ("top", TopHparams(layers=(5,), rel_feat_layer=10), 15),
])
def test_optimized_layer_is_where_each_method_starts_its_steps(method, hp, layer):
    assert optimized_layer(get_editor(method), hp) == layer


def test_each_lever_path_changes_one_setting_of_the_reference_path_and_fast_changes_all():
    from bench.edit_latency import PATHS

    base = PATHS["reference"](RomeHparams(layer=5))
    fields = ("precision", "stop_rule", "context_lengths", "v_lr", "early_stop_loss")
    changed = {p: {f for f in fields if getattr(PATHS[p](base), f) != getattr(base, f)} for p in PATHS}
    assert changed == {"reference": set(), "bf16": {"precision"}, "fit": {"stop_rule"},
                       "rows": {"context_lengths"}, "fast": set(fields[:3]),
                       "short": set(fields[1:])}  # ROME's short path stays in float32


def test_the_docs_section_is_replaced_and_the_other_benches_sections_stay():
    old = "# Edit latency on the bundled model\n\nold table\n\n# Evaluation throughput\n\nkept\n"
    new = "# Edit latency on the bundled model\n\nnew table\n"
    assert with_section(old, new) == "# Edit latency on the bundled model\n\nnew table\n\n# Evaluation throughput\n\nkept\n"
    assert with_section("", new) == new
    assert with_section("# Other\n\nkept\n", new) == new + "\n# Other\n\nkept\n"
    assert with_section("# Intro\n\nx\n" + old, new).startswith("# Intro\n\nx\n# Edit latency on the bundled model\n\nnew table")


@pytest.mark.parametrize("method", ["rome", "top", "rets", "memit"])
def test_the_timed_presets_are_the_recorded_ones_on_the_reference_path(method):
    from bench.edit_latency import reference_preset

    hp = reference_preset(method, 30)
    assert (hp.precision, hp.stop_rule, hp.context_lengths) == ("float32", "total", ((5, 5), (5, 10)))
    if method == "top":  # the layer-5 preset the recorded table timed
        assert (hp.layers, hp.rel_feat_layer, hp.stage2_keep_weight) == ((5,), 18, 0.0)
