"""`toplens merge`: join the shard folders of one `toplens eval --shard K/N` run into one summary,
or the folders of one `toplens sweep` run at several las (one la per job) into one sweep."""

from __future__ import annotations

import argparse
from pathlib import Path

from toplens.analyses.cli.common import add_out_arg, check_writable, emit
from toplens.analyses.cli.eval import format_summary
from toplens.analyses.cli.sweep import format_sweep
from toplens.analyses.evaluation.shards import SHARD_FILE, merge_shards
from toplens.analyses.outputs import save_sweep
from toplens.analyses.sweep import SweepResult, join_sweeps

SWEEP_FILE = "sweep.json"


def add_parser(sub) -> None:
    p = sub.add_parser("merge", help="join the folders of a sharded toplens eval into one cases.jsonl and "
                                     "summary.json, or toplens sweep folders of different las into one sweep.json")
    p.add_argument("folders", nargs="+", help="the shard folders, each written by toplens eval --shard K/N, or "
                                              "sweep folders, each written by toplens sweep --las ... --out")
    add_out_arg(p, "the merged cases.jsonl, skipped.jsonl and summary.json (or sweep.json and its figure)",
                required=True)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_writable(args.out, "--out", folder=True)
    kinds = [_kind(Path(f)) for f in args.folders]
    if "sweep" in kinds:
        return _merge_sweeps(args, kinds)
    result = merge_shards(args.folders, args.out)
    emit(args, result.to_json(), format_summary(result.to_json()))
    return 0


def _kind(folder: Path) -> str:
    """"sweep" for a folder with a sweep.json, "shard" otherwise; a folder with both is refused."""
    if (folder / SWEEP_FILE).is_file() and (folder / SHARD_FILE).is_file():
        raise ValueError(f"folders: {str(folder)!r} holds both {SWEEP_FILE} and {SHARD_FILE}; give it alone to "
                         "say which to merge, or move one out")
    return "sweep" if (folder / SWEEP_FILE).is_file() else "shard"


def _merge_sweeps(args: argparse.Namespace, kinds: list[str]) -> int:
    """One sweep.json and figure from sweep folders; every folder must hold a sweep.json."""
    if "shard" in kinds:
        other = args.folders[kinds.index("shard")]
        raise ValueError(f"folders: {other!r} has no {SWEEP_FILE}, while {args.folders[kinds.index('sweep')]!r} "
                         "has one; give only sweep folders or only eval shard folders")
    out = Path(args.out).resolve()
    if any(Path(f).resolve() == out for f in args.folders):
        raise ValueError(f"--out {args.out!r} is one of the sweep folders; merge into another folder")
    try:
        result = join_sweeps([_read_sweep(Path(f)) for f in args.folders])
    except ValueError as err:
        raise ValueError(f"folders {args.folders}: {err}") from None
    save_sweep(result, args.out)
    emit(args, result.to_dict(), format_sweep(result))
    return 0


def _read_sweep(folder: Path) -> SweepResult:
    """The sweep in ``folder``; a file that is not a sweep.json is named in the error."""
    path = folder / SWEEP_FILE
    try:
        return SweepResult.from_json(path.read_text())
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{str(path)!r} is not a toplens sweep.json ({type(err).__name__}: {err})") from None
