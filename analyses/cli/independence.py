"""`toplens independence`: P(o*) as the subject feature v varies with h_r fixed to TOP's h*_r."""

from __future__ import annotations

import argparse

from toplens.analyses.cli.common import (add_hparams_arg, add_model_args, add_out_arg, add_request_args,
                                         check_at_least, check_hparams_flag, check_requests_fit, check_writable,
                                         emit, hparams_overrides, load, request_from, resolve_all)
from toplens.analyses.outputs import save_independence
from toplens.analyses.tracing.independence import IndependenceResult, independence_check


def add_parser(sub) -> None:
    p = sub.add_parser("independence", help="P(o*) as the subject feature v varies with h_r fixed to TOP's h*_r "
                                            "(the decomposition's conditional independence)")
    add_request_args(p)
    add_hparams_arg(p)
    p.add_argument("--n-random", type=int, default=4, help="random values of v at TOP's distance from v_init")
    p.add_argument("--no-rome", action="store_true", help="leave out ROME's v* as a value of v")
    p.add_argument("--seed", type=int, default=0, help="seed of the random directions")
    add_out_arg(p, "independence.json")
    add_model_args(p)
    p.set_defaults(run=run)


def validate(args: argparse.Namespace, methods: list[str]) -> None:
    """The flags and folders, before the model loads."""
    check_at_least(args, 0, "n_random", "seed")
    check_writable(args.out, "--out", folder=True)
    check_hparams_flag(args.hparams, methods, flat_to=["top"])


def run(args: argparse.Namespace) -> int:
    methods = ["top"] if args.no_rome else ["top", "rome"]
    validate(args, methods)
    request = request_from(args)
    overrides = hparams_overrides(args.hparams, methods, flat_to=["top"])
    model = load(args)
    check_requests_fit(model, [request], "--prompt")
    hparams = resolve_all(model, overrides, args.model)
    result = independence_check(model, request, hparams["top"], rome_hparams=hparams.get("rome"),
                                include_rome=not args.no_rome, n_random=args.n_random, seed=args.seed)
    if args.out:
        save_independence(result, args.out)
    emit(args, result.to_json(), format_independence(result))
    return 0


def format_independence(result: IndependenceResult) -> str:
    lines = [f"P({result.request.target_new!r}) with v set at layer {result.layer}; 'fixed': h_r at la = "
             f"{result.la} patched to h*_r, 'free': h_r as the model computes it", "",
             f"{'v':14}{'|v|':>10}{'|v - v_init|':>14}{'P fixed':>10}{'P free':>10}"]
    lines += [f"{r.name:14}{r.v_norm:>10.2f}{r.delta_norm:>14.2f}{r.p_fixed:>10.4f}{r.p_free:>10.4f}"
              for r in result.rows]
    lines.append("")
    for column in ("p_fixed", "p_free"):
        s = result.spread(column)
        lines.append(f"{column}: max - min {s['max_minus_min']:.4f}, std {s['std']:.4f}, mean {s['mean']:.4f}")
    lines.append(f"P(o*) with only h*_r patched in: {result.p_h_star:.4f}")
    return "\n".join(lines)
