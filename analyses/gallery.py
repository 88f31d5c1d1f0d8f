"""Every figure of the paper's analyses on one model, with a small seeded set of cases.

:func:`make_figures` draws gradient saliency (ROME), causal tracing before and after a ROME edit,
the RIE of ROME and TOP, TOP's la sweep and the COUNTERFACT_RS rates of ROME and TOP, saves each
step's numbers as JSON beside its figure, and writes DIR/index.md listing them with a caption.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from toplens import as_adapter
from toplens.core.hparams import Hparams
from toplens.editors.presets import preset_or_given

from toplens.analyses.evaluation.cases import CASES_FILE, summaries_from_cases
from toplens.analyses.evaluation.records import Record
from toplens.analyses.evaluation.runner import run_eval
from toplens.analyses.evaluation.samples import DEFAULT_REQUEST
from toplens.analyses.figures import eval_bars, saliency_heatmap, save_figure
from toplens.analyses.outputs import save_rie, save_sweep, save_traces, write_json
from toplens.analyses.sweep import la_sweep
from toplens.analyses.tracing.causal_trace import trace_edit
from toplens.analyses.tracing.rie import relative_indirect_effects
from toplens.analyses.tracing.saliency import gradient_saliency

logger = logging.getLogger(__name__)

METHODS = ("rome", "top")


@dataclass
class FigureIndex:
    """The figures written so far, with one line saying what each shows (for index.md)."""

    out: Path
    entries: list[tuple[str, str, float]] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.out / "index.md"

    def add(self, stem: str, caption: str, seconds: float) -> None:
        self.entries.append((stem, caption, seconds))
        logger.info("figure %s written (%.0f s)", stem, seconds)

    def write(self, header: str) -> Path:
        lines = ["# toplens figures", "", header, ""]
        for stem, caption, seconds in self.entries:
            lines += [f"## {stem}", "", caption, f"({seconds:.0f} s; files: {stem}.png, {stem}.pdf)", "",
                      f"![{stem}]({stem}.png)", ""]
        self.path.write_text("\n".join(lines), encoding="utf-8")
        return self.path


@dataclass(frozen=True)
class _Run:
    """What every step shares: the model, the records, the folder and the settings."""

    model: object
    records: Sequence[Record]
    out: Path
    hparams: Mapping[str, Hparams]
    samples: int
    seed: int
    las: Sequence[int] | None
    eval_dir: Path | None


def make_figures(
    model, records: Sequence[Record], out: str | Path, *, hparams: Mapping[str, Hparams] | None = None,
    samples: int = 5, seed: int = 0, las: Sequence[int] | None = None, eval_dir: str | Path | None = None,
    source: str = "builtin",
) -> FigureIndex:
    """Draw every figure into ``out`` and write ``out/index.md``; the model is left as it was.

    Args:
        model: a TransformerLens model or adapter.
        records: the cases of the RIE, sweep and eval figures.
        hparams: ROME's and TOP's hyperparameters (default: their presets for this model).
        samples: noise samples per causal trace; seed: the tracing noise and the generations.
        las: the sweep's la values (default l+1, l+5, l+10, L-5, L-1).
        eval_dir: a `toplens eval` folder to draw the eval figure from (default: evaluate ROME and
            TOP on ``records`` into ``out/eval``).
        source: where the records came from, for index.md.
    """
    adapter = as_adapter(model)
    given = hparams or {}
    chosen = {m: preset_or_given(m, given.get(m), adapter.name, adapter.n_layers) for m in METHODS}
    run = _Run(model, records, Path(out), chosen, samples, seed, las, None if eval_dir is None else Path(eval_dir))
    run.out.mkdir(parents=True, exist_ok=True)
    index = FigureIndex(run.out)
    steps: tuple[Callable[[_Run], tuple[str, str]], ...] = (_saliency, _trace, _rie, _sweep, _eval)
    for step in steps:
        start = time.perf_counter()
        stem, caption = step(run)
        index.add(stem, caption, time.perf_counter() - start)
    index.write(f"Model {adapter.name} ({adapter.backend} backend); {len(records)} records from "
                f"{source!r} (seed {seed}); {samples} noise samples per trace.")
    return index


def _saliency(run: _Run) -> tuple[str, str]:
    result = gradient_saliency(run.model, DEFAULT_REQUEST, "rome", run.hparams["rome"])
    write_json(run.out, "saliency_rome.json", result.to_json())
    save_figure(saliency_heatmap(result.grad_norm, edit_layer=result.edit_layer), run.out, "saliency_rome")
    share = result.summary()["grad_norm"]["fraction_argmax_last_subject_or_relation"]
    return "saliency_rome", (f"Gradient saliency ‖∂L/∂h‖ per layer and token during ROME's value optimization "
                             f"for {DEFAULT_REQUEST.text!r} → {DEFAULT_REQUEST.target_new!r}. In {share:.0%} of "
                             "the layers at and after the edit layer the maximum is at the last subject or "
                             "last relation token.")


def _trace(run: _Run) -> tuple[str, str]:
    req = DEFAULT_REQUEST
    trace = trace_edit(run.model, req, method="rome", hparams=run.hparams["rome"], n_samples=run.samples,
                       seed=run.seed)
    save_traces(trace, run.out)
    return "trace", (f"Causal tracing of {req.text!r}: indirect effect of restoring the clean residual, MLP "
                     f"output and attention output (window {trace.after[1].window}) at each layer and token, for "
                     f"o = {req.target_true!r} on the original model (top) and o* = {req.target_new!r} after "
                     "the ROME edit (bottom).")


def _rie(run: _Run) -> tuple[str, str]:
    requests = [r.request for r in run.records if r.request.target_true is not None]
    report = relative_indirect_effects(run.model, requests, METHODS, run.hparams, n_samples=run.samples,
                                       seed=run.seed, progress=True)
    save_rie(report, run.out)
    return "rie", (f"RIE = log IE(o*, edited) / IE(o, original) of the MLP output at the last subject and last "
                   f"relation tokens, ROME vs TOP, over {len(requests)} requests.")


def _sweep(run: _Run) -> tuple[str, str]:
    result = la_sweep(run.model, run.records, run.las, run.hparams["top"])
    save_sweep(result, run.out)
    return "sweep", (f"TOP with the relation-feature layer la in {result.las} (edit layer {result.edit_layer}) "
                     f"over {result.n_records} records: the four COUNTERFACT_RS rates per la, and "
                     "Generalization against R-Specificity.")


def _eval(run: _Run) -> tuple[str, str]:
    folder = run.eval_dir or run.out / "eval"
    if run.eval_dir is None:
        run_eval(run.model, run.records, list(METHODS), folder, hparams=run.hparams, generation_tokens=0,
                 seed=run.seed)
    summaries = summaries_from_cases(folder / CASES_FILE)
    save_figure(eval_bars(summaries), run.out, "eval")
    n = {m: s.n_cases for m, s in summaries.items()}
    return "eval", f"COUNTERFACT_RS rates per method (cases per method: {n}; from {folder}/cases.jsonl)."
