"""`toplens edit`: edit one fact (or a batch) on a model, show before/after, revert and verify."""

from __future__ import annotations

import argparse
from typing import Any

from toplens import EditRequest, as_adapter, get_editor
from toplens.core.positions import PromptTooLongError

from toplens.analyses.cli.common import (UsageError, add_hparams_arg, add_model_args, add_request_args,
                                         check_at_least, check_file, check_hparams_flag, check_method,
                                         check_requests_fit, check_writable, emit, flag_name,
                                         hparams_overrides, load, request_from, resolve_hparams)
from toplens.analyses.evaluation.datasets import read_requests
from toplens.analyses.evaluation.edit_check import check_batch, check_edit

SINGLE_FLAGS = ("prompt", "subject", "target", "target_true")


def add_parser(sub) -> None:
    p = sub.add_parser("edit", help="edit a fact and show the model before and after")
    p.add_argument("--method", default="rome", help="editing method (rome, top, rets, memit)")
    add_request_args(p, default=None)
    p.add_argument("--requests", default=None, metavar="FILE.json",
                   help="a batch: a JSON list of requests in CounterFact's requested_rewrite shape "
                        "(or whole CounterFact records); MEMIT edits them at once, the others in sequence")
    p.add_argument("--layer", type=int, default=None,
                   help="the edit layer (default: the method's preset); for TOP and MEMIT, their only edit layer")
    add_hparams_arg(p)
    p.add_argument("--save", default=None, help="write the computed edit to this .safetensors file")
    add_model_args(p)
    p.set_defaults(run=run)


def single_request(args: argparse.Namespace) -> EditRequest | None:
    """The request of --prompt/--subject/--target (None with --requests, which excludes them)."""
    if args.requests is not None:
        given = [flag_name(n) for n in SINGLE_FLAGS if getattr(args, n) is not None]
        if given:
            raise UsageError(f"--requests cannot be combined with {', '.join(given)}")
        return None
    missing = [flag_name(n) for n in SINGLE_FLAGS[:3] if getattr(args, n) is None]
    if missing:
        raise UsageError(f"missing {', '.join(missing)} (or give --requests FILE.json)")
    return request_from(args)


def validate(args: argparse.Namespace) -> list[EditRequest]:
    """Every flag and file, before the model loads; returns the request(s)."""
    check_method(args.method)
    check_at_least(args, 0, "layer")
    check_writable(args.save, "--save", folder=False)
    check_hparams_flag(args.hparams, [args.method])
    request = single_request(args)
    if request is not None:
        return [request]
    check_file(args.requests, "--requests")
    try:
        return read_requests(args.requests)
    except ValueError as err:
        raise UsageError(f"--requests: {err}") from None


def run(args: argparse.Namespace) -> int:
    requests = validate(args)
    overrides = hparams_overrides(args.hparams, [args.method])[args.method]
    model = load(args)
    if args.layer is not None:  # the one edit layer, whichever field the method keeps it in
        field = get_editor(args.method).hparams_type.layers_field
        overrides[field] = args.layer if field == "layer" else [args.layer]
    hp = resolve_hparams(args.method, model, overrides, args.model)
    field = "--layer" if args.layer is not None else f"{type(hp).__name__}.{hp.layers_field}"
    for layer in hp.edit_layers:
        as_adapter(model).check_layer(layer, field)
    flag = "--requests" if args.requests is not None else "--prompt"
    check_requests_fit(model, requests, flag)
    try:
        if args.requests is not None:
            check = check_batch(model, args.method, requests, hp)
            emit(args, check.to_json(), format_batch(check.to_json()))
        else:
            check = check_edit(model, args.method, requests[0], hp, save=args.save)
            emit(args, check.to_json(), format_report(check.to_json()))
    except PromptTooLongError as err:  # the prompt fits, but not with a context template around it
        raise UsageError(f"{flag}: {err}") from None
    return 0 if check.restored else 1


def _prob(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_batch(r: dict[str, Any]) -> str:
    lines = [f"{r['method'].upper()} batch of {r['n_requests']} on {r['model']} ({r['backend']}), "
             f"{r['seconds']:.1f} s, {r['n_success']}/{r['n_requests']} edits succeed", "",
             f"{'subject':28}{'new':>14}{'P(new) pre':>12}{'post':>8}{'P(true) pre':>13}{'post':>8}"]
    for row in r["requests"]:
        req, pre, post = row["request"], row["pre"], row["post"]
        lines.append(f"{req['subject'][:27]:28}{req['target_new'][:13]:>14}{_prob(pre['p_new']):>12}"
                     f"{_prob(post['p_new']):>8}{_prob(pre['p_true']):>13}{_prob(post['p_true']):>8}")
    lines += ["", f"weights restored bit for bit after revert: {r['restored_bitexact']}"]
    return "\n".join(lines)


def format_report(r: dict[str, Any]) -> str:
    lines = [f"{r['method'].upper()} edit on {r['model']} ({r['backend']}), layer {r['layer']}, "
             f"{r['seconds']:.1f} s", f"prompt: {r['request']['prompt'].replace('{}', r['request']['subject'])!r}", "",
             f"{'':8}{'P(new)':>10}{'P(true)':>10}   top-5 next tokens"]
    for name in ("pre", "post"):
        s = r[name]
        p_true = "-" if s["p_true"] is None else f"{s['p_true']:.4f}"
        top = ", ".join(f"{t['token']!r} {t['prob']:.3f}" for t in s["top5"])
        lines.append(f"{'before' if name == 'pre' else 'after':8}{s['p_new']:>10.4f}{p_true:>10}   {top}")
    lines += ["", f"target_new={r['request']['target_new']!r} target_true={r['request']['target_true']!r}",
              f"weights restored bit for bit after revert: {r['restored_bitexact']}"]
    return "\n".join(lines)
