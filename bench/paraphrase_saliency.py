"""Gradient saliency of the paraphrases TOP's edit misses: where, on the edited model, the NLL of o*
on a missed paraphrase would still respond to a change of the residual stream, against the rewrite
prompt that the edit was fitted to, for TOP's edit and ROME's. Writes docs/paraphrase_saliency.md and .json.

    python bench/paraphrase_saliency.py --runs bench/out/dev200 [--top NAME] [--rome NAME] [--cases 6]

The (case, paraphrase) pairs are chosen as in ``bench/paraphrase_traces.py`` (both edits take the
rewrite, TOP misses the paraphrase and ROME takes it), keeping only strong TOP edits, P(o*) > 1/2 on
the rewrite prompt in the evaluation run (NLL below ln 2), so that a miss is not a weak edit's.
Each edit is recomputed with its folder's settings and
applied; one forward and backward pass of the prompt followed by o* (teacher forced) gives
‖∂NLL(o*)/∂h‖ at ``blocks.{l}.hook_resid_post`` for every block l and prompt position, through backward
hooks. The table reads that map at the token roles an edit acts on: the last subject token at the edit
layer (where ROME and TOP write their value) and the last prompt token at TOP's relation layer la
(where stage 1 fitted h_r), each as a share of the whole map's sum, and where each layer band peaks.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from toplens.analyses.evaluation.builder import builtin_records
from toplens.core.interventions import capture_grad
from toplens.core.positions import locate, target_ids
from toplens import load_model
from toplens.model import ModelAdapter, hook_name

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paraphrase_traces import edit_for, outcomes, pick  # noqa: E402  (the same pairs and edits as the traces)

ROOT = Path(__file__).resolve().parents[1]


def strong(folder: Path) -> set:
    """The case ids whose rewrite prompt's NLL of o* in ``folder``'s evaluation run is below ln 2."""
    lines = [json.loads(line) for line in (folder / "cases.jsonl").read_text().splitlines()]
    return {d["case_id"] for d in lines if d["post"]["efficacy"]["outcomes"][0]["nll_wanted"] < math.log(2)}


def grad_map(adapter: ModelAdapter, prompt: str, answer: str) -> tuple[torch.Tensor, float]:
    """[layer, prompt position] ‖∂NLL/∂h‖ of ``answer`` after ``prompt`` (the mean NLL over its
    tokens), and that NLL."""
    ids, target = adapter.tokenize(prompt), target_ids(adapter, prompt, answer)
    tokens = adapter.to_batch([ids + target[:-1]])
    names = [hook_name("resid_post", layer) for layer in range(adapter.n_layers)]
    store: dict[str, list[torch.Tensor]] = {}
    leaf = (hook_name("resid_pre", 0), lambda act, hook: act.detach().requires_grad_(True))  # the graph's only leaf
    with adapter.frozen(), adapter.hooks([leaf], [capture_grad(n, store) for n in names]):
        logits = adapter.logits(tokens)[0, len(ids) - 1:].float()
        nll = torch.nn.functional.cross_entropy(logits, torch.tensor(target, device=logits.device))
        nll.backward()
    assert all(len(store[n]) == 1 for n in names), "one backward pass gives one gradient per hook"
    grads = torch.stack([store[n][0][0, : len(ids)].float().norm(dim=-1) for n in names])
    return grads.cpu(), float(nll.detach())


def read(grads: torch.Tensor, subject_last: int, last: int, edit_layer: int, la: int) -> dict:
    """The map's shares at the edit site and at TOP's relation site, and each band's peak role."""
    total = float(grads.sum())
    role = lambda pos: "last subject" if pos == subject_last else "last token" if pos == last else "other"  # noqa: E731
    bands = {"0..l": grads[: edit_layer + 1], "l+1..la": grads[edit_layer + 1: la + 1], "la+1..": grads[la + 1:]}
    return {"site_share": float(grads[edit_layer, subject_last]) / total,
            "relation_share": float(grads[la, last]) / total,
            "subject_share_to_l": float(grads[: edit_layer + 1, subject_last].sum()) / total,
            "peaks": {band: role(int(g.sum(0).argmax())) for band, g in bands.items() if g.numel()}}


def rows_for(adapter, records, pairs, folders: dict[str, Path], top: Path) -> list[dict]:
    """One row per (case, method, prompt); ROME's maps are read at TOP's la as well."""
    hp_top = edit_for(top, adapter)[1]
    la = hp_top.layers[-1] + hp_top.rel_feat_layer
    rows = []
    for case, paraphrase in pairs:
        request = records[case].request
        for name, folder in folders.items():
            editor, hp = edit_for(folder, adapter)
            layer = hp.layers[-1] if hasattr(hp, "layers") else hp.layer
            with editor.apply(adapter, request, hp):
                for kind, prompt in (("rewrite", request.text), ("paraphrase", paraphrase)):
                    rows.append({"case": case, "method": name} | row(adapter, request, kind, prompt, layer, la))
                    print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def row(adapter, request, kind: str, prompt: str, layer: int, la: int) -> dict:
    """The saliency map of o* after ``prompt`` on the model as it is, read at the roles above."""
    grads, nll = grad_map(adapter, prompt, request.target_new)
    pos = locate(adapter, prompt.replace(request.subject, "{}", 1), request.subject)
    return {"prompt_kind": kind, "prompt": prompt, "nll": nll, "edit_layer": layer, "la": la,
            "grad_norm": float(grads.sum()), **read(grads, pos.last_subject, pos.last_relation, layer, la)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "bench" / "out" / "dev200")
    parser.add_argument("--top", default="top-sink-l8-mom2-keep3-spare")
    parser.add_argument("--rome", default="rome")
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "paraphrase_saliency.md")
    args = parser.parse_args(argv)
    if args.top == args.rome:
        raise SystemExit(f"--top and --rome must name two runs; both are {args.top!r}")
    folders = {args.top: args.runs / args.top, args.rome: args.runs / args.rome}
    pairs = pick(outcomes(folders[args.top]), outcomes(folders[args.rome]), 10_000)
    records = {r.case_id: r for r in builtin_records()}
    keep = strong(folders[args.top])
    pairs = [(c, p) for c, p in pairs if c in keep and records[c].request.subject in p][: args.cases]
    adapter = ModelAdapter(load_model())
    rows = rows_for(adapter, records, pairs, folders, folders[args.top])
    args.doc.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    args.doc.write_text(markdown(rows, args))
    print(args.doc.read_text())
    return 0


def markdown(rows: list[dict], args) -> str:
    lines = ["# Gradient saliency of the paraphrases TOP misses", "",
             f"Written by `python bench/paraphrase_saliency.py --runs {args.runs.relative_to(ROOT)} --top {args.top} "
             f"--rome {args.rome} --cases {args.cases}` on the bundled model. Each row is one edited model and one "
             "prompt: the NLL of o* (mean over its tokens), then shares of the summed ‖∂NLL/∂h‖ over every "
             "block's residual and prompt position: at the last subject token after the edit layer l (the site "
             "the edit writes), over the last subject token in blocks 0..l, and at the last token after TOP's "
             "relation layer la; then the token role where each band of blocks peaks.", "",
             "| case | method | prompt | NLL(o*) | Σ‖∇‖ | site (l) | subject 0..l | last token (la) | "
             "peak 0..l | peak l+1..la | peak la+1.. |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peaks = [r["peaks"].get(b, "–") for b in ("0..l", "l+1..la", "la+1..")]
        lines.append(f"| {r['case']} | {r['method']} (l={r['edit_layer']}) | {r['prompt_kind']}: {r['prompt']} | "
                     f"{r['nll']:.2f} | {r['grad_norm']:.1f} | {r['site_share']:.3f} | {r['subject_share_to_l']:.3f} | "
                     f"{r['relation_share']:.3f} | " + " | ".join(peaks) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
