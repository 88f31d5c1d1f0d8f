"""The paper's figures from the analyses' results: saliency and causal-trace heatmaps, RIE bars,
the la sweep curve, COUNTERFACT_RS bars and the sequential-editing curves.

Each function returns a ``matplotlib.figure.Figure`` built without pyplot (no display, no global
state; notebooks show it as a cell's value); ``save_figure`` writes PNG and PDF. Heatmaps put the
layer on the y axis (0 at the bottom), the tokens on the x axis, the last subject and relation tokens bold.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from toplens.analyses.evaluation.intervals import Bounds
from toplens.analyses.evaluation.results import METRIC_LABELS, METRICS, Summary
from toplens.analyses.evaluation.sequential import SequentialResult
from toplens.analyses.sweep import SweepPoint
from toplens.analyses.tracing.maps import LayerPositionMap
from toplens.analyses.tracing.rie import RieRow

logger = logging.getLogger(__name__)

BOLD_ROLES = ("last_subject", "last_relation")
TRACE_CMAPS = ("Purples", "Greens", "Reds")  # resid, MLP, attention (ROME's colours)
SWEEP_METRICS = tuple((name, METRIC_LABELS[name]) for name in METRICS)
EVAL_METRICS = SWEEP_METRICS + (("score", "Score"),)
DPI = 150


# ------------------------------------------------------------------------------- helpers
def _grid(m: LayerPositionMap, field: str) -> np.ndarray:
    """The map's values as a [layer, pos] float array; ValueError naming ``field`` if empty."""
    values = m.values.detach().float().cpu().numpy()
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"{field}: values must be a non-empty [layer, pos] grid; got shape {values.shape}")
    return values


def _token_label(token: str) -> str:
    """A token as a tick label: newlines visible, "$" not read as mathtext, empty shown as ''."""
    return token.replace("\n", "\\n").replace("$", r"\$") or "''"


def _token_axis(ax: Axes, tokens: Sequence[str], roles: Sequence[str]) -> None:
    """Token labels on the x axis, rotated; the last subject / last relation tokens in bold."""
    ax.set_xticks(range(len(tokens)))
    ax.set_xticklabels([_token_label(t) for t in tokens], rotation=60, ha="right", rotation_mode="anchor")
    for label, role in zip(ax.get_xticklabels(), roles, strict=True):
        if role in BOLD_ROLES:
            label.set_fontweight("bold")
    ax.set_xlabel("token")


def _heatmap(fig: Figure, ax: Axes, m: LayerPositionMap, values: np.ndarray, title: str, cmap: str) -> None:
    """One layers × tokens panel with its own colour bar labelled by the quantity."""
    image = ax.imshow(values, origin="lower", aspect="auto", cmap=cmap, interpolation="nearest")
    fig.colorbar(image, ax=ax, label=m.quantity)
    _token_axis(ax, m.tokens, m.roles)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(ylabel="layer", title=title)


def _mark_layer(ax: Axes, layer: int | None, n_layers: int) -> None:
    """Outline the edit layer's row."""
    if layer is None:
        return
    if not 0 <= layer < n_layers:
        raise ValueError(f"edit_layer: {layer} is outside the map's {n_layers} layers")
    ax.axhspan(layer - 0.5, layer + 0.5, fill=False, edgecolor="tab:orange", linestyle="--", linewidth=1.5,
               label=f"edit layer {layer}")


def _width(n_positions: int, panels: int = 1) -> float:
    return panels * max(4.0, 0.4 * n_positions + 2.0)


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _errors(values: Sequence[float], bounds: Sequence[Bounds | None]) -> np.ndarray:
    """Error bar lengths [2, n] below and above each value (NaN, none drawn, where either is missing;
    0 on the side where a value lies outside its interval)."""
    low, high = np.array([[math.nan, math.nan] if b is None else [b.low, b.high] for b in bounds]).reshape(-1, 2).T
    return np.clip(np.array([np.subtract(values, low), np.subtract(high, values)]), 0.0, None)


def _point_bounds(points: Sequence[SweepPoint], name: str) -> list[Bounds | None]:
    return [None if p.intervals is None else getattr(p.intervals, name) for p in points]


# ------------------------------------------------------------------------------- heatmaps
def saliency_heatmap(grad: LayerPositionMap, *, edit_layer: int | None = None, title: str | None = None,
                     mark_argmax: bool = True) -> Figure:
    """Gradient saliency ‖∂L/∂h‖ per layer and token (the paper's Fig. 2 style).

    Args:
        grad: the saliency map (``toplens.analyses.tracing.saliency``'s result).
        edit_layer: outlined when given.
        title: default the map's title, else its quantity.
        mark_argmax: put a marker on the most salient token of each layer.
    """
    values = _grid(grad, "grad")
    fig = Figure(figsize=(_width(values.shape[1]), max(3.0, 0.18 * values.shape[0] + 1.8)), layout="constrained")
    ax = fig.add_subplot()
    _heatmap(fig, ax, grad, values, title or grad.title or grad.quantity, "viridis")
    if mark_argmax:
        ax.scatter(grad.argmax_positions(), range(values.shape[0]), marker="o", s=14, facecolors="none",
                   edgecolors="white", linewidths=1.0, label="per-layer argmax")
    _mark_layer(ax, edit_layer, values.shape[0])
    if mark_argmax or edit_layer is not None:
        ax.legend(loc="upper left", fontsize="small", framealpha=0.7)
    return fig


def trace_heatmaps(before: Sequence[LayerPositionMap], after: Sequence[LayerPositionMap] | None = None, *,
                   titles: Sequence[str] | None = None, edit_layer: int | None = None) -> Figure:
    """Causal-tracing indirect effects: one column per kind (resid / MLP / attn), a row for the
    original model and, when ``after`` is given, a row for the edited one.

    Args:
        before: one map per kind, traced on the original model.
        after: the same kinds traced on the edited model (same length as ``before``).
        titles: one per kind; default each map's title (which names the kind and the answer).
        edit_layer: outlined in every panel when given.
    """
    if not before:
        raise ValueError("before: give at least one traced map")
    if after is not None and len(after) != len(before):
        raise ValueError(f"after: {len(after)} maps for {len(before)} kinds in before")
    if titles is not None and len(titles) != len(before):
        raise ValueError(f"titles: {len(titles)} titles for {len(before)} kinds")
    rows = [("before edit", before)] + ([("after edit", after)] if after is not None else [])
    n_pos = max(_grid(m, "before").shape[1] for m in before)
    fig = Figure(figsize=(_width(n_pos, len(before)), 4.2 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), len(before), squeeze=False)
    for r, (label, maps) in enumerate(rows):
        for c, m in enumerate(maps):
            values = _grid(m, "after" if r else "before")
            kind = titles[c] if titles is not None else (m.title or m.quantity)
            _heatmap(fig, axes[r][c], m, values, f"{label}: {kind}", TRACE_CMAPS[c % len(TRACE_CMAPS)])
            _mark_layer(axes[r][c], edit_layer, values.shape[0])
    return fig


# ------------------------------------------------------------------------------- bars and curves
def _bar_labels(ax: Axes, bars, values: Sequence[float], fmt: str) -> None:
    """Each bar's value above it ("n/a" where undefined)."""
    ax.bar_label(bars, labels=["n/a" if not math.isfinite(v) else fmt.format(v) for v in values],
                 fontsize="x-small", padding=2)


def rie_bars(rows: Sequence[RieRow]) -> Figure:
    """RIE = log[IE(o*, edited) / IE(o, original)] per method at the last subject and last relation tokens
    (the paper's Table 3 as bars), with the rows' 95% bootstrap intervals over requests as error bars."""
    if not rows:
        raise ValueError("rows: give at least one RieRow")
    x = np.arange(len(rows))
    fig = Figure(figsize=(max(4.0, 1.3 * len(rows) + 2.0), 3.8), layout="constrained")
    ax = fig.add_subplot()
    for offset, (name, label) in zip((-0.2, 0.2), (("subject", "last subject token"),
                                                   ("relation", "last relation token"))):
        values = [_nan(getattr(r, name)) for r in rows]
        yerr = _errors(values, [getattr(r, f"{name}_ci") for r in rows])
        bars = ax.bar(x + offset, np.nan_to_num(values, nan=0.0), 0.4, yerr=yerr, capsize=3, label=label)
        _bar_labels(ax, bars, values, "{:.2f}")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(x, [f"{r.method}\n(n={r.n})" for r in rows])
    ax.set(xlabel="method", ylabel="RIE = log(IE edited / IE original)",
           title="Relative indirect effect at the subject and relation")
    ax.legend(fontsize="small")
    return fig


def _sorted_points(points: Sequence[SweepPoint]) -> list[SweepPoint]:
    if not points:
        raise ValueError("points: give at least one SweepPoint")
    las = [p.la for p in points]
    if len(set(las)) != len(las):
        raise ValueError(f"points: each la may appear once; got {las}")
    return sorted(points, key=lambda p: p.la)


def _sweep_lines(ax: Axes, points: Sequence[SweepPoint], edit_layer: int | None) -> None:
    las = [p.la for p in points]
    values = {name: [_nan(getattr(p, name)) for p in points] for name, _ in EVAL_METRICS}
    lines = [ax.plot(las, values[name], marker="o", label=label, linestyle="--" if name == "score" else "-")[0]
             for name, label in EVAL_METRICS]
    for line, (name, _) in zip(lines, EVAL_METRICS):  # the 95% intervals over records
        ax.errorbar(las, values[name], _errors(values[name], _point_bounds(points, name)), fmt="none",
                    ecolor=line.get_color(), capsize=3, alpha=0.7)
    if edit_layer is not None:
        ax.axvline(edit_layer, color="gray", linestyle="--", linewidth=1.0, label=f"edit layer {edit_layer}")
    ax.set_xticks(sorted(set(las) | ({edit_layer} if edit_layer is not None else set())))
    ax.set(xlabel="relation-feature layer la", ylabel="percent (%)", ylim=(-2, 102), title="TOP quality against la")
    ax.legend(fontsize="small")


def _tradeoff(ax: Axes, points: Sequence[SweepPoint]) -> None:
    kept = [p for p in points if p.generalization is not None and p.r_specificity is not None]
    gen, rspec = [p.generalization for p in kept], [p.r_specificity for p in kept]
    ax.plot(gen, rspec, color="lightgray", zorder=1)
    ax.errorbar(gen, rspec, xerr=_errors(gen, _point_bounds(kept, "generalization")),
                yerr=_errors(rspec, _point_bounds(kept, "r_specificity")), fmt="none", ecolor="gray", capsize=2)
    ax.scatter(gen, rspec, c=[p.la for p in kept], cmap="viridis", zorder=2)
    at: dict[tuple[float, float], list[int]] = {}
    for p in kept:  # points that coincide share one label
        at.setdefault((p.generalization, p.r_specificity), []).append(p.la)
    for xy, las in at.items():
        ax.annotate("la=" + ", ".join(map(str, las)), xy, textcoords="offset points", xytext=(4, 4),
                    fontsize="small")
    ax.set(xlabel="Generalization (%)", ylabel="R-Specificity (%)", title="Generalization vs R-Specificity")


def sweep_curve(points: Sequence[SweepPoint], edit_layer: int | None = None, *, tradeoff: bool = True) -> Figure:
    """The la sweep (the paper's Fig. 5): the four rates and their Score (dashed) against la, with 95%
    intervals over records as error bars, and optionally Generalization against R-Specificity by la."""
    ordered = _sorted_points(points)
    fig = Figure(figsize=(10.0 if tradeoff else 5.5, 4.0), layout="constrained")
    axes = fig.subplots(1, 2 if tradeoff else 1, squeeze=False)[0]
    _sweep_lines(axes[0], ordered, edit_layer)
    if tradeoff:
        _tradeoff(axes[1], ordered)
    return fig


def _summary_percents(method: str, summary: Summary) -> list[float]:
    """The summary's four rates and Score in percent; ValueError if a rate is not a fraction."""
    values = []
    for name, _ in EVAL_METRICS:
        value = summary.score if name == "score" else getattr(summary.rates, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"summaries[{method!r}].rates.{name} = {value} is not a fraction in [0, 1]")
        values.append(_nan(value) * 100.0)
    return values


def eval_bars(summaries: Mapping[str, Summary]) -> Figure:
    """COUNTERFACT_RS per method: Efficacy, Generalization, S-Specificity, R-Specificity and Score
    (their harmonic mean) in percent, grouped by metric with one bar per method."""
    if not summaries:
        raise ValueError("summaries: give at least one method's Summary")
    x = np.arange(len(EVAL_METRICS))
    width = 0.8 / len(summaries)
    fig = Figure(figsize=(max(6.0, 1.6 * len(summaries) + 5.0), 4.0), layout="constrained")
    ax = fig.add_subplot()
    for i, (method, summary) in enumerate(summaries.items()):
        values = _summary_percents(method, summary)
        bars = ax.bar(x - 0.4 + width * (i + 0.5), np.nan_to_num(values, nan=0.0), width,
                      label=f"{method} (n={summary.n_cases})")
        _bar_labels(ax, bars, values, "{:.1f}")
    ax.set_xticks(x, [label for _, label in EVAL_METRICS])
    ax.set(ylabel="percent (%)", ylim=(0, 110), title="COUNTERFACT_RS")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


SEQUENTIAL_PANELS = SWEEP_METRICS + (("retention", "Retention (% of held-out facts)"), ("fluency", "Fluency (x100)"))


def sequential_curves(results: Sequence[SequentialResult]) -> Figure:
    """Each metric of a sequential run against the number of edits made, one line per method."""
    if not results:
        raise ValueError("results: give at least one SequentialResult")
    fig = Figure(figsize=(12.0, 6.5), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    for ax, (name, label) in zip(axes, SEQUENTIAL_PANELS):
        for r in results:
            ax.plot([p.edits for p in r.points], [_nan(getattr(p, name)) for p in r.points], marker="o",
                    label=r.label)
        ax.set_title(label, fontsize="medium")
        ax.set_xscale("symlog", linthresh=10)
        ax.set(xlabel="edits", **({} if name == "fluency" else {"ylim": (-5, 105)}))
    axes[0].legend(fontsize="small")
    return fig


# ------------------------------------------------------------------------------- saving
def save_figure(fig: Figure, out_dir: str | Path, stem: str) -> list[Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.pdf`` under ``out_dir`` and close the figure."""
    if not stem or Path(stem).name != stem or stem in (".", ".."):
        raise ValueError(f"stem: a file name without folders or suffix is needed; got {stem!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    for path in paths:
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    pyplot = sys.modules.get("matplotlib.pyplot")  # close it only if pyplot manages it
    if pyplot is not None:
        pyplot.close(fig)
    logger.info("wrote %s", ", ".join(str(p) for p in paths))
    return paths
