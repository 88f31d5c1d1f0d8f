"""`toplens sweep`: TOP's la sweep, Efficacy, Generalization, S-/R-Specificity and Score per la,
with their 95% bootstrap intervals over records."""

from __future__ import annotations

import argparse

from toplens.analyses.cli.common import (add_data_arg, add_hparams_arg, add_model_args, add_out_arg, check_at_least,
                                         check_hparams_flag, check_las, check_requests_fit, check_writable, emit,
                                         hparams_overrides, load, parse_ints, records_from, resolve_all)
from toplens.analyses.evaluation.intervals import Bounds
from toplens.analyses.evaluation.results import METRIC_ABBREVIATIONS, METRICS
from toplens.analyses.outputs import save_sweep
from toplens.analyses.sweep import SweepResult, la_sweep, score_differences

LAS_HELP = "comma-separated relation-feature layers (default l+1, l+5, l+10, L-5, L-1)"


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="TOP's la sweep: Efficacy, Generalization, S-/R-Specificity per la")
    add_data_arg(p)
    p.add_argument("--n", type=int, default=4, help="number of records")
    p.add_argument("--las", default=None, help=LAS_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed for target_new of known facts")
    add_hparams_arg(p)
    add_out_arg(p, "sweep.json and the trade-off figure")
    add_model_args(p)
    p.set_defaults(run=run)


def validate(args: argparse.Namespace) -> None:
    """The flags and folders, before the data or the model loads."""
    check_at_least(args, 1, "n")
    check_at_least(args, 0, "seed")
    check_las(args.las)
    check_writable(args.out, "--out", folder=True)
    check_hparams_flag(args.hparams, ["top"])


def run(args: argparse.Namespace) -> int:
    validate(args)
    las = parse_ints(args.las, "--las")
    records = records_from(args, args.n)
    overrides = hparams_overrides(args.hparams, ["top"])
    model = load(args)
    check_requests_fit(model, [r.request for r in records], "--data")
    result = la_sweep(model, records, las, resolve_all(model, overrides, args.model)["top"])
    if args.out:
        save_sweep(result, args.out)
    emit(args, result.to_dict(), format_sweep(result))
    return 0


def format_sweep(result: SweepResult) -> str:
    """One row per la: each rate and the Score in percent with its 95% bootstrap interval over records."""
    columns = [*METRICS, "score"]
    header = [METRIC_ABBREVIATIONS[name] for name in METRICS] + ["Score"]
    diffs = {d.la: d for d in score_differences(result)}
    header += [f"Score - la {next(iter(diffs.values())).best_la} (paired)"] if diffs else []
    lines = [f"TOP la sweep, edit layer {result.edit_layer}, {result.n_records} records "
             "(95% bootstrap interval over records in brackets)", "",
             f"{'la':>4}" + "".join(f"{h:>21}" for h in header[:5]) + "".join(f"{h:>27}" for h in header[5:])]
    for p in result.points:
        intervals = p.intervals
        cells = [_cell(getattr(p, name), None if intervals is None else getattr(intervals, name)) for name in columns]
        cells += [_cell(diffs[p.la].difference, diffs[p.la].bounds, signed=True)] if diffs else []
        lines.append(f"{p.la:>4}" + "".join(f"{c:>21}" for c in cells[:5]) + "".join(f"{c:>27}" for c in cells[5:]))
    return "\n".join(lines)


def _cell(value: float | None, bounds: Bounds | None, signed: bool = False) -> str:
    """``72.5 [68.0, 77.1]`` (``+1.2 [-0.4, +2.9]`` when signed); ``-`` where the value is undefined;
    no brackets without bounds."""
    if value is None:
        return "-"
    f = "{:+.1f}" if signed else "{:.1f}"
    return f.format(value) + ("" if bounds is None else f" [{f.format(bounds.low)}, {f.format(bounds.high)}]")
