"""What the commands share: flags defined once, the one ``--hparams`` rule and its check, reading
the data and requests, loading and printing (the checks of plain flags are in ``checks``)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from toplens import EditRequest, as_adapter, load_model
from toplens.core.hparams import Hparams
from toplens.core.positions import check_fits
from toplens.editors import get_editor
from toplens.editors.presets import get_preset
from toplens.editors.presets import methods as preset_methods
from toplens.model.loading import ModelNotFoundError

from toplens.analyses.cli.checks import (UsageError, check_at_least, check_file, check_folder,  # noqa: F401
                                         check_model_flag, check_trace_flags, check_writable, flag_name)
from toplens.analyses.evaluation.datasets import load_dataset
from toplens.analyses.evaluation.records import Record
from toplens.analyses.evaluation.samples import DEFAULT_REQUEST
from toplens.core.corruption import DEFAULT_SAMPLES, DEFAULT_WINDOW

logger = logging.getLogger(__name__)

EPILOG = """\
--hparams JSON (every command takes the same format)
  A JSON object, given inline or as the path of a file holding one, of hyperparameter overrides:
  each method runs with its preset for the model, these fields replaced (unknown fields are errors).
  - Keyed by method, when every key names a method (rome, top, rets, memit):
      {"rome": {"layer": 4}, "top": {"rel_feat_layer": 5}}
    Each method the command runs takes its own entry; entries of methods it does not run are
    ignored, so one file serves every command.
  - Flat, otherwise: {"layer": 4} overrides the command's main method, as if keyed by it:
      edit, saliency, trace   the --method
      eval, rie               the --methods, when they name one (several need a keyed object)
      sweep, independence     TOP (independence's ROME reference takes keyed overrides only)
      figures                 both ROME and TOP
  edit's --layer L adds {"layer": L}.
"""


# ------------------------------------------------------------------------------ the flags
def add_model_args(p: argparse.ArgumentParser) -> None:
    """--model, --backend and --json."""
    p.add_argument("--model", default=None, help="model name or path (default: bundled SmolLM2-135M-Instruct)")
    p.add_argument("--backend", default="auto", choices=["auto", "hooked", "bridge"])
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def add_hparams_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hparams", default=None, help="JSON object (inline or a file) of overrides of the presets, "
                                                   'flat ({"layer": 4}) or keyed by method ({"rome": {"layer": 4}}); '
                                                   "see 'toplens --help'")


def add_out_arg(p: argparse.ArgumentParser, what: str, required: bool = False) -> None:
    p.add_argument("--out", required=required, default=None, help=f"output folder ({what})")


def add_data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="builtin", help='"builtin", "builtin-questions" (the same facts asked as questions) or a CounterFact / COUNTERFACT_RS / known-facts '
                                                     "JSON file")


def add_methods_arg(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--methods", default=default, help="comma-separated editing methods, e.g. rome,top")


def add_request_args(p: argparse.ArgumentParser, default: EditRequest | None = DEFAULT_REQUEST) -> None:
    """--prompt, --subject, --target, --target-true (defaults: ``default``'s fields)."""
    d = {} if default is None else {"prompt": default.prompt, "subject": default.subject,
                                    "target": default.target_new, "target_true": default.target_true}
    p.add_argument("--prompt", default=d.get("prompt"), help='prompt template with one "{}" for the subject')
    p.add_argument("--subject", default=d.get("subject"))
    p.add_argument("--target", default=d.get("target"), help="the new object o*, with its leading space")
    p.add_argument("--target-true", default=d.get("target_true"), help="the object o the model knows now")


def add_trace_args(p: argparse.ArgumentParser) -> None:
    """--samples, --window, --noise-std and --seed of causal tracing."""
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="noise samples per trace")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="layers restored together (mlp / attn)")
    p.add_argument("--noise-std", type=float, default=None, help="noise std (default 3 x the subject "
                                                                  "embeddings' std)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")


def trace_options(args: argparse.Namespace) -> dict[str, Any]:
    """The tracing flags as keyword arguments of the tracing functions."""
    return {"n_samples": args.samples, "window": args.window, "noise_std": args.noise_std, "seed": args.seed}


# --------------------------------------------- checks that need the --hparams rule or the data
def check_hparams_flag(text: str | None, methods: Sequence[str], flat_to: Sequence[str] | None = None) -> None:
    """--hparams parses and each method's overrides are valid fields and values (checked on the
    method's defaults; the layers are checked against the model once it is loaded)."""
    for method, overrides in hparams_overrides(text, methods, flat_to).items():
        try:
            get_editor(method).hparams_type().replace(**overrides)
        except ValueError as err:
            raise UsageError(f"--hparams: {err}") from None


def records_from(args: argparse.Namespace, limit: int | None) -> tuple[Record, ...]:
    """The records of --data (at most ``limit``); a missing or malformed file names the flag."""
    try:
        return load_dataset(args.data, limit=limit, seed=args.seed)
    except (ValueError, KeyError, TypeError, OSError) as err:
        detail = f"a record lacks the key {err}" if isinstance(err, KeyError) else err
        raise UsageError(f"--data {args.data!r}: {detail}") from None


# ------------------------------------------------------------------------- typed values
REQUEST_FLAGS = (("prompt", "--prompt"), ("subject", "--subject"), ("target_new", "--target"),
                 ("target_true", "--target-true"))


def request_from(args: argparse.Namespace) -> EditRequest:
    """The request of --prompt, --subject, --target and --target-true; a bad one names its flag."""
    try:
        return EditRequest(args.prompt, args.subject, args.target, args.target_true or None)
    except ValueError as err:
        flag = next((f for field, f in REQUEST_FLAGS if f"EditRequest.{field}" in str(err)), "--prompt")
        raise UsageError(f"{flag}: {err}") from None


def check_requests_fit(model, requests: Sequence[EditRequest], flag: str) -> None:
    """Each request's prompt followed by each of its targets fits the model's context (run once the
    model is loaded, before any work on it)."""
    adapter = as_adapter(model)
    for i, request in enumerate(requests):
        where = f" item {i}" if len(requests) > 1 else ""
        for field in ("target_new", "target_true"):
            target = getattr(request, field)
            try:
                if target is not None:
                    check_fits(adapter, [request.text + target], f"the filled prompt with {field}", extra=-1)
            except ValueError as err:
                raise UsageError(f"{flag}{where}: {err}") from None


def check_method(method: str, flag: str = "--method") -> str:
    """``method``, which must be known to ``get_editor``."""
    try:
        get_editor(method)
    except ValueError as err:
        raise ValueError(f"{flag}: unknown method {method!r} ({err})") from None
    return method


def parse_methods(text: str, flag: str = "--methods") -> list[str]:
    """Comma-separated method names, each known to ``get_editor``."""
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise ValueError(f"{flag} names no method; got {text!r}")
    return [check_method(method, flag) for method in methods]


def parse_ints(text: str | None, flag: str) -> list[int] | None:
    """Comma-separated integers (None when ``text`` is empty)."""
    if not text:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated integers; got {text!r}") from None


def check_las(text: str | None) -> None:
    """--las: comma-separated layer indices, none negative."""
    las = parse_ints(text, "--las")
    if las is not None and (not las or min(las) < 0):
        raise UsageError(f"--las must be non-negative layer indices; got {text!r}")


# ------------------------------------------------------------------------ hyperparameters
def read_json_object(text: str | None, flag: str = "--hparams") -> dict[str, Any]:
    """A JSON object given inline or as the path of a file holding one ({} when ``text`` is empty)."""
    if not text:
        return {}
    source = Path(text).read_text(encoding="utf-8") if _is_file(text) else text
    try:
        raw = json.loads(source)
    except json.JSONDecodeError as err:
        what = f"the file {text!r}" if source is not text else f"{text!r} (not an existing file either)"
        raise UsageError(f"{flag}: {what} is not JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{flag} must be a JSON object; got {text!r}")
    return raw


def _is_file(text: str) -> bool:
    """Whether ``text`` names an existing file; inline JSON (a ``{``) and names the system refuses
    (too long for a path, for one) are not files."""
    if text.lstrip().startswith("{"):
        return False
    try:
        return Path(text).is_file()
    except OSError:
        return False


def hparams_overrides(text: str | None, methods: Sequence[str],
                      flat_to: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """The ``--hparams`` rule (see EPILOG): the overrides of each of ``methods``, the methods a
    command runs. ``flat_to`` names the methods a flat object overrides (default: ``methods``
    when it is a single method; with several, a flat object is an error)."""
    raw = read_json_object(text)
    if raw and set(raw) <= {*preset_methods(), *methods}:
        ignored = sorted(set(raw) - set(methods))
        if ignored:
            logger.info("--hparams: ignoring the overrides of %s (not run by this command)", ignored)
        for method in set(raw) & set(methods):
            if not isinstance(raw[method], dict):
                raise ValueError(f"--hparams: the overrides of {method!r} must be a JSON object; got {raw[method]!r}")
        return {m: dict(raw.get(m, {})) for m in methods}
    targets = list(methods) if flat_to is None and len(methods) == 1 else list(flat_to or ())
    if raw and not targets:
        raise ValueError(f"--hparams must be a JSON object keyed by method when several methods run ({methods}), "
                         f'e.g. {{"{methods[0]}": {{"layer": 4}}}}; got {text!r}')
    return {m: dict(raw) if m in targets else {} for m in methods}


def resolve_hparams(method: str, model, overrides: Mapping[str, Any] | None = None,
                    model_name: str | None = None) -> Hparams:
    """``overrides`` applied to ``method``'s preset for this model (looked up by ``model_name``,
    default the model's own name)."""
    adapter = as_adapter(model)
    hp = get_preset(method, model_name or adapter.name, adapter.n_layers)
    return hp.replace(**overrides) if overrides else hp


def resolve_all(model, overrides: Mapping[str, Mapping[str, Any]], model_name: str | None) -> dict[str, Hparams]:
    """:func:`resolve_hparams` of each method of ``overrides`` (from :func:`hparams_overrides`)."""
    return {m: resolve_hparams(m, model, o, model_name) for m, o in overrides.items()}


# ----------------------------------------------------------------------- loading, printing
def load(args: argparse.Namespace):
    """The model of ``--model`` on ``--backend`` (checked first: a wrong name never starts a load)."""
    check_model_flag(args)
    try:
        return load_model(args.model, args.backend)
    except ModelNotFoundError as err:  # a hub id the bridge could not find
        raise UsageError(f"--model: {err}") from None


def emit(args: argparse.Namespace, report: Mapping[str, Any], text: str) -> None:
    """Print ``report`` as JSON with ``--json``, else ``text``."""
    print(json.dumps(report, indent=2) if args.json else text)
