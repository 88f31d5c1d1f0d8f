"""How far an edit's rank-one write reaches, read off the keys before any value is optimized.

The fold changes the MLP output of every position by (k · û)(v* − v), with û normalized so that
the edit's own key k* gives k* · û = 1. So k · û says how much of the write a position receives:
at a paraphrase's last subject token it is the edit's reach to that wording, at any position of a
neighbourhood prompt (another subject, same relation) it is the leak to that subject. This bench
reads both for several fold settings on the first N cases, with each paraphrase split by word order
(the subject first, or after relation words, as bench/paraphrase_order.py splits Generalization).

    python bench/fold_reach.py [--n 30] [--data builtin] [--json]

Only the fold's main term is read (the key averaged over the fast path's context templates,
``key="consistent"``); ``key="sink"`` adds a term for a one-token subject at the first position.
Each value is the median over prompts, with a 95% interval that resamples cases (2000 draws).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

import numpy as np
import torch

from toplens import load_model
from toplens.analyses.evaluation.datasets import load_dataset
from toplens.core.covariance import fold_covariance
from toplens.core.fold import fold_at
from toplens.core.keys import key_value_at
from toplens.core.nullspace import nullspace_for
from toplens.core.templates import context_templates
from toplens.editors.presets import fast_path
from toplens.editors.top import TopHparams
from toplens.model import ModelAdapter, hook_name

KINDS = ("subject first", "subject later", "neighbour (largest)")
DRAWS = 2000


@dataclass(frozen=True)
class FoldSetting:
    name: str
    layer: int
    mom2_adjustment: bool
    project: str = "none"


SETTINGS = (FoldSetting("ROME's preset: layer 5, no C", 5, False),
            FoldSetting("layer 8, no C", 8, False),
            FoldSetting("TOP's preset: layer 8, C⁻¹", 8, True),
            FoldSetting("layer 8, null space", 8, False, "nullspace"))


def all_keys(adapter: ModelAdapter, layer: int, prompts: list[str]) -> list[torch.Tensor]:
    """Every position's key at ``layer`` for each prompt."""
    ids = [adapter.tokenize(p) for p in prompts]
    (keys,) = adapter.capture(adapter.to_batch(ids), [hook_name("key", layer)], layer + 1)
    return [keys[i, : len(t)].float() for i, t in enumerate(ids)]


def reach(adapter: ModelAdapter, record, setting: FoldSetting, templates) -> dict[str, list[float]]:
    """k · û per paraphrase (at its last subject token, by word order) and the largest |k · û| per
    neighbourhood prompt, for ``record``'s fold under ``setting``."""
    request, layer = record.request, setting.layer
    space = nullspace_for(adapter, layer, TopHparams(layers=(layer,), project=setting.project))
    fold = fold_at(adapter, request, layer, templates, covariance=fold_covariance(adapter, layer, setting.mom2_adjustment),
                   space=space)
    u = fold.direction.float()
    out = {kind: [] for kind in KINDS}
    with torch.no_grad():
        for prompt in (p for p in record.paraphrase_prompts if request.subject in p):
            key, _ = key_value_at(adapter, layer, [(prompt.replace(request.subject, "{}", 1), request.subject)])
            out[KINDS[0] if prompt.startswith(request.subject) else KINDS[1]].append(float(key[0].float() @ u))
        if record.neighborhood_prompts:
            out[KINDS[2]] += [float((k @ u).abs().max()) for k in all_keys(adapter, layer, list(record.neighborhood_prompts))]
    return out


def median_interval(per_case: list[list[float]], seed: int = 0) -> dict:
    """The median over every prompt of the cases, and its 95% interval resampling cases."""
    cases = [np.array(v) for v in per_case if v]
    if not cases:
        return {"median": None, "low": None, "high": None, "prompts": 0}
    picks = np.random.default_rng(seed).integers(0, len(cases), size=(DRAWS, len(cases)))
    draws = [np.median(np.concatenate([cases[i] for i in pick])) for pick in picks]
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"median": float(np.median(np.concatenate(cases))), "low": float(low), "high": float(high),
            "prompts": int(sum(len(c) for c in cases))}


def markdown(rows: list[dict], n: int, data: str) -> str:
    head = ["fold", *(f"k·û, {kind}" for kind in KINDS)]
    lines = [f"Written by `python bench/fold_reach.py --n {n} --data {data}`: median k·û over prompts [95% case "
             "bootstrap] (prompts).", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [f"{c['median']:.2f} [{c['low']:.2f}, {c['high']:.2f}] ({c['prompts']})" if c["prompts"] else "–"
                 for c in (row[kind] for kind in KINDS)]
        lines.append(f"| {row['fold']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--data", default="builtin")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    adapter = ModelAdapter(load_model())
    records = load_dataset(args.data, limit=args.n)
    templates = context_templates(adapter, fast_path(TopHparams()).context_lengths)
    rows = []
    for setting in SETTINGS:
        per_case = [reach(adapter, r, setting, templates) for r in records]
        rows.append({"fold": setting.name, **{k: median_interval([c[k] for c in per_case]) for k in KINDS}})
    print(json.dumps(rows, indent=2) if args.json else markdown(rows, args.n, args.data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
