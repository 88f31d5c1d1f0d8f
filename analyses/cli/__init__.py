"""The ``toplens`` command: one module per subcommand, each parsing its flags, calling one
library function and printing its result (a table, or JSON with ``--json``).

``main(["edit", ...])`` runs in-process (the tests do); nothing outside this package imports it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from toplens.analyses.cli import compare, edit, figures, independence, merge, rie, saliency, sequential, sweep, trace
from toplens.analyses.cli import eval as eval_  # the module; the name `eval` is Python's
from toplens.analyses.cli.common import EPILOG

COMMANDS = (edit, compare, eval_, merge, sequential, saliency, trace, rie, independence, sweep, figures)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toplens", description="Knowledge editing with TOP and its analyses",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


#: what a bad input raises: our own checks (ValueErrors), an optimization that diverged
#: (FloatingPointError), and a file of the user's that is missing or unreadable (OSError); any other
#: exception is a bug and keeps its traceback
USER_ERRORS = (ValueError, FloatingPointError, OSError)


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line."""
    text = str(err) or type(err).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2, with one line on stderr, for a bad input).
    Every command checks its flags and files before it loads the model."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except USER_ERRORS as err:
        logging.getLogger(__name__).debug("the error's traceback", exc_info=True)
        print(f"toplens {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
