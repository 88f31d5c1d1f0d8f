"""`toplens sweep`: TOP's la sweep, Efficacy, Generalization, S-/R-Specificity per la."""

from __future__ import annotations

import argparse

from toplens.analyses.cli.common import (add_data_arg, add_hparams_arg, add_model_args, add_out_arg, check_at_least,
                                         check_hparams_flag, check_las, check_requests_fit, check_writable, emit,
                                         hparams_overrides, load, parse_ints, records_from, resolve_all)
from toplens.analyses.evaluation.results import METRIC_ABBREVIATIONS, METRICS
from toplens.analyses.outputs import save_sweep
from toplens.analyses.sweep import SweepResult, la_sweep

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
    cell = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    lines = [f"TOP la sweep, edit layer {result.edit_layer}, {result.n_records} records", "",
             f"{'la':>4}" + "".join(f"{METRIC_ABBREVIATIONS[name]:>8}" for name in METRICS)]
    for p in result.points:
        lines.append(f"{p.la:>4}" + "".join(f"{cell(getattr(p, name)):>8}" for name in METRICS))
    return "\n".join(lines)
