"""`toplens trace`: causal tracing before (o) and, with --method, after an edit (o*)."""

from __future__ import annotations

import argparse

from toplens.analyses.cli.common import (add_hparams_arg, add_model_args, add_out_arg, add_request_args, add_trace_args,
                                         check_hparams_flag, check_method, check_requests_fit, check_trace_flags,
                                         check_writable, emit, hparams_overrides, load, request_from, resolve_all,
                                         trace_options)
from toplens.analyses.outputs import save_traces
from toplens.analyses.tracing.causal_trace import TraceResult, trace_edit
from toplens.core.corruption import KINDS


def add_parser(sub) -> None:
    p = sub.add_parser("trace", help="causal tracing: indirect effect of restoring each layer and token")
    add_request_args(p)
    p.add_argument("--kind", default="all", choices=[*KINDS, "all"], help="what is restored")
    p.add_argument("--method", default="none", help="also trace o* after this edit (rome, top, ...); "
                                                    "'none' traces o on the original model only")
    add_hparams_arg(p)
    add_out_arg(p, "trace_<kind>.json and heatmaps")
    add_trace_args(p)
    add_model_args(p)
    p.set_defaults(run=run)


def validate(args: argparse.Namespace, method: str | None) -> None:
    """The flags and folders, before the model loads."""
    check_trace_flags(args)
    check_writable(args.out, "--out", folder=True)
    if method is not None:
        check_hparams_flag(args.hparams, [method])


def run(args: argparse.Namespace) -> int:
    request = request_from(args)
    kinds = list(KINDS) if args.kind == "all" else [args.kind]
    method = None if args.method in ("none", "", None) else check_method(args.method)
    if request.target_true is None and method is None:
        raise ValueError("--target-true is needed to trace the original model's answer o")
    validate(args, method)
    overrides = hparams_overrides(args.hparams, [method]) if method else {}
    model = load(args)
    check_requests_fit(model, [request], "--prompt")
    hp = resolve_all(model, overrides, args.model).get(method)
    trace = trace_edit(model, request, kinds, method, hp, **trace_options(args))
    if args.out:
        save_traces(trace, args.out)
    text = "\n\n".join([format_trace("original, o", r) for r in trace.before]
                       + [format_trace(f"after {args.method}, o*", r) for r in trace.after])
    emit(args, trace.to_json(), text)
    return 0


def format_trace(label: str, result: TraceResult) -> str:
    peak = result.peak()
    m = result.effects
    lines = [f"{label}: {result.kind} (answer {result.answer!r}), P clean {result.clean_prob:.4f}, "
             f"corrupted {result.corrupted_prob:.4f}; peak IE {peak['ie']:.4f} at layer {peak['layer']}, "
             f"token {peak['token']!r} ({peak['role']})",
             f"{'layer':>5}  " + "".join(f"{t[:9]!r:>12}" for t in m.tokens)]
    for layer in range(m.values.shape[0]):
        lines.append(f"{layer:>5}  " + "".join(f"{float(v):>12.4f}" for v in m.values[layer]))
    return "\n".join(lines)
