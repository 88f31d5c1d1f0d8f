"""precision="auto": bfloat16 autocast only where the device multiplies in it natively, float32
elsewhere; an explicit "bfloat16" without native support runs as asked and warns once."""

import logging
import sys
from pathlib import Path

import pytest
import torch

from toplens import ModelAdapter
from toplens.core import precision
from toplens.core.precision import forward_precision, native_bfloat16, resolve_precision
from toplens.editors import rome
from toplens.editors.presets import fast_path
from tests.plugin.editors.test_fast_path import REQUEST, ROME


def _dtypes_seen(model, hp):
    seen = []
    with model.hooks(fwd_hooks=[("blocks.2.hook_mlp_out", lambda act, hook: seen.append(act.dtype))]):
        rome.compute(model, REQUEST, hp)
    return set(seen)


@pytest.mark.parametrize("native", [False, True])
def test_auto_takes_bfloat16_only_with_native_support(tiny_hooked, monkeypatch, native):
    monkeypatch.setattr(precision, "native_bfloat16", lambda device: native)
    adapter = ModelAdapter(tiny_hooked)
    assert resolve_precision(adapter, "auto") == ("bfloat16" if native else "float32")
    assert resolve_precision(adapter, "float32") == "float32" and resolve_precision(adapter, "bfloat16") == "bfloat16"
    assert fast_path(ROME).precision == "auto"
    assert (torch.bfloat16 in _dtypes_seen(tiny_hooked, fast_path(ROME))) == native
    ran = rome.compute(tiny_hooked, REQUEST, fast_path(ROME)).hparams["precision"]
    assert ran == ("bfloat16" if native else "float32")  # the edit records the precision it ran in


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the CPU flags are read from Linux's /proc/cpuinfo")
def test_this_machines_answer_follows_its_cpu_flags():
    flags = set(Path("/proc/cpuinfo").read_text().split())
    assert native_bfloat16(torch.device("cpu")) == bool({"avx512_bf16", "amx_tile"} & flags)


def test_emulated_bfloat16_warns_once_and_a_bad_precision_names_the_value(tiny_hooked, monkeypatch, caplog):
    monkeypatch.setattr(precision, "native_bfloat16", lambda device: False)
    precision._warn_emulated.cache_clear()
    adapter = ModelAdapter(tiny_hooked)
    with caplog.at_level(logging.WARNING, logger="toplens.core.precision"):
        for _ in range(2):
            with forward_precision(adapter, "bfloat16"):
                pass
    assert sum("emulated" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(ValueError, match="'bf16'"):
        resolve_precision(adapter, "bf16")
    with pytest.raises(ValueError, match="precision.*'bf16'"):
        ROME.replace(precision="bf16")
