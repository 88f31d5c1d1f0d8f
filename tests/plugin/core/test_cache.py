"""The caches: keyed by the full weights, bypassed under hooks, robust to damaged and racing files."""

import json
import logging
import threading

import pytest
import torch

from toplens import ModelAdapter
from toplens.core.cache import cache_dir, read_json, write_json
from toplens.core.covariance import key_second_moment
from toplens.core.templates import context_templates

TEXTS = ["Paris is the capital of France.", "Rome is in Italy", "The tower", "Miles Davis plays the trumpet"]
LENGTHS = ((2, 3),)


def _attention_weight(model, layer):
    return next(model.blocks[layer].attn.parameters())


def _scaled(weight, factor):
    """Scale a weight in place; returns the original to copy back."""
    original = weight.detach().clone()
    with torch.no_grad():
        weight.mul_(factor)
    return original


def test_a_model_that_differs_only_in_attention_gets_its_own_statistics(tiny_model):
    cached = key_second_moment(tiny_model, 1, TEXTS)
    weight = _attention_weight(tiny_model, 0)
    original = _scaled(weight, 3.0)
    try:
        changed = key_second_moment(tiny_model, 1, TEXTS)
        fresh = key_second_moment(tiny_model, 1, TEXTS, use_cache=False)
    finally:
        with torch.no_grad():
            weight.copy_(original)
    assert torch.equal(changed, fresh) and not torch.allclose(changed, cached)
    assert torch.equal(key_second_moment(tiny_model, 1, TEXTS), cached)


def test_an_edit_at_the_layer_keeps_its_statistics_valid(tiny_hooked):
    adapter = ModelAdapter(tiny_hooked)
    cached = key_second_moment(tiny_hooked, 2, TEXTS)
    original = _scaled(adapter.w_out(2), 2.0)
    try:
        count = len(list(cache_dir().glob("mom2-*")))
        assert torch.equal(key_second_moment(tiny_hooked, 2, TEXTS), cached)
        assert len(list(cache_dir().glob("mom2-*"))) == count
    finally:
        with torch.no_grad():
            adapter.w_out(2).copy_(original)


def test_statistics_under_a_users_hook_are_computed_under_it_and_never_cached(tiny_model, caplog):
    plain = key_second_moment(tiny_model, 2, TEXTS)
    before = set(cache_dir().glob("mom2-*"))

    def double(act, hook):
        return act * 2.0

    with tiny_model.hooks(fwd_hooks=[("blocks.1.hook_resid_post", double)]):
        with caplog.at_level(logging.WARNING, logger="toplens"):
            hooked = key_second_moment(tiny_model, 2, TEXTS)
    assert "hooks are active" in caplog.text
    assert not torch.allclose(hooked, plain)
    assert set(cache_dir().glob("mom2-*")) == before
    assert torch.equal(key_second_moment(tiny_model, 2, TEXTS), plain)


def test_templates_under_a_users_hook_are_not_cached(tiny_hooked):
    plain = context_templates(tiny_hooked, LENGTHS, seed=11)
    files = set(cache_dir().glob("templates-*"))
    with tiny_hooked.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda act, hook: act * 0)]):
        hooked = context_templates(tiny_hooked, LENGTHS, seed=12)
    assert set(cache_dir().glob("templates-*")) == files
    assert context_templates(tiny_hooked, LENGTHS, seed=11) == plain and len(hooked) == len(plain)


@pytest.mark.parametrize("damage", [b"", b'{"key": {"what": "context_', b'{"key": 1}', b"\xff\xfe"])
def test_a_damaged_template_file_is_recomputed_with_a_warning_naming_it(tiny_hooked, caplog, damage):
    from toplens.core import templates as module

    expected = context_templates(tiny_hooked, LENGTHS, seed=5)
    path = max(cache_dir().glob("templates-*.json"), key=lambda p: p.stat().st_mtime_ns)
    path.write_bytes(damage)
    module._MEMORY.clear()
    with caplog.at_level(logging.WARNING, logger="toplens"):
        assert context_templates(tiny_hooked, LENGTHS, seed=5) == expected
    assert str(path) in caplog.text
    assert json.loads(path.read_text())["templates"] == list(expected)


def test_malformed_templates_in_a_well_keyed_file_are_recomputed(tiny_hooked, caplog):
    from toplens.core import templates as module

    expected = context_templates(tiny_hooked, LENGTHS, seed=6)
    path = max(cache_dir().glob("templates-*.json"), key=lambda p: p.stat().st_mtime_ns)
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({**stored, "templates": ["no placeholder"]}))
    module._MEMORY.clear()
    with caplog.at_level(logging.WARNING, logger="toplens"):
        assert context_templates(tiny_hooked, LENGTHS, seed=6) == expected
    assert "malformed" in caplog.text and str(path) in caplog.text


@pytest.mark.parametrize("damage", ["truncate", "garbage", "shape"])
def test_a_damaged_statistics_file_is_recomputed_with_a_warning_naming_it(tiny_hooked, caplog, damage):
    from safetensors.torch import save_file

    expected = key_second_moment(tiny_hooked, 3, TEXTS[:3])
    path = max(cache_dir().glob("mom2-*.safetensors"), key=lambda p: p.stat().st_mtime_ns)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:40])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 64)
    else:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata()
        save_file({"moment": torch.zeros(3, 3)}, str(path), metadata=meta)
    with caplog.at_level(logging.WARNING, logger="toplens"):
        again = key_second_moment(tiny_hooked, 3, TEXTS[:3])
    assert torch.equal(again, expected)
    assert str(path) in caplog.text


def test_readers_never_see_half_a_file_while_another_writer_replaces_it(tmp_path):
    path, key = tmp_path / "entry.json", {"what": "race"}
    payload = {"key": key, "templates": ["x" * 2000] * 200}
    write_json(path, payload)
    failures, stop = [], threading.Event()

    def writer():
        while not stop.is_set():
            write_json(path, payload)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(300):
            if read_json(path, key) is None:
                failures.append(1)
    finally:
        stop.set()
        thread.join()
    assert not failures
    assert [p.name for p in tmp_path.iterdir()] == ["entry.json"]


def test_an_empty_corpus_is_refused(tiny_hooked):
    with pytest.raises(ValueError, match="corpus has no text"):
        key_second_moment(tiny_hooked, 1, ["", "  "])
