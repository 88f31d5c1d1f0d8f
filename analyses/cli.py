"""The `toplens` command: editing (from plugin) plus the analyses' subcommands."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from toplens.cli import add_edit_parser

from toplens.analyses.analysis_cli import add_independence_parser, add_rie_parser, add_saliency_parser, add_trace_parser
from toplens.analyses.eval_cli import add_eval_parser
from toplens.analyses.figures_cli import add_figures_parser, add_sweep_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toplens", description="Knowledge editing with TOP and its analyses")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    add_edit_parser(sub)
    add_eval_parser(sub)
    for add in (add_saliency_parser, add_trace_parser, add_rie_parser, add_independence_parser, add_sweep_parser,
                add_figures_parser):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; ``main(["edit", ...])`` runs in-process (the tests do)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, TypeError, FloatingPointError) as err:
        print(f"toplens {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
