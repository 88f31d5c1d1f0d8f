"""The saved-edit file: one safetensors file of low-rank factors, its JSON description in the
metadata (no pickle), and the hash of the model the edit was computed on.

Format 3 (written now) records that hash; formats 2 (factors) and 1 (dense ΔW) still load, as
edits tied to no model. Everything read is checked, and every error names the file.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from toplens.core.cache import write_atomic
from toplens.core.requests import EditRequest, RequestError

FORMAT = "toplens-edit/3"
READABLE = (FORMAT, "toplens-edit/2", "toplens-edit/1")
METHODS: set[str] = set()  # filled by the editors as they are registered


class EditFileError(ValueError):
    """A saved edit that cannot be read or written; the message starts with the file."""


def write_edit(edit, path: str | Path) -> Path:
    """Write ``edit`` (a WeightEdit) to ``path``; refuses non-finite factors and missing folders."""
    path = Path(path)
    if not path.parent.is_dir():
        raise EditFileError(f"{path}: folder {str(path.parent)!r} does not exist")
    tensors = {}
    for i, d in enumerate(edit.deltas):
        for name, factor in (("u", d.u), ("v", d.v)):
            if not bool(torch.isfinite(factor).all()):
                raise FloatingPointError(f"{path}: the edit's layer-{d.layer} factor {name} has NaN or inf; not saved")
            tensors[f"{name}.{i}"] = factor.detach().cpu().contiguous()
    meta = {"format": FORMAT, "method": edit.method, "model": edit.model_digest,
            "requests": [r.to_dict() for r in edit.requests], "layers": list(edit.layers), "hparams": edit.hparams}
    write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata={"toplens": json.dumps(meta)}))
    return path


def read_edit(path: str | Path, edit_type):
    """The ``edit_type`` (WeightEdit) saved at ``path``, every field checked."""
    path = Path(path)
    if not path.is_file():
        raise EditFileError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = _metadata(path, handle.metadata())
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except EditFileError:
        raise
    except Exception as err:  # safetensors' own errors for a file that is not one
        raise EditFileError(f"{path}: not a safetensors file ({err})") from err
    deltas = _deltas(path, meta, tensors)
    requests = _requests(path, meta["requests"])
    return edit_type(meta["method"], requests, deltas, meta["hparams"], model_digest=meta.get("model"))


def _metadata(path: Path, raw_meta: dict[str, str] | None) -> dict[str, Any]:
    raw = (raw_meta or {}).get("toplens")
    if raw is None:
        raise EditFileError(f"{path}: not a toplens edit (no 'toplens' metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise EditFileError(f"{path}: its 'toplens' metadata is not JSON ({err})") from err
    if not isinstance(meta, dict):
        raise EditFileError(f"{path}: its 'toplens' metadata must be a JSON object; got {type(meta).__name__}")
    _check_fields(path, meta)
    return meta


def _check_fields(path: Path, meta: dict[str, Any]) -> None:
    fmt = meta.get("format")
    if fmt not in READABLE:
        raise EditFileError(f"{path}: edit format {fmt!r} is not one this toplens reads ({', '.join(READABLE)})")
    method = meta.get("method")
    if method not in METHODS:
        raise EditFileError(f"{path}: field 'method' must be one of {sorted(METHODS)}; got {method!r}")
    layers = meta.get("layers")
    if (not isinstance(layers, list) or not layers or len(set(map(str, layers))) != len(layers)
            or not all(isinstance(x, numbers.Integral) and not isinstance(x, bool) and x >= 0 for x in layers)):
        raise EditFileError(f"{path}: field 'layers' must be a non-empty list of distinct layer indices; "
                            f"got {layers!r}")
    if not isinstance(meta.get("requests"), list) or not meta["requests"]:
        raise EditFileError(f"{path}: field 'requests' must be a non-empty list; got {meta.get('requests')!r}")
    if not isinstance(meta.setdefault("hparams", {}), dict):
        raise EditFileError(f"{path}: field 'hparams' must be an object; got {meta['hparams']!r}")
    model = meta.get("model")
    if fmt == FORMAT and not (model is None or isinstance(model, str)):
        raise EditFileError(f"{path}: field 'model' must be the model's hash (a string); got {model!r}")


def _deltas(path: Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> tuple:
    from toplens.core.edits import LayerDelta

    dense = meta["format"] == "toplens-edit/1"
    names = [f"delta.{i}" for i in range(len(meta["layers"]))] if dense else \
        [f"{f}.{i}" for i in range(len(meta["layers"])) for f in ("u", "v")]
    if set(names) != set(tensors):
        raise EditFileError(f"{path}: expected the tensors {sorted(names)} for layers {meta['layers']}; "
                            f"found {sorted(tensors)}")
    deltas = []
    for i, layer in enumerate(meta["layers"]):
        u, v = (tensors[f"delta.{i}"], None) if dense else (tensors[f"u.{i}"], tensors[f"v.{i}"])
        if v is None:  # format 1: ΔW itself, kept as ΔW · I
            v = torch.eye(u.shape[-1], dtype=u.dtype) if u.ndim == 2 else u
        if not (bool(torch.isfinite(u).all()) and bool(torch.isfinite(v).all())):
            raise EditFileError(f"{path}: the layer-{layer} factors hold NaN or inf")
        try:
            deltas.append(LayerDelta(int(layer), u, v))
        except ValueError as err:
            raise EditFileError(f"{path}: layer {layer}: {err}") from err
    return tuple(deltas)


def _requests(path: Path, items: list[Any]) -> tuple[EditRequest, ...]:
    requests = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise EditFileError(f"{path}: requests[{i}] must be an object; got {item!r}")
        try:
            requests.append(EditRequest.from_dict(item))
        except (RequestError, TypeError) as err:
            raise EditFileError(f"{path}: requests[{i}]: {err}") from err
    return tuple(requests)
