"""`toplens saliency`, `toplens trace`, `toplens rie`: the paper's analyses from the command line.

Each ``add_*_parser(sub)`` registers one subcommand on an argparse subparsers object; each
``run_*_command(args, model=None)`` runs it (tests pass a tiny ``model`` instead of loading one).
Figures are drawn by :mod:`analyses.figures` when ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Sequence

from toplens.cli import add_model_args
from toplens.editors import get_editor
from toplens.core.hparams import read_json_object
from toplens.model.loading import load_model
from toplens.model import as_adapter
from toplens.editors.presets import get_preset
from toplens.editors.presets import methods as known_methods
from toplens.core.requests import EditRequest

from toplens.analyses.causal_trace import DEFAULT_SAMPLES, DEFAULT_WINDOW, KINDS, TraceResult, causal_trace
from toplens.analyses.eval_cli import parse_methods, parse_overrides, read_records

logger = logging.getLogger(__name__)

DEFAULT_REQUEST = EditRequest("The mother tongue of {} is", "Danielle Darrieux", " English", " French")


# ------------------------------------------------------------------------- shared flags
def add_request_args(p: argparse.ArgumentParser) -> None:
    d = DEFAULT_REQUEST
    p.add_argument("--prompt", default=d.prompt, help='prompt template with one "{}" for the subject')
    p.add_argument("--subject", default=d.subject)
    p.add_argument("--target", default=d.target_new, help="the new object o*, with its leading space")
    p.add_argument("--target-true", default=d.target_true, help="the object o the model knows now")


def build_request(args) -> EditRequest:
    return EditRequest(args.prompt, args.subject, args.target, args.target_true or None)


def add_trace_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="noise samples per trace")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="layers restored together (mlp / attn)")
    p.add_argument("--noise-std", type=float, default=None, help="noise std (default 3 x the subject "
                                                                  "embeddings' std)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")


def method_hparams(method: str, adapter, text: str | None, flat: bool = True):
    """The method's preset for the model with ``--hparams`` applied: a JSON object (or file) of
    overrides, either flat (``{"layer": 4}``; ignored when ``flat`` is false, for a command's
    second method) or keyed by method (``{"rome": {"layer": 4}}``)."""
    raw = read_json_object(text)
    if raw and set(raw) <= set(known_methods()):
        raw = raw.get(method, {})
        if not isinstance(raw, dict):
            raise ValueError(f"--hparams: the overrides of {method!r} must be a JSON object; got {raw!r}")
    elif not flat:
        raw = {}
    hp = get_preset(method, adapter.name, adapter.n_layers)
    return hp.replace(**raw) if raw else hp


def emit(args, report: dict[str, Any], text: str) -> None:
    print(json.dumps(report, indent=2) if args.json else text)


def write_json(out: str | Path, name: str, data: dict[str, Any]) -> Path:
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    path = path / name
    path.write_text(json.dumps(data, indent=1))
    return path


# ----------------------------------------------------------------------------- saliency
def add_saliency_parser(sub) -> None:
    p = sub.add_parser("saliency", help="gradient saliency of an edit's value optimization, per layer and token")
    add_request_args(p)
    p.add_argument("--method", default="rome", choices=["rome", "top"])
    p.add_argument("--steps", type=int, default=None, help="optimization steps (default: the preset's)")
    p.add_argument("--stages", default="1,2", help="TOP stages to record, e.g. 1 or 1,2")
    p.add_argument("--hparams", default=None, help='JSON overrides of the preset, e.g. {"layer": 4} '
                                                   '(or keyed by method: {"rome": {"layer": 4}})')
    p.add_argument("--out", default=None, help="folder for saliency_<method>.json and heatmaps")
    add_model_args(p)
    p.set_defaults(func=run_saliency_command)


def format_saliency(result) -> str:
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


def run_saliency_command(args, model=None) -> int:
    from toplens.analyses.saliency import gradient_saliency

    stages = tuple(int(s) for s in args.stages.split(",") if s.strip())
    model = model if model is not None else load_model(args.model, args.backend)
    hp = method_hparams(args.method, as_adapter(model), args.hparams)
    result = gradient_saliency(model, build_request(args), args.method, hp, steps=args.steps, stages=stages)
    if args.out:
        write_json(args.out, f"saliency_{args.method}.json", result.to_json())
        _saliency_figures(result, args.out)
    emit(args, result.to_json(), format_saliency(result))
    return 0


def _saliency_figures(result, out: str) -> None:
    from toplens.analyses.figures import saliency_heatmap, save_figure

    for name, m in result.maps().items():
        save_figure(saliency_heatmap(m, edit_layer=result.edit_layer), out, f"saliency_{result.method}_{name}")


# -------------------------------------------------------------------------------- trace
def add_trace_parser(sub) -> None:
    p = sub.add_parser("trace", help="causal tracing: indirect effect of restoring each layer and token")
    add_request_args(p)
    p.add_argument("--kind", default="all", choices=[*KINDS, "all"], help="what is restored")
    p.add_argument("--method", default="none", help="also trace o* after this edit (rome, top, ...); "
                                                    "'none' traces o on the original model only")
    p.add_argument("--hparams", default=None, help='JSON overrides of the preset, e.g. {"layer": 4} '
                                                   '(or keyed by method: {"rome": {"layer": 4}})')
    p.add_argument("--out", default=None, help="folder for trace_<kind>.json and heatmaps")
    add_trace_args(p)
    add_model_args(p)
    p.set_defaults(func=run_trace_command)


def _trace_all(model, request: EditRequest, answer: str, kinds: Sequence[str], args) -> list[TraceResult]:
    return [causal_trace(model, request.prompt, request.subject, answer, kind=kind, n_samples=args.samples,
                         window=args.window, noise_std=args.noise_std, seed=args.seed) for kind in kinds]


def format_trace(label: str, result: TraceResult) -> str:
    peak = result.peak()
    m = result.effects
    lines = [f"{label}: {result.kind} (answer {result.answer!r}), P clean {result.clean_prob:.4f}, "
             f"corrupted {result.corrupted_prob:.4f}; peak IE {peak['ie']:.4f} at layer {peak['layer']}, "
             f"token {peak['token']!r} ({peak['role']})"]
    lines.append(f"{'layer':>5}  " + "".join(f"{t[:9]!r:>12}" for t in m.tokens))
    for layer in range(m.values.shape[0]):
        lines.append(f"{layer:>5}  " + "".join(f"{float(v):>12.4f}" for v in m.values[layer]))
    return "\n".join(lines)


def run_trace_command(args, model=None) -> int:
    request = build_request(args)
    kinds = list(KINDS) if args.kind == "all" else [args.kind]
    edited = args.method not in ("none", "", None)
    if edited:
        get_editor(args.method)
    if request.target_true is None and not edited:
        raise ValueError("--target-true is needed to trace the original model's answer o")
    model = model if model is not None else load_model(args.model, args.backend)
    before = _trace_all(model, request, request.target_true, kinds, args) if request.target_true else []
    after, hp = [], None
    if edited:
        hp = method_hparams(args.method, as_adapter(model), args.hparams)
        with get_editor(args.method).apply(model, request, hp):
            after = _trace_all(model, request, request.target_new, kinds, args)
    report = {"request": request.to_dict(), "method": args.method if edited else None,
              "before": {r.kind: r.to_json() for r in before}, "after": {r.kind: r.to_json() for r in after}}
    if args.out:
        write_traces(args.out, before, after, edit_layer=_edit_layer(hp))
    text = "\n\n".join([format_trace("original, o", r) for r in before]
                       + [format_trace(f"after {args.method}, o*", r) for r in after])
    emit(args, report, text)
    return 0


def _edit_layer(hp) -> int | None:
    if hp is None:
        return None
    return hp.layer if hasattr(hp, "layer") else hp.layers[0]


def write_traces(out: str, before: list[TraceResult], after: list[TraceResult], edit_layer: int | None) -> None:
    """Write each trace's JSON and one heatmap figure ("trace", PNG and PDF) with a panel per kind,
    before and, when given, after the edit, the edit layer marked, into ``out``."""
    from toplens.analyses.figures import save_figure, trace_heatmaps

    for r in before:
        write_json(out, f"trace_{r.kind}.json", r.to_json())
    for r in after:
        write_json(out, f"trace_{r.kind}_edited.json", r.to_json())
    if before:
        fig = trace_heatmaps([r.effects for r in before], [r.effects for r in after] if after else None,
                             edit_layer=edit_layer)
    else:
        fig = trace_heatmaps([r.effects for r in after], edit_layer=edit_layer)
    save_figure(fig, out, "trace")


# ---------------------------------------------------------------------------------- rie
def add_rie_parser(sub) -> None:
    p = sub.add_parser("rie", help="relative indirect effect at the last subject / relation token per method")
    p.add_argument("--methods", default="rome,top", help="comma-separated editing methods")
    p.add_argument("--n", type=int, default=10, help="number of requests")
    p.add_argument("--data", default="builtin", help='"builtin" or a known-facts / CounterFact JSON file')
    p.add_argument("--hparams", default=None, help='JSON overrides keyed by method, e.g. {"rome": {"layer": 4}}')
    p.add_argument("--out", default=None, help="folder for rie.json and the bar chart")
    add_trace_args(p)
    add_model_args(p)
    p.set_defaults(func=run_rie_command)


def run_rie_command(args, model=None) -> int:
    from toplens.analyses.rie import relative_indirect_effects

    methods = parse_methods(args.methods)
    records = read_records(args.data, args.n, args.seed)
    requests = [r.request for r in records if r.request.target_true is not None]
    if not requests:
        raise ValueError(f"--data {args.data!r} has no records with a true object")
    model = model if model is not None else load_model(args.model, args.backend)
    adapter = as_adapter(model)
    overrides = parse_overrides(args.hparams, methods)
    hparams = {m: get_preset(m, adapter.name, adapter.n_layers).replace(**overrides.get(m, {})) for m in methods}
    report = relative_indirect_effects(model, requests, methods, hparams, n_samples=args.samples,
                                       window=args.window, noise_std=args.noise_std, seed=args.seed, progress=True)
    if args.out:
        write_json(args.out, "rie.json", report.to_json())
        from toplens.analyses.figures import rie_bars, save_figure

        save_figure(rie_bars(report.rows), args.out, "rie")
    emit(args, report.to_json(), report.table())
    return 0


# ------------------------------------------------------------------------- independence
def add_independence_parser(sub) -> None:
    p = sub.add_parser("independence", help="P(o*) as the subject feature v varies with h_r fixed to TOP's h*_r "
                                            "(the decomposition's conditional independence)")
    add_request_args(p)
    p.add_argument("--hparams", default=None, help='JSON overrides of the presets, flat for TOP or keyed by '
                                                   'method: {"top": {...}, "rome": {...}}')
    p.add_argument("--n-random", type=int, default=4, help="random values of v at TOP's distance from v_init")
    p.add_argument("--no-rome", action="store_true", help="leave out ROME's v* as a value of v")
    p.add_argument("--seed", type=int, default=0, help="seed of the random directions")
    p.add_argument("--out", default=None, help="folder for independence.json")
    add_model_args(p)
    p.set_defaults(func=run_independence_command)


def format_independence(result) -> str:
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


def run_independence_command(args, model=None) -> int:
    from toplens.analyses.independence import independence_check

    model = model if model is not None else load_model(args.model, args.backend)
    adapter = as_adapter(model)
    top_hp = method_hparams("top", adapter, args.hparams)
    rome_hp = None if args.no_rome else method_hparams("rome", adapter, args.hparams, flat=False)
    result = independence_check(model, build_request(args), top_hp, rome_hparams=rome_hp,
                                include_rome=not args.no_rome, n_random=args.n_random, seed=args.seed)
    if args.out:
        write_json(args.out, "independence.json", result.to_json())
    emit(args, result.to_json(), format_independence(result))
    return 0

