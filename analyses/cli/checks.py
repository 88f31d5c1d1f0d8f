"""Checks of flags and paths that run before the model loads: each raises a ``UsageError`` of
one line that names the flag and the value."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from toplens.model.loading import check_model_name


class UsageError(ValueError):
    """A flag's value is wrong; the message names the flag and the value (exit status 2)."""


def flag_name(dest: str) -> str:
    """The flag of an argparse destination: ``target_true`` -> ``--target-true``."""
    return "--" + dest.replace("_", "-")


def check_at_least(args: argparse.Namespace, minimum: int, *dests: str) -> None:
    """Each flag of ``dests`` that is given is a number of at least ``minimum``."""
    for dest in dests:
        value = getattr(args, dest)
        if value is not None and value < minimum:
            raise UsageError(f"{flag_name(dest)} must be at least {minimum}; got {value}")


def check_file(path: str | None, flag: str) -> None:
    """``path`` (when given) is an existing file."""
    if path is not None and not Path(path).is_file():
        what = "is a folder, not a file" if Path(path).is_dir() else "does not exist"
        raise UsageError(f"{flag} {path!r} {what}")


def check_folder(path: str | None, flag: str) -> None:
    """``path`` (when given) is an existing folder."""
    if path is not None and not Path(path).is_dir():
        what = "is a file, not a folder" if Path(path).exists() else "does not exist"
        raise UsageError(f"{flag} {path!r} {what}")


def check_writable(path: str | None, flag: str, *, folder: bool) -> None:
    """``path`` (when given) can be written: an output folder (made with its parents when missing)
    or a file in an existing folder."""
    if path is None:
        return
    p = Path(path).expanduser()
    if p.exists() and p.is_dir() != folder:
        is_, want = ("a file", "a folder") if folder else ("a folder", "a file")
        raise UsageError(f"{flag} {path!r} is {is_}, not {want}")
    base = p if folder else p.parent
    while folder and not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        what = "does not exist" if not base.exists() else "is a file"
        raise UsageError(f"{flag} {path!r}: the folder {str(base)!r} {what}")
    target = p if p.exists() else base
    if not os.access(target, os.W_OK | (os.X_OK if target.is_dir() else 0)):
        raise UsageError(f"{flag} {path!r}: {str(target)!r} is not writable")


def check_model_flag(args: argparse.Namespace) -> None:
    """--model names the bundled model, an existing path or a model the backend knows."""
    try:
        check_model_name(args.model, args.backend)
    except ValueError as err:
        raise UsageError(f"--model: {err}") from None


def check_trace_flags(args: argparse.Namespace) -> None:
    """--samples, --window at least 1, --seed at least 0, --noise-std positive and finite."""
    check_at_least(args, 1, "samples", "window")
    check_at_least(args, 0, "seed")
    if args.noise_std is not None and not (math.isfinite(args.noise_std) and args.noise_std > 0):
        raise UsageError(f"--noise-std must be a positive number; got {args.noise_std}")
