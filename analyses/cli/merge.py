"""`toplens merge`: join the shard folders of one `toplens eval --shard K/N` run into one summary."""

from __future__ import annotations

import argparse

from toplens.analyses.cli.common import add_out_arg, check_writable, emit
from toplens.analyses.cli.eval import format_summary
from toplens.analyses.evaluation.shards import merge_shards


def add_parser(sub) -> None:
    p = sub.add_parser("merge", help="join the folders of a sharded toplens eval into one cases.jsonl and summary.json")
    p.add_argument("folders", nargs="+", help="the shard folders, each written by toplens eval --shard K/N")
    add_out_arg(p, "the merged cases.jsonl, skipped.jsonl and summary.json", required=True)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_writable(args.out, "--out", folder=True)
    result = merge_shards(args.folders, args.out)
    emit(args, result.to_json(), format_summary(result.to_json()))
    return 0
