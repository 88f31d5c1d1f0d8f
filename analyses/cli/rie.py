"""`toplens rie`: the relative indirect effect at the last subject / relation token per method."""

from __future__ import annotations

import argparse

from toplens.analyses.cli.common import (add_data_arg, add_hparams_arg, add_methods_arg, add_model_args, add_out_arg,
                                         add_trace_args, check_at_least, check_hparams_flag, check_requests_fit,
                                         check_trace_flags, check_writable, emit, hparams_overrides, load,
                                         parse_methods, records_from, resolve_all, trace_options)
from toplens.analyses.outputs import save_rie
from toplens.analyses.tracing.rie import relative_indirect_effects


def add_parser(sub) -> None:
    p = sub.add_parser("rie", help="relative indirect effect at the last subject / relation token per method")
    add_methods_arg(p, "rome,top")
    p.add_argument("--n", type=int, default=10, help="number of requests")
    add_data_arg(p)
    add_hparams_arg(p)
    add_out_arg(p, "rie.json and the bar chart")
    add_trace_args(p)
    add_model_args(p)
    p.set_defaults(run=run)


def validate(args: argparse.Namespace) -> None:
    """The flags and folders, before the data or the model loads."""
    check_at_least(args, 1, "n")
    check_trace_flags(args)
    check_writable(args.out, "--out", folder=True)
    check_hparams_flag(args.hparams, parse_methods(args.methods))


def run(args: argparse.Namespace) -> int:
    validate(args)
    methods = parse_methods(args.methods)
    records = records_from(args, args.n)
    requests = [r.request for r in records if r.request.target_true is not None]
    if not requests:
        raise ValueError(f"--data {args.data!r} has no records with a true object")
    overrides = hparams_overrides(args.hparams, methods)
    model = load(args)
    check_requests_fit(model, requests, "--data")
    report = relative_indirect_effects(model, requests, methods, resolve_all(model, overrides, args.model),
                                       progress=True, **trace_options(args))
    if args.out:
        save_rie(report, args.out)
    emit(args, report.to_json(), report.table())
    return 0
