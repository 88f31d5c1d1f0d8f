"""`toplens sequential`: many edits kept on one model, one method after the other, measured at
checkpoints (the curve of each metric against the number of edits, and its figure)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from toplens.analyses.cli.common import (UsageError, add_data_arg, add_hparams_arg, add_methods_arg, add_model_args,
                                         add_out_arg, check_at_least, check_file, check_hparams_flag, check_writable,
                                         emit, hparams_overrides, load, parse_ints, parse_methods, records_from,
                                         resolve_all)
from toplens.analyses.evaluation.evaluate import GENERATION_TOKENS
from toplens.analyses.evaluation.sequential import DEFAULT_CHECKPOINTS, SequentialResult, run_sequential
from toplens.analyses.figures import save_figure, sequential_curves

COLUMNS = (("efficacy", "Eff"), ("generalization", "Gen"), ("s_specificity", "S-Spec"), ("r_specificity", "R-Spec"),
           ("efficacy_at_1", "Eff@1"), ("retention", "Retain"), ("fluency", "Flu"), ("refused", "Refused"))


def add_parser(sub) -> None:
    p = sub.add_parser("sequential", help="many edits on one model, measured as they accumulate")
    add_methods_arg(p, "rome")
    add_data_arg(p)
    p.add_argument("--n", type=int, default=200, help="edit the first N records, in order")
    p.add_argument("--batch-size", type=int, default=1, help="requests per edit (above 1: memit only)")
    p.add_argument("--checkpoints", default=",".join(map(str, DEFAULT_CHECKPOINTS)),
                   help="edit counts to measure at (those above --n are dropped)")
    p.add_argument("--project", choices=("none", "nullspace"), default=None,
                   help="the null-space projection for every method (default: each method's setting)")
    p.add_argument("--retention", type=int, default=100,
                   help="held-out facts the unedited model knows, kept track of (0: none)")
    p.add_argument("--corpus", default=None,
                   help="with the projection: a UTF-8 text file, one text per line, for the preserved keys' statistic "
                        "(default: text the model samples)")
    p.add_argument("--corpus-tokens", type=int, default=None,
                   help="with the projection: tokens of model-sampled text for that statistic (default 6144)")
    p.add_argument("--no-generation", action="store_true", help="skip the Fluency generations")
    p.add_argument("--seed", type=int, default=0, help="seed for target_new of known facts and for sampling")
    add_out_arg(p, "one folder per method, curve.json and sequential.png; reruns resume", required=True)
    add_hparams_arg(p)
    add_model_args(p)
    p.set_defaults(run=run)


def validate(args: argparse.Namespace) -> list[int]:
    """The flags, before the data or the model loads; the checkpoints up to --n."""
    check_at_least(args, 1, "n", "batch_size", "corpus_tokens")
    check_at_least(args, 0, "seed", "retention")
    if args.corpus is not None and args.corpus_tokens is not None:
        raise UsageError("--corpus, --corpus-tokens: give a corpus file or a sampled size, not both")
    if (args.corpus or args.corpus_tokens) and args.project != "nullspace":
        raise UsageError("--corpus/--corpus-tokens need --project nullspace; got "
                         + ("no --project" if args.project is None else f"--project {args.project}"))
    check_file(args.corpus, "--corpus")
    check_writable(args.out, "--out", folder=True)
    check_hparams_flag(args.hparams, parse_methods(args.methods))
    marks = parse_ints(args.checkpoints, "--checkpoints") or []
    if not marks or min(marks) < 1:
        raise ValueError(f"--checkpoints must be positive edit counts; got {args.checkpoints!r}")
    return sorted({c for c in marks if c <= args.n} | {args.n})


def run(args: argparse.Namespace) -> int:
    marks = validate(args)
    methods = parse_methods(args.methods)
    records = records_from(args, None)
    if len(records) < args.n:
        raise ValueError(f"--n {args.n}: --data {args.data!r} has only {len(records)} records")
    if len(records) == args.n and (args.retention or not args.no_generation):
        raise UsageError(f"--n {args.n}: --data {args.data!r} has no records left over for retention and Fluency; "
                         "lower --n, or pass --retention 0 --no-generation")
    corpus = _corpus(args.corpus)
    overrides = hparams_overrides(args.hparams, methods)
    if args.project is not None:
        overrides = {m: {**o, "project": args.project} for m, o in overrides.items()}
    model = load(args)
    hparams = resolve_all(model, overrides, args.model)
    results = [run_sequential(model, records[:args.n], method, Path(args.out) / _folder(method, hparams[method]),
                              hparams=hparams[method], held_out=records[args.n:], batch_size=args.batch_size,
                              checkpoints=marks, retention_facts=args.retention, seed=args.seed,
                              generation_tokens=0 if args.no_generation else GENERATION_TOKENS,
                              corpus=corpus, corpus_tokens=args.corpus_tokens, model_name=args.model or None)
               for method in methods]
    report = {"runs": [r.to_json() for r in results]}
    (Path(args.out) / "curve.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    save_figure(sequential_curves(results), args.out, "sequential")
    emit(args, report, format_curves(results))
    return 0


def _corpus(path: str | None) -> list[str] | None:
    """The corpus file's non-empty lines (None without --corpus)."""
    if path is None:
        return None
    try:
        texts = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as err:
        raise UsageError(f"--corpus: {path!r} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not texts:
        raise UsageError(f"--corpus: {path!r} has no non-empty line")
    return texts


def _folder(method: str, hp) -> str:
    return f"{method}-nullspace" if hp.project == "nullspace" else method


def format_curves(results: Sequence[SequentialResult]) -> str:
    """One block per method: a row per checkpoint with every rate, retention and Fluency."""
    def cell(value) -> str:
        return "-" if value is None else str(value) if isinstance(value, int) else f"{value:.1f}"

    rows = []
    for r in results:
        rows += [f"{r.label}  (retention on {r.retention_facts} held-out facts; Fluency before {cell(r.fluency_before)})",
                 f"{'edits':>6}" + "".join(f"{label:>8}" for _, label in COLUMNS) + f"{'s':>8}"]
        rows += [f"{p.edits:>6}" + "".join(f"{cell(getattr(p, name)):>8}" for name, _ in COLUMNS) + f"{p.seconds:>8.0f}"
                 for p in r.points]
        rows.append("")
    return "\n".join(rows).rstrip()
