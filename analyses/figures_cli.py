"""`toplens sweep` (TOP's la sweep) and `toplens figures` (every figure of the paper's analyses).

``figures`` regenerates each figure on one model with a small seeded set of cases and writes
DIR/index.md listing them; each step's numbers are saved as JSON beside its figure.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from toplens.cli import add_model_args
from toplens.model.loading import load_model
from toplens.model import as_adapter

from toplens.analyses.analysis_cli import DEFAULT_REQUEST, method_hparams, write_json
from toplens.analyses.eval_cli import read_records
from toplens.analyses.records import Record
from toplens.analyses.results import Summary, summarize
from toplens.analyses.runner import CASES_FILE, case_from_dict, read_cases, run_eval

logger = logging.getLogger(__name__)


# -------------------------------------------------------------------------------- sweep
def add_sweep_parser(sub) -> None:
    p = sub.add_parser("sweep", help="TOP's la sweep: Efficacy, Generalization, S-/R-Specificity per la")
    p.add_argument("--data", default="builtin", help='"builtin" or a CounterFact / COUNTERFACT_RS / known-facts file')
    p.add_argument("--n", type=int, default=4, help="number of records")
    p.add_argument("--las", default=None, help="comma-separated relation-feature layers (default l+1, l+5, "
                                               "l+10, L-5, L-1)")
    p.add_argument("--seed", type=int, default=0, help="seed for target_new of known facts")
    p.add_argument("--hparams", default=None, help='JSON overrides of the TOP preset, e.g. {"v_num_grad_steps2": 50}')
    p.add_argument("--out", default=None, help="folder for sweep.json and the trade-off figure")
    add_model_args(p)
    p.set_defaults(func=run_sweep_command)


def parse_las(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--las must be comma-separated integers; got {text!r}") from None


def format_sweep(result) -> str:
    cell = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    lines = [f"TOP la sweep, edit layer {result.edit_layer}, {result.n_records} records", "",
             f"{'la':>4}{'Eff':>8}{'Gen':>8}{'S-Spec':>8}{'R-Spec':>8}"]
    for p in result.points:
        lines.append(f"{p.la:>4}{cell(p.efficacy):>8}{cell(p.generalization):>8}"
                     f"{cell(p.s_specificity):>8}{cell(p.r_specificity):>8}")
    return "\n".join(lines)


def run_sweep_command(args, model=None) -> int:
    from toplens.analyses.figures import save_figure, sweep_curve
    from toplens.analyses.sweep import la_sweep

    las = parse_las(args.las)
    records = read_records(args.data, args.n, args.seed)
    model = model if model is not None else load_model(args.model, args.backend)
    hp = method_hparams("top", as_adapter(model), args.hparams)
    result = la_sweep(model, records, las, hp)
    if args.out:
        write_json(args.out, "sweep.json", result.to_dict())
        save_figure(sweep_curve(result.points, result.edit_layer), args.out, "sweep")
    print(result.to_json() if args.json else format_sweep(result))
    return 0


# ------------------------------------------------------------------------------ figures
@dataclass
class FigureIndex:
    """The figures written so far, with one line saying what each shows (for index.md)."""

    out: Path
    entries: list[tuple[str, str, float]] = field(default_factory=list)

    def add(self, stem: str, caption: str, seconds: float) -> None:
        self.entries.append((stem, caption, seconds))
        logger.info("figure %s written (%.0f s)", stem, seconds)

    def write(self, header: str) -> Path:
        lines = ["# toplens figures", "", header, ""]
        for stem, caption, seconds in self.entries:
            lines += [f"## {stem}", "", caption, f"({seconds:.0f} s; files: {stem}.png, {stem}.pdf)", "",
                      f"![{stem}]({stem}.png)", ""]
        path = self.out / "index.md"
        path.write_text("\n".join(lines), encoding="utf-8")
        return path


def add_figures_parser(sub) -> None:
    p = sub.add_parser("figures", help="regenerate every analysis figure on a model with a small seeded set of cases")
    p.add_argument("--out", required=True, help="output folder (PNG, PDF, JSON and index.md)")
    p.add_argument("--n", type=int, default=4, help="records for the RIE, sweep and eval figures")
    p.add_argument("--data", default="builtin", help='records: "builtin" or a dataset file')
    p.add_argument("--seed", type=int, default=0, help="seed for the records and the tracing noise")
    p.add_argument("--samples", type=int, default=5, help="noise samples per causal trace")
    p.add_argument("--las", default=None, help="la values for the sweep (default l+1, l+5, l+10, L-5, L-1)")
    p.add_argument("--hparams", default=None, help='JSON overrides keyed by method, e.g. {"rome": {"layer": 4}}')
    p.add_argument("--eval-dir", default=None, help="reuse this `toplens eval` folder for the eval figure "
                                                    "(default: evaluate rome,top on the --n records)")
    add_model_args(p)
    p.set_defaults(func=run_figures_command)


def run_figures_command(args, model=None) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = read_records(args.data, args.n, args.seed)
    model = model if model is not None else load_model(args.model, args.backend)
    index = FigureIndex(out)
    steps = (_saliency_figure, _trace_figure, _rie_figure, _sweep_figure, _eval_figure)
    for step in steps:
        start = time.perf_counter()
        stem, caption = step(model, records, args)
        index.add(stem, caption, time.perf_counter() - start)
    adapter = as_adapter(model)
    path = index.write(f"Model {adapter.name} ({adapter.backend} backend); {len(records)} records from "
                       f"{args.data!r} (seed {args.seed}); {args.samples} noise samples per trace.")
    print(json.dumps({"index": str(path), "figures": [e[0] for e in index.entries]}) if args.json
          else f"wrote {len(index.entries)} figures and {path}")
    return 0


def _saliency_figure(model, records: Sequence[Record], args) -> tuple[str, str]:
    from toplens.analyses.figures import saliency_heatmap, save_figure
    from toplens.analyses.saliency import gradient_saliency

    hp = method_hparams("rome", as_adapter(model), args.hparams)
    result = gradient_saliency(model, DEFAULT_REQUEST, "rome", hp)
    write_json(args.out, "saliency_rome.json", result.to_json())
    save_figure(saliency_heatmap(result.grad_norm, edit_layer=result.edit_layer), args.out, "saliency_rome")
    share = result.summary()["grad_norm"]["fraction_argmax_last_subject_or_relation"]
    return "saliency_rome", (f"Gradient saliency ‖∂L/∂h‖ per layer and token during ROME's value optimization "
                             f"for {DEFAULT_REQUEST.text!r} → {DEFAULT_REQUEST.target_new!r}. In {share:.0%} of "
                             "the layers at and after the edit layer the maximum is at the last subject or "
                             "last relation token.")


def _trace_figure(model, records: Sequence[Record], args) -> tuple[str, str]:
    from toplens.analyses.analysis_cli import write_traces
    from toplens.analyses.causal_trace import KINDS, causal_trace
    from toplens.editors import get_editor

    req = DEFAULT_REQUEST
    trace = lambda answer: [causal_trace(model, req.prompt, req.subject, answer, kind=k,  # noqa: E731
                                         n_samples=args.samples, seed=args.seed) for k in KINDS]
    hp = method_hparams("rome", as_adapter(model), args.hparams)
    before = trace(req.target_true)
    with get_editor("rome").apply(model, req, hp):
        after = trace(req.target_new)
    write_traces(args.out, before, after, edit_layer=hp.layer)
    return "trace", (f"Causal tracing of {req.text!r}: indirect effect of restoring the clean residual, MLP "
                     f"output and attention output (window {after[1].window}) at each layer and token, for "
                     f"o = {req.target_true!r} on the original model (top) and o* = {req.target_new!r} after "
                     "the ROME edit (bottom).")


def _rie_figure(model, records: Sequence[Record], args) -> tuple[str, str]:
    from toplens.analyses.figures import rie_bars, save_figure
    from toplens.analyses.rie import relative_indirect_effects

    requests = [r.request for r in records if r.request.target_true is not None]
    adapter = as_adapter(model)
    hps = {m: method_hparams(m, adapter, args.hparams) for m in ("rome", "top")}
    report = relative_indirect_effects(model, requests, ("rome", "top"), hps, n_samples=args.samples,
                                       seed=args.seed, progress=True)
    write_json(args.out, "rie.json", report.to_json())
    save_figure(rie_bars(report.rows), args.out, "rie")
    return "rie", (f"RIE = log IE(o*, edited) / IE(o, original) of the MLP output at the last subject and last "
                   f"relation tokens, ROME vs TOP, over {len(requests)} requests.")


def _sweep_figure(model, records: Sequence[Record], args) -> tuple[str, str]:
    from toplens.analyses.figures import save_figure, sweep_curve
    from toplens.analyses.sweep import la_sweep

    hp = method_hparams("top", as_adapter(model), args.hparams)
    result = la_sweep(model, records, parse_las(args.las), hp)
    write_json(args.out, "sweep.json", result.to_dict())
    save_figure(sweep_curve(result.points, result.edit_layer), args.out, "sweep")
    return "sweep", (f"TOP with the relation-feature layer la in {result.las} (edit layer {result.edit_layer}) "
                     f"over {result.n_records} records: the four COUNTERFACT_RS rates per la, and "
                     "Generalization against R-Specificity.")


def summaries_from_cases(path: str | Path) -> dict[str, Summary]:
    """Per-method post-edit summaries from a `toplens eval` cases.jsonl."""
    by_method: dict[str, list] = {}
    for line in read_cases(path):
        by_method.setdefault(line["method"], []).append(case_from_dict(line))
    return {method: summarize(cases) for method, cases in by_method.items()}


def _eval_figure(model, records: Sequence[Record], args) -> tuple[str, str]:
    from toplens.analyses.figures import eval_bars, save_figure

    folder = Path(args.eval_dir) if args.eval_dir else Path(args.out) / "eval"
    if not args.eval_dir:
        adapter = as_adapter(model)
        hps = {m: method_hparams(m, adapter, args.hparams) for m in ("rome", "top")}
        run_eval(model, records, ["rome", "top"], folder, hparams=hps, generation_tokens=0, seed=args.seed)
    summaries = summaries_from_cases(folder / CASES_FILE)
    save_figure(eval_bars(summaries), args.out, "eval")
    n = {m: s.n_cases for m, s in summaries.items()}
    return "eval", f"COUNTERFACT_RS rates per method (cases per method: {n}; from {folder}/cases.jsonl)."
