import os

import torch

from toplens import ModelAdapter, hook_name
from toplens.core.cache import cache_dir
from toplens.core.covariance import SampledCorpus, key_second_moment, sample_corpus

TEXTS = ["Paris is the capital of France.", "Rome is in Italy", "The tower", "Miles Davis plays the trumpet"]


def test_matches_direct_computation(tiny_model):
    adapter = ModelAdapter(tiny_model)
    C = key_second_moment(tiny_model, 1, TEXTS, use_cache=False)
    keys = []
    for text in TEXTS:
        tokens = adapter.to_batch([adapter.tokenize(text)])
        keys.append(adapter.capture(tokens, [hook_name("key", 1)])[0][0].double())
    keys = torch.cat(keys)
    expected = keys.T @ keys / keys.shape[0]
    torch.testing.assert_close(C.double(), expected, atol=1e-5, rtol=1e-4)
    assert torch.allclose(C, C.T)


def test_cache_is_keyed_and_checked(tiny_hooked):
    first = key_second_moment(tiny_hooked, 2, TEXTS)
    files = sorted(cache_dir().glob("mom2-*.safetensors"))
    assert files
    again = key_second_moment(tiny_hooked, 2, TEXTS)
    assert torch.equal(first, again)
    other_layer = key_second_moment(tiny_hooked, 1, TEXTS)
    assert not torch.allclose(first, other_layer)
    other_corpus = key_second_moment(tiny_hooked, 2, TEXTS[:2])
    assert not torch.allclose(first, other_corpus)


def test_cache_with_wrong_key_is_ignored(tiny_hooked):
    from safetensors.torch import save_file

    first = key_second_moment(tiny_hooked, 3, TEXTS)
    newest = max(cache_dir().glob("mom2-*.safetensors"), key=os.path.getmtime)
    save_file({"moment": torch.zeros_like(first)}, str(newest), metadata={"key": "{}"})
    again = key_second_moment(tiny_hooked, 3, TEXTS)
    torch.testing.assert_close(again, first)


def test_default_corpus_is_seeded_model_text(tiny_hooked):
    spec = SampledCorpus(n_texts=3, n_tokens=6, seed=7)
    a, b = sample_corpus(tiny_hooked, spec), sample_corpus(tiny_hooked, spec)
    assert a == b and len(a) == 3 and all(isinstance(t, str) and t for t in a)
    C = key_second_moment(tiny_hooked, 0, sampled=spec)
    assert C.shape == (64, 64) and torch.isfinite(C).all()


def test_the_statistics_of_several_layers_share_one_sample_of_the_default_corpus(tiny_hooked, monkeypatch, tmp_path):
    from toplens.core import covariance
    monkeypatch.setenv("TOPLENS_CACHE_DIR", str(tmp_path))  # nothing on disk yet: every layer is computed
    monkeypatch.setattr(covariance, "_SAMPLES", {})
    calls = []
    real = covariance.sample_corpus
    monkeypatch.setattr(covariance, "sample_corpus", lambda *a, **k: calls.append(1) or real(*a, **k))
    spec = SampledCorpus(n_texts=3, n_tokens=8, seed=7)
    first = key_second_moment(tiny_hooked, 0, sampled=spec)
    key_second_moment(tiny_hooked, 1, sampled=spec)
    assert len(calls) == 1
    uncached = key_second_moment(tiny_hooked, 0, sampled=spec, use_cache=False)  # drawn again, same seed
    assert len(calls) == 2 and torch.equal(first, uncached)
