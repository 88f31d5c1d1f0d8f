"""The precision of the forward passes while δ is optimized: float32 (published), bfloat16
autocast, or "auto", which takes bfloat16 only where the hardware multiplies in it.

bfloat16 pays only with hardware support: CUDA devices that report it, and CPUs with
AVX512-BF16 or AMX tiles. Elsewhere torch emulates it, and a matmul is far slower than in
float32 (docs/precision.md measures both in one run), so "auto" keeps float32
there and an explicit "bfloat16" is run as asked, with a warning.
"""

from __future__ import annotations

import contextlib
import functools
import logging

import torch

from toplens.core.hparams import PRECISIONS
from toplens.model import ModelAdapter

logger = logging.getLogger(__name__)


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 in hardware (so autocast to it saves time)."""
    if device.type == "cuda":  # compute capability 8 (Ampere) and later multiply bfloat16 natively
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return _cpu_bfloat16()
    return False


@functools.cache
def _cpu_bfloat16() -> bool:
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def resolve_precision(adapter: ModelAdapter, precision: str) -> str:
    """``precision`` as it runs on ``adapter``'s model: "auto" becomes "bfloat16" for a float32
    model on a device with native bfloat16, else "float32"."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    if precision != "auto":
        return precision
    return "bfloat16" if adapter.dtype == torch.float32 and native_bfloat16(adapter.device) else "float32"


def forward_precision(adapter: ModelAdapter, precision: str):
    """bfloat16 autocast on the model's device when ``precision`` resolves to it for a float32
    model; else nothing."""
    chosen = resolve_precision(adapter, precision)
    if chosen == "float32":
        return contextlib.nullcontext()
    if adapter.dtype != torch.float32:
        logger.warning("precision='bfloat16' applies to float32 models; this one is %s, run as it is", adapter.dtype)
        return contextlib.nullcontext()
    if not native_bfloat16(adapter.device):
        _warn_emulated(adapter.device.type)
    return torch.autocast(device_type=adapter.device.type, dtype=torch.bfloat16)


@functools.cache
def _warn_emulated(device_type: str) -> None:
    logger.warning("precision='bfloat16' on a %s without native bfloat16 (no AVX512-BF16 or AMX): it is emulated "
                   "and much slower than float32; precision='auto' picks float32 here", device_type)
