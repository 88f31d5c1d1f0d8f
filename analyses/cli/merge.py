"""`toplens merge`: join the shard folders of one `toplens eval --shard K/N` run into one summary,
or the folders of one `toplens sweep` run at several las (one la per job) into one sweep."""

from __future__ import annotations

import argparse
from pathlib import Path

from toplens.analyses.cli.common import add_out_arg, check_writable, emit
from toplens.analyses.cli.eval import format_summary
from toplens.analyses.cli.sweep import format_sweep
from toplens.analyses.evaluation.shards import merge_shards
from toplens.analyses.outputs import save_sweep
from toplens.analyses.sweep import SweepResult, join_sweeps

SWEEP_FILE = "sweep.json"


def add_parser(sub) -> None:
    p = sub.add_parser("merge", help="join the folders of a sharded toplens eval into one cases.jsonl and summary.json, "
                                     "or the folders of toplens sweep runs at different las into one sweep.json")
    p.add_argument("folders", nargs="+", help="the shard folders, each written by toplens eval --shard K/N, or "
                                              "sweep folders, each written by toplens sweep --las ... --out")
    add_out_arg(p, "the merged cases.jsonl, skipped.jsonl and summary.json (or sweep.json and its figure)",
                required=True)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_writable(args.out, "--out", folder=True)
    sweeps = [(Path(f) / SWEEP_FILE).is_file() for f in args.folders]
    if any(sweeps):
        return _merge_sweeps(args, sweeps)
    result = merge_shards(args.folders, args.out)
    emit(args, result.to_json(), format_summary(result.to_json()))
    return 0


def _merge_sweeps(args: argparse.Namespace, sweeps: list[bool]) -> int:
    """One sweep.json and figure from sweep folders; every folder must hold a sweep.json."""
    if not all(sweeps):
        missing = args.folders[sweeps.index(False)]
        raise ValueError(f"folders: {missing!r} has no {SWEEP_FILE}; give sweep folders or eval shard folders, "
                         "not both")
    try:
        result = join_sweeps([SweepResult.from_json((Path(f) / SWEEP_FILE).read_text()) for f in args.folders])
    except ValueError as err:
        raise ValueError(f"folders: {err}") from None
    save_sweep(result, args.out)
    emit(args, result.to_dict(), format_sweep(result))
    return 0
