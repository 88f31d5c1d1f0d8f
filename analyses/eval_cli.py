"""`toplens eval`: COUNTERFACT_RS metrics of editing methods on built-in or user data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from toplens.cli import add_model_args
from toplens.editors import get_editor
from toplens.core.hparams import Hparams, read_json_object
from toplens.model.loading import load_model

from toplens.analyses.builder import builtin_records
from toplens.analyses.datasets import load_records
from toplens.analyses.evaluate import GENERATION_TOKENS, GENERATION_TOP_K
from toplens.analyses.metrics import load_stop_words
from toplens.analyses.records import Record
from toplens.analyses.results import METRICS
from toplens.analyses.runner import resolve_hparams, run_eval

COLUMNS = {"efficacy": "Eff", "generalization": "Gen", "s_specificity": "S-Spec", "r_specificity": "R-Spec",
           "score": "Score", "fluency": "Flu", "consistency": "Cons"}


def add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="COUNTERFACT_RS metrics of editing methods over a dataset")
    p.add_argument("--methods", default="rome", help="comma-separated editing methods, e.g. rome,top")
    p.add_argument("--data", default="builtin", help='"builtin" or a CounterFact / COUNTERFACT_RS / '
                                                     "known-facts JSON file")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N records only")
    p.add_argument("--out", required=True, help="output folder (cases.jsonl, summary.json); reruns resume")
    p.add_argument("--stopwords", default=None, help="stop-word file, one per line (default: a built-in list)")
    p.add_argument("--no-generation", action="store_true", help="skip generations (no Fluency / Consistency)")
    p.add_argument("--generation-tokens", type=int, default=GENERATION_TOKENS, help="new tokens per generation")
    p.add_argument("--top-k", type=int, default=GENERATION_TOP_K, help="sampling top-k (1 = greedy)")
    p.add_argument("--seed", type=int, default=0, help="seed for target_new of known facts and for sampling")
    p.add_argument("--hparams", default=None,
                   help='JSON object (or file) of per-method overrides, e.g. {"rome": {"layer": 4}}')
    add_model_args(p)
    p.set_defaults(func=run_eval_command)


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise ValueError(f"--methods names no method; got {text!r}")
    for method in methods:
        try:
            get_editor(method)
        except ValueError as err:
            raise ValueError(f"--methods: unknown method {method!r} ({err})") from None
    return methods


def read_records(data: str, limit: int | None, seed: int) -> tuple[Record, ...]:
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1; got {limit}")
    if data == "builtin":
        return builtin_records(limit, seed=seed)
    if not Path(data).is_file():
        raise ValueError(f"--data must be 'builtin' or a JSON file; {data!r} is not a file")
    records = load_records(data, seed=seed)
    return records if limit is None else records[:limit]


def parse_overrides(text: str | None, methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    raw = read_json_object(text)
    if not all(isinstance(v, dict) for v in raw.values()):
        raise ValueError('--hparams must be a JSON object keyed by method, e.g. {"rome": {"layer": 4}}; '
                         f"got {text!r}")
    unknown = sorted(set(raw) - set(methods))
    if unknown:
        raise ValueError(f"--hparams names methods not in --methods: {unknown}")
    return raw


def format_summary(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """A table: one row per method, rates in percent, then the magnitudes."""
    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:.1f}"

    head = f"{'method':10}{'n':>5}" + "".join(f"{c:>9}" for c in COLUMNS.values())
    rows = [head]
    for method, s in summary.items():
        rows.append(f"{method:10}{s['n']:>5}" + "".join(f"{cell(s[k]):>9}" for k in COLUMNS))
    rows += ["", "magnitudes (mean P(wanted) - P(rival), x100); before the edit (rates):"]
    for method, s in summary.items():
        mags = "  ".join(f"{COLUMNS[k]} {cell(s[f'{k}_magnitude'])}" for k in METRICS)
        pre = "  ".join(f"{COLUMNS[k]} {cell(s['pre'][k])}" for k in METRICS)
        rows.append(f"{method:10}{mags}   | pre: {pre}   | {cell(s['seconds_per_edit'])} s/edit")
    return "\n".join(rows)


def run_eval_command(args, model=None) -> int:
    """The `eval` subcommand; ``model`` (tests) replaces loading ``--model``."""
    methods = parse_methods(args.methods)
    records = read_records(args.data, args.limit, args.seed)
    if not records:
        raise ValueError(f"--data {args.data!r} has no records")
    overrides = parse_overrides(args.hparams, methods)
    stop_words = load_stop_words(args.stopwords)
    model = model if model is not None else load_model(args.model, args.backend)
    presets = resolve_hparams(methods, model, args.model)
    hparams: dict[str, Hparams] = {m: presets[m].replace(**overrides.get(m, {})) for m in methods}
    summary = run_eval(model, records, methods, args.out, hparams=hparams, model_name=args.model or None,
                       stop_words=stop_words, generation_tokens=0 if args.no_generation else args.generation_tokens,
                       top_k=args.top_k, seed=args.seed)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
