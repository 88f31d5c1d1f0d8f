"""The ``toplens`` command: one module per subcommand, each parsing its flags, calling one
library function and printing its result (a table, or JSON with ``--json``).

``main(["edit", ...])`` runs in-process (the tests do); nothing outside this package imports it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from toplens.analyses.cli import edit, figures, independence, rie, saliency, sweep, trace
from toplens.analyses.cli import eval as eval_  # the module; the name `eval` is Python's
from toplens.analyses.cli.common import EPILOG

COMMANDS = (edit, eval_, saliency, trace, rie, independence, sweep, figures)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toplens", description="Knowledge editing with TOP and its analyses",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2, with the message on stderr, for a bad input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except (ValueError, TypeError, FloatingPointError) as err:
        print(f"toplens {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
