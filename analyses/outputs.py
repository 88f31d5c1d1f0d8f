"""Each analysis's result written into a folder: its JSON beside its figures (PNG and PDF).

What ``--out`` writes for each command, and what ``toplens figures`` collects; the figures
themselves are drawn by :mod:`toplens.analyses.figures`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toplens.analyses.figures import rie_bars, saliency_heatmap, save_figure, sweep_curve, trace_heatmaps
from toplens.analyses.sweep import SweepResult
from toplens.analyses.tracing.causal_trace import EditTrace
from toplens.analyses.tracing.independence import IndependenceResult
from toplens.analyses.tracing.rie import RieReport
from toplens.analyses.tracing.saliency import SaliencyResult


def write_json(out: str | Path, name: str, data: dict[str, Any]) -> Path:
    """``data`` as ``out/name`` (the folder is created)."""
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    path = path / name
    path.write_text(json.dumps(data, indent=1))
    return path


def save_saliency(result: SaliencyResult, out: str | Path) -> None:
    """saliency_<method>.json and one heatmap per quantity, saliency_<method>_<quantity>."""
    write_json(out, f"saliency_{result.method}.json", result.to_json())
    for name, m in result.maps().items():
        save_figure(saliency_heatmap(m, edit_layer=result.edit_layer), out, f"saliency_{result.method}_{name}")


def save_traces(trace: EditTrace, out: str | Path) -> None:
    """Each trace's JSON (trace_<kind>.json, trace_<kind>_edited.json) and one heatmap figure
    ("trace") with a panel per kind, before and, when traced, after the edit, the edit layer marked."""
    for r in trace.before:
        write_json(out, f"trace_{r.kind}.json", r.to_json())
    for r in trace.after:
        write_json(out, f"trace_{r.kind}_edited.json", r.to_json())
    before, after = [r.effects for r in trace.before], [r.effects for r in trace.after]
    if before:
        fig = trace_heatmaps(before, after or None, edit_layer=trace.edit_layer)
    else:
        fig = trace_heatmaps(after, edit_layer=trace.edit_layer)
    save_figure(fig, out, "trace")


def save_rie(report: RieReport, out: str | Path) -> None:
    """rie.json and the bar chart "rie"."""
    write_json(out, "rie.json", report.to_json())
    save_figure(rie_bars(report.rows), out, "rie")


def save_sweep(result: SweepResult, out: str | Path) -> None:
    """sweep.json and the trade-off figure "sweep"."""
    write_json(out, "sweep.json", result.to_dict())
    save_figure(sweep_curve(result.points, result.edit_layer), out, "sweep")


def save_independence(result: IndependenceResult, out: str | Path) -> None:
    """independence.json."""
    write_json(out, "independence.json", result.to_json())
