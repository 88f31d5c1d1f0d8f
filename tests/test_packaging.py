"""The built wheel: one import name, ``toplens``, and an edit that runs from outside the repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import hashlib, sys, torch
import toplens
from toplens import EditRequest, apply_edit, get_editor, load_model  # the README's import line
from toplens.editors.rome import RomeHparams
from transformers import AutoTokenizer
assert "site-packages" in toplens.__file__ or "wheel-site" in toplens.__file__, toplens.__file__
import toplens.analyses, toplens.analyses.cli  # noqa: F401
tok = AutoTokenizer.from_pretrained(sys.argv[1])
torch.manual_seed(0)
try:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    cfg = HookedTransformerConfig(n_layers=3, d_model=32, d_head=8, n_heads=4, d_mlp=64, n_ctx=64,
                                  d_vocab=len(tok), act_fn="gelu_new", default_prepend_bos=False)
    model = HookedTransformer(cfg, tokenizer=tok).eval()
except ImportError:
    from transformers import GPT2Config, GPT2LMHeadModel
    from toplens.model.loading import bridge_from_hf
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=3, n_head=4, n_positions=64))
    model = bridge_from_hf(hf.eval(), tok, "tiny")
request = EditRequest("{} plays the", "Miles Davis", " guitar", " trumpet")
edit = get_editor("rome").compute(model, request, RomeHparams(layer=1, v_num_grad_steps=3, mom2_adjustment=False),
                                  templates=("{}",))
def digest(module):  # every parameter and buffer, by name (as tests/conftest.py's param_hash)
    h = hashlib.sha256()
    named = [("p:" + n, t) for n, t in module.named_parameters()] + [("b:" + n, t) for n, t in module.named_buffers()]
    for name, t in sorted(named, key=lambda pair: pair[0]):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
before = digest(model)
with apply_edit(model, edit):
    assert digest(model) != before
assert digest(model) == before
print("edit ok", edit.deltas[0].rank)
'''


def test_the_package_list_covers_every_package_folder():
    """pyproject lists packages explicitly (two folders map to one name); none may be missing."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapping = {v: k for k, v in config["package-dir"].items()}
    found = set()
    for folder, name in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    assert found == listed


def test_wheel_installs_one_top_level_package_and_edits(tmp_path, bpe_tokenizer):
    # build from a copy of what the wheel is made of, so no build/ folder is left in the repository
    source = tmp_path / "source"
    for name in ("plugin", "analyses"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("toplens-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith((".dist-info", ".data"))} == {"toplens"}
    site = tmp_path / "wheel-site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    assert sorted(p.name for p in site.iterdir() if p.name not in ("bin",) and not p.name.endswith(".dist-info")) == ["toplens"]
    bpe_tokenizer.save_pretrained(tmp_path / "tok")
    # a fresh interpreter outside the repository: the wheel first on the path, then the
    # dependencies of this environment (without its editable install of the repository)
    deps = sysconfig.get_paths()["purelib"]
    env = {"PYTHONPATH": f"{site}", "PYTHONNOUSERSITE": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path.append({deps!r}); " + SCRIPT,
                          str(tmp_path / "tok")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "edit ok 1" in run.stdout
