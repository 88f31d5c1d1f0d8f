import math

import pytest
import torch
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure

from toplens.analyses import figures
from toplens.analyses.evaluation.results import Rates, Summary
from toplens.analyses.evaluation.intervals import Bounds
from toplens.analyses.sweep import SweepCase, SweepPoint
from toplens.analyses.tracing.maps import LayerPositionMap, position_roles
from toplens.analyses.tracing.rie import RieRow

TOKENS = ["<s>", "Miles", " Davis", " plays", " the", "$5\n"]
ROLES = position_roles(len(TOKENS), range(1, 3), 5)


def _map(quantity="grad_norm", title="", layers=4, seed=0) -> LayerPositionMap:
    values = torch.rand(layers, len(TOKENS), generator=torch.Generator().manual_seed(seed))
    return LayerPositionMap(values, TOKENS, ROLES, quantity, title)


def _summary(n=2, efficacy=1.0, generalization=0.5, s_spec=0.75, r_spec=None) -> Summary:
    rates = Rates(efficacy, generalization, s_spec, r_spec)
    return Summary(n, rates, rates, fluency=None, consistency=None)


def _titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_saliency_heatmap_labels_tokens_layers_and_marks(tmp_path):
    fig = figures.saliency_heatmap(_map(title="ROME saliency"), edit_layer=2)
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # the heatmap and its colour bar
    ax, bar = fig.axes
    assert ax.get_title() == "ROME saliency" and ax.get_ylabel() == "layer" and ax.get_xlabel() == "token"
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[1:5] == TOKENS[1:5] and labels[5] == r"\$5\n"
    assert ax.get_xticklabels()[2].get_fontweight() == "bold"  # last subject token
    assert ax.get_xticklabels()[5].get_fontweight() == "bold"  # last relation token
    assert ax.get_xticklabels()[0].get_rotation() == 60
    assert bar.get_ylabel() == "grad_norm"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["per-layer argmax", "edit layer 2"]
    figures.save_figure(fig, tmp_path, "saliency")  # draws the text (mathtext must not choke)


def test_saliency_heatmap_defaults_and_bad_input():
    fig = figures.saliency_heatmap(_map(), mark_argmax=False)
    assert fig.axes[0].get_title() == "grad_norm" and fig.axes[0].get_legend() is None
    with pytest.raises(ValueError, match="edit_layer"):
        figures.saliency_heatmap(_map(), edit_layer=4)
    empty = LayerPositionMap(torch.zeros(0, len(TOKENS)), TOKENS, ROLES, "grad_norm")
    with pytest.raises(ValueError, match="grad"):
        figures.saliency_heatmap(empty)


def test_trace_heatmaps_before_and_after():
    kinds = ["resid", "mlp", "attn"]
    before = [_map("indirect_effect", f"{k}: IE of ' France'", seed=i) for i, k in enumerate(kinds)]
    after = [_map("indirect_effect", f"{k}: IE of ' Paris'", seed=5 + i) for i, k in enumerate(kinds)]
    fig = figures.trace_heatmaps(before, after, edit_layer=1)
    assert len(fig.axes) == 12  # 2 rows × 3 kinds, each with a colour bar
    titles = _titles(fig)
    assert titles[:3] == [f"before edit: {k}: IE of ' France'" for k in kinds]
    assert titles[3:] == [f"after edit: {k}: IE of ' Paris'" for k in kinds]
    only = figures.trace_heatmaps(before[:2], titles=["resid", "mlp"])
    assert len(only.axes) == 4 and _titles(only) == ["before edit: resid", "before edit: mlp"]


@pytest.mark.parametrize("kwargs, field", [
    (dict(before=[]), "before"),
    (dict(before=[_map()], after=[_map(), _map()]), "after"),
    (dict(before=[_map(), _map()], titles=["resid"]), "titles"),
])
def test_trace_heatmaps_bad_input_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        figures.trace_heatmaps(**kwargs)


def test_rie_bars_groups_subject_and_relation_per_method():
    rows = [RieRow("ROME", 4.6, 2.2, 10), RieRow("TOP", 2.0, 1.7, 10), RieRow("RETS", math.nan, 0.5, 3)]
    fig = figures.rie_bars(rows)
    (ax,) = fig.axes
    assert len(ax.patches) == 6
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ROME\n(n=10)", "TOP\n(n=10)", "RETS\n(n=3)"]
    assert "RIE" in ax.get_ylabel() and ax.get_xlabel() == "method" and ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["last subject token", "last relation token"]
    assert "n/a" in [t.get_text() for t in ax.texts]
    with pytest.raises(ValueError, match="rows"):
        figures.rie_bars([])


def test_rie_bars_draw_the_intervals_over_requests():
    rows = [RieRow("ROME", 4.6, 2.2, 10, Bounds(3.9, 5.1), Bounds(1.2, 2.4)), RieRow("TOP", 2.0, 1.7, 10)]
    (ax,) = figures.rie_bars(rows).axes
    subject, relation = [c.errorbar for c in ax.containers if isinstance(c, BarContainer)]
    assert _bars(subject)[0] == pytest.approx([3.9, 5.1]) and _bars(relation)[0] == pytest.approx([1.2, 2.4])
    assert _bars(subject)[1] is None  # TOP's row has no interval


def test_sweep_curve_lines_and_tradeoff_panel():
    points = [SweepPoint(10, 100.0, 60.0, 90.0, 70.0), SweepPoint(6, 100.0, 80.0, 85.0, 50.0),
              SweepPoint(29, 90.0, None, 95.0, 85.0)]
    fig = figures.sweep_curve(points, edit_layer=5)
    lines, scatter = fig.axes
    assert lines.get_xlabel() == "relation-feature layer la" and "%" in lines.get_ylabel()
    assert [list(line.get_xdata()) for line in lines.get_lines()[:4]] == [[6, 10, 29]] * 4
    assert [t.get_text() for t in lines.get_legend().get_texts()] == [
        "Efficacy", "Generalization", "S-Specificity", "R-Specificity", "Score", "edit layer 5"]
    assert scatter.get_xlabel() == "Generalization (%)" and scatter.get_ylabel() == "R-Specificity (%)"
    assert sorted(t.get_text() for t in scatter.texts) == ["la=10", "la=6"]  # la 29 has no Generalization
    assert len(figures.sweep_curve(points, tradeoff=False).axes) == 1


def _bars(container: ErrorbarContainer) -> list[list[float] | None]:
    """Each error bar's [bottom, top] (None where none is drawn)."""
    (segments,) = container.lines[2]
    return [[float(s[0, 1]), float(s[1, 1])] if len(s) else None for s in segments.get_segments()]


def test_sweep_curve_draws_the_intervals_over_records_as_error_bars():
    cases = (SweepCase(0, 100.0, 100.0, 50.0, 0.0), SweepCase(1, 100.0, 0.0, 50.0, 100.0))
    with_cases = SweepPoint(2, 100.0, 50.0, 50.0, 50.0, cases)
    fig = figures.sweep_curve([with_cases, SweepPoint(3, 90.0, 40.0, 60.0, 30.0)], edit_layer=1)
    lines, scatter = fig.axes
    bars = [c for c in lines.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 5  # four rates and the Score
    efficacy, generalization = _bars(bars[0]), _bars(bars[1])
    assert efficacy[0] == [100.0, 100.0] and generalization[0] == [0.0, 100.0]
    assert generalization[0] == with_cases.intervals.generalization.to_json()
    assert efficacy[1] is None and generalization[1] is None  # no cases, no bar
    score = with_cases.intervals.score
    assert _bars(bars[4])[0] == pytest.approx([score.low, score.high])
    (tradeoff,) = [c for c in scatter.containers if isinstance(c, ErrorbarContainer)]
    assert len(tradeoff.lines[2]) == 2  # Generalization and R-Specificity bars


@pytest.mark.parametrize("points", [[], [SweepPoint(3, 1.0, 1.0, 1.0, 1.0)] * 2])
def test_sweep_curve_bad_points(points):
    with pytest.raises(ValueError, match="points"):
        figures.sweep_curve(points)


def test_eval_bars_in_percent_per_method():
    fig = figures.eval_bars({"ROME": _summary(r_spec=0.5), "TOP": _summary()})
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "Efficacy", "Generalization", "S-Specificity", "R-Specificity", "Score"]
    assert ax.get_ylabel() == "percent (%)" and ax.get_title() == "COUNTERFACT_RS"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ROME (n=2)", "TOP (n=2)"]
    heights = [p.get_height() for p in ax.patches]
    assert heights[:4] == pytest.approx([100.0, 50.0, 75.0, 50.0])  # fractions drawn as percent
    assert heights[4] == pytest.approx(100 * 4 / (1 + 2 + 4 / 3 + 2))  # ROME's Score
    labels = [t.get_text() for t in ax.texts]
    assert labels.count("n/a") == 2  # TOP has no R-Specificity, hence no Score


def test_eval_bars_bad_input_names_the_field():
    with pytest.raises(ValueError, match="summaries"):
        figures.eval_bars({})
    with pytest.raises(ValueError, match=r"summaries\['TOP'\].rates.efficacy"):
        figures.eval_bars({"TOP": _summary(efficacy=72.2)})


def test_save_figure_writes_png_and_pdf(tmp_path):
    fig = figures.sweep_curve([SweepPoint(2, 100.0, 50.0, 100.0, 75.0)], edit_layer=1)
    paths = figures.save_figure(fig, tmp_path / "figs", "sweep")
    assert [p.name for p in paths] == ["sweep.png", "sweep.pdf"]
    png, pdf = (p.read_bytes() for p in paths)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    assert pdf.startswith(b"%PDF-") and len(pdf) > 1000
    for stem in ["", "a/b", ".."]:
        with pytest.raises(ValueError, match="stem"):
            figures.save_figure(fig, tmp_path, stem)


def test_save_figure_closes_a_pyplot_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    fig.add_subplot().plot([0, 1])
    figures.save_figure(fig, tmp_path, "plain")
    assert fig.number not in plt.get_fignums()
