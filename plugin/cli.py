"""`toplens edit`: edit one fact (or a batch) on a model, show before/after, revert and verify."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from toplens.editors import get_editor
from toplens.core.fold import EditHandle
from toplens.core.hparams import read_json_object
from toplens.model.loading import load_model
from toplens.model import ModelAdapter, as_adapter
from toplens.editors.presets import get_preset
from toplens.core.requests import EditRequest
from toplens.core.scoring import target_probability, top_tokens

logger = logging.getLogger(__name__)


def weight_hashes(adapter: ModelAdapter, layers: Sequence[int]) -> dict[int, str]:
    """sha256 of each layer's W_out bytes (to prove a revert is bit-exact)."""
    out = {}
    for layer in layers:
        tensor = adapter.w_out(layer).detach().contiguous().cpu()
        out[layer] = hashlib.sha256(tensor.view(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
    return out


@dataclass
class Snapshot:
    """What the model says for a request's prompt."""

    p_new: float
    p_true: float | None
    top: list[tuple[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"p_new": self.p_new, "p_true": self.p_true, "top5": [{"token": t, "prob": p} for t, p in self.top]}


def snapshot(adapter: ModelAdapter, request: EditRequest) -> Snapshot:
    p_true = target_probability(adapter, request.text, request.target_true) if request.target_true else None
    top = [(t.token, t.prob) for t in top_tokens(adapter, request.text, 5)]
    return Snapshot(target_probability(adapter, request.text, request.target_new), p_true, top)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model name or path (default: bundled SmolLM2-135M-Instruct)")
    parser.add_argument("--backend", default="auto", choices=["auto", "hooked", "bridge"])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def add_edit_parser(sub) -> None:
    p = sub.add_parser("edit", help="edit a fact and show the model before and after")
    p.add_argument("--method", default="rome", help="editing method (rome, top, rets, memit)")
    p.add_argument("--prompt", help='prompt template with one "{}" for the subject')
    p.add_argument("--subject")
    p.add_argument("--target", help="the new object, with its leading space")
    p.add_argument("--target-true", default=None, help="the object the model knows now (optional)")
    p.add_argument("--requests", default=None, metavar="FILE.json",
                   help="a batch: a JSON list of requests in CounterFact's requested_rewrite shape "
                        "(or whole CounterFact records); MEMIT edits them at once, the others in sequence")
    p.add_argument("--layer", type=int, default=None, help="edit layer (default: the method's preset)")
    p.add_argument("--hparams", default=None, help="JSON object (inline or a file) of hyperparameters overriding the preset")
    p.add_argument("--save", default=None, help="write the computed edit to this .safetensors file")
    add_model_args(p)
    p.set_defaults(func=run_edit)


def build_request(args) -> EditRequest | None:
    """The request of --prompt/--subject/--target (None with --requests, which excludes them)."""
    if args.requests is not None:
        given = [f"--{n.replace('_', '-')}" for n in ("prompt", "subject", "target", "target_true")
                 if getattr(args, n) is not None]
        if given:
            raise SystemExit(f"toplens edit: --requests cannot be combined with {', '.join(given)}")
        return None
    missing = [f"--{n}" for n in ("prompt", "subject", "target") if getattr(args, n) is None]
    if missing:
        raise SystemExit(f"toplens edit: missing {', '.join(missing)}")
    return EditRequest(args.prompt, args.subject, args.target, args.target_true)


def resolve_hparams(method: str, args, adapter: ModelAdapter):
    hp = get_preset(method, args.model, adapter.n_layers)
    overrides = read_json_object(args.hparams)
    if args.layer is not None:
        overrides["layer"] = args.layer
    hp = hp.replace(**overrides) if overrides else hp
    if hasattr(hp, "layer"):
        adapter.check_layer(hp.layer, "--layer")
    return hp


def compute_edit(method: str, adapter: ModelAdapter, request: EditRequest, hp):
    return get_editor(method).compute(adapter, request, hp)


def read_requests(path: str) -> list[EditRequest]:
    """Requests from a JSON list of CounterFact ``requested_rewrite`` objects (or whole records)."""
    try:
        items = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--requests {path!r}: cannot read a JSON list ({err})") from err
    if not isinstance(items, list) or not items:
        raise ValueError(f"--requests {path!r}: expected a non-empty JSON list of requests")
    requests = []
    for i, item in enumerate(items):
        rewrite = item.get("requested_rewrite", item) if isinstance(item, dict) else item
        if not isinstance(rewrite, dict):
            raise ValueError(f"--requests {path!r}: item {i} is not an object: {item!r}")
        try:
            requests.append(EditRequest.from_counterfact(rewrite))
        except ValueError as err:
            raise ValueError(f"--requests {path!r}: item {i}: {err}") from err
    return requests


def run_batch(args) -> int:
    """Edit every request of --requests together, report each before/after, revert and verify."""
    requests = read_requests(args.requests)
    model = load_model(args.model, args.backend)
    adapter = as_adapter(model)
    hp = resolve_hparams(args.method, args, adapter)
    before = [snapshot(adapter, r) for r in requests]
    hashes = weight_hashes(adapter, range(adapter.n_layers))
    start = time.perf_counter()
    with get_editor(args.method).apply(adapter, requests, hp) as handle:
        seconds = time.perf_counter() - start
        after = [snapshot(adapter, r) for r in requests]
        n_edits = len(handle.edits)
    restored = weight_hashes(adapter, range(adapter.n_layers)) == hashes
    report = batch_report(args.method, adapter, requests, seconds, before, after, restored, n_edits)
    print(json.dumps(report, indent=2) if args.json else format_batch(report))
    return 0 if restored else 1


def batch_report(method, adapter, requests, seconds, before, after, restored, n_edits) -> dict[str, Any]:
    rows = [{"request": r.to_dict(), "pre": b.to_dict(), "post": a.to_dict(),
             "success": a.p_true is None or a.p_new > a.p_true}
            for r, b, a in zip(requests, before, after)]
    return {"method": method, "model": adapter.name, "backend": adapter.backend, "n_requests": len(requests),
            "weight_edits": n_edits, "seconds": round(seconds, 3),
            "n_success": sum(row["success"] for row in rows), "restored_bitexact": restored, "requests": rows}


def format_batch(r: dict[str, Any]) -> str:
    lines = [f"{r['method'].upper()} batch of {r['n_requests']} on {r['model']} ({r['backend']}), "
             f"{r['seconds']:.1f} s, {r['n_success']}/{r['n_requests']} edits succeed", "",
             f"{'subject':28}{'new':>14}{'P(new) pre':>12}{'post':>8}{'P(true) pre':>13}{'post':>8}"]
    for row in r["requests"]:
        req, pre, post = row["request"], row["pre"], row["post"]
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"{req['subject'][:27]:28}{req['target_new'][:13]:>14}{fmt(pre['p_new']):>12}"
                     f"{fmt(post['p_new']):>8}{fmt(pre['p_true']):>13}{fmt(post['p_true']):>8}")
    lines += ["", f"weights restored bit for bit after revert: {r['restored_bitexact']}"]
    return "\n".join(lines)


def run_edit(args) -> int:
    if args.requests is not None:
        build_request(args)
        return run_batch(args)
    request = build_request(args)
    model = load_model(args.model, args.backend)
    adapter = as_adapter(model)
    hp = resolve_hparams(args.method, args, adapter)
    before = snapshot(adapter, request)
    layers = list(range(adapter.n_layers))
    hashes = weight_hashes(adapter, layers)
    start = time.perf_counter()
    edit = compute_edit(args.method, adapter, request, hp)
    seconds = time.perf_counter() - start
    if args.save:
        edit.save(args.save)
    with EditHandle(adapter).add(edit):
        after = snapshot(adapter, request)
    restored = weight_hashes(adapter, layers) == hashes
    report = edit_report(args, adapter, request, edit, seconds, before, after, restored)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if restored else 1


def edit_report(args, adapter, request, edit, seconds, before, after, restored) -> dict[str, Any]:
    details = edit.details
    report: dict[str, Any] = {
        "method": edit.method, "model": adapter.name, "backend": adapter.backend,
        "layer": edit.layers[0] if len(edit.layers) == 1 else list(edit.layers),
        "request": request.to_dict(), "seconds": round(seconds, 3),
        "pre": before.to_dict(), "post": after.to_dict(), "restored_bitexact": restored,
    }
    if hasattr(details, "summary"):
        report.update(details.summary())
    return report


def format_report(r: dict[str, Any]) -> str:
    lines = [f"{r['method'].upper()} edit on {r['model']} ({r['backend']}), layer {r['layer']}, "
             f"{r['seconds']:.1f} s", f"prompt: {r['request']['prompt'].replace('{}', r['request']['subject'])!r}", ""]
    lines.append(f"{'':8}{'P(new)':>10}{'P(true)':>10}   top-5 next tokens")
    for name in ("pre", "post"):
        s = r[name]
        p_true = "-" if s["p_true"] is None else f"{s['p_true']:.4f}"
        top = ", ".join(f"{t['token']!r} {t['prob']:.3f}" for t in s["top5"])
        lines.append(f"{'before' if name == 'pre' else 'after':8}{s['p_new']:>10.4f}{p_true:>10}   {top}")
    lines += ["", f"target_new={r['request']['target_new']!r} target_true={r['request']['target_true']!r}",
              f"weights restored bit for bit after revert: {r['restored_bitexact']}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="toplens")
    sub = parser.add_subparsers(dest="command", required=True)
    add_edit_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
