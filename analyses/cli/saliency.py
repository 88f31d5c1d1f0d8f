"""`toplens saliency`: gradient saliency of an edit's value optimization, per layer and token."""

from __future__ import annotations

import argparse

from toplens.analyses.cli.common import (UsageError, add_hparams_arg, add_model_args, add_out_arg, add_request_args,
                                         check_at_least, check_hparams_flag, check_requests_fit, check_writable,
                                         emit, hparams_overrides, load, parse_ints, request_from, resolve_all)
from toplens.analyses.outputs import save_saliency
from toplens.analyses.tracing.saliency import SaliencyResult, gradient_saliency


def add_parser(sub) -> None:
    p = sub.add_parser("saliency", help="gradient saliency of an edit's value optimization, per layer and token")
    add_request_args(p)
    p.add_argument("--method", default="rome", choices=["rome", "top"])
    p.add_argument("--steps", type=int, default=None, help="optimization steps (default: the preset's)")
    p.add_argument("--stages", default="1,2", help="TOP stages to record, e.g. 1 or 1,2")
    add_hparams_arg(p)
    add_out_arg(p, "saliency_<method>.json and heatmaps")
    add_model_args(p)
    p.set_defaults(run=run)


def validate(args: argparse.Namespace) -> None:
    """The flags and folders, before the model loads."""
    check_at_least(args, 1, "steps")
    stages = parse_ints(args.stages, "--stages")
    if not stages or min(stages) < 1:
        raise UsageError(f"--stages must be stage numbers 1, 2, ...; got {args.stages!r}")
    check_writable(args.out, "--out", folder=True)
    check_hparams_flag(args.hparams, [args.method])


def run(args: argparse.Namespace) -> int:
    validate(args)
    stages = tuple(parse_ints(args.stages, "--stages") or ())
    request = request_from(args)
    overrides = hparams_overrides(args.hparams, [args.method])
    model = load(args)
    check_requests_fit(model, [request], "--prompt")
    hp = resolve_all(model, overrides, args.model)[args.method]
    result = gradient_saliency(model, request, args.method, hp, steps=args.steps, stages=stages)
    if args.out:
        save_saliency(result, args.out)
    emit(args, result.to_json(), format_saliency(result))
    return 0


def format_saliency(result: SaliencyResult) -> str:
    m = result.grad_norm
    means = m.role_means()
    lines = [f"gradient saliency ||dL/dh||, {result.method.upper()} edit layer {result.edit_layer}, "
             f"{result.steps} steps x {result.n_prompts} prompts", "",
             f"{'layer':>5}  {'argmax token':24}{'role':15}" + "".join(f"{r:>14}" for r in means)]
    for layer, i in enumerate(m.argmax_positions()):
        mark = "*" if layer == result.edit_layer else " "
        lines.append(f"{layer:>4}{mark}  {m.tokens[i]!r:24}{m.roles[i]:15}"
                     + "".join(f"{float(v[layer]):>14.4g}" for v in means.values()))
    s = result.summary()["grad_norm"]
    lines += ["", f"layers >= edit layer whose argmax is the last subject or last relation token: "
                  f"{s['fraction_argmax_last_subject_or_relation']:.0%}"]
    return "\n".join(lines)
