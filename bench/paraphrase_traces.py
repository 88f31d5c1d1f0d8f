"""Causal traces of the paraphrases TOP's edit misses: where o* comes from on the rewrite prompt and
on a paraphrase that TOP fails and ROME passes, for both edits. Writes docs/paraphrase_traces.md and .json.

    python bench/paraphrase_traces.py --runs bench/out/dev200 [--top top-sink] [--rome rome] [--cases 6]

The cases come from two ``bench/top_variants.py`` folders (their ``cases.jsonl`` and settings): those whose
rewrite both edits take and of whose paraphrases TOP fails one that ROME passes. Each edit is recomputed
with its folder's settings and applied; on the edited model, with the subject's embeddings corrupted
(causal tracing's noise), the residual after each block is restored at the last subject token and at
the last token, one at a time. The table gives P(o*) on the clean edited run and, per position, the
largest share of P(o*) − P(o* | corrupted) that one restoration recovers, with its layer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from toplens import EditRequest, get_editor, load_model
from toplens.analyses.evaluation.builder import builtin_records
from toplens.analyses.tracing.causal_trace import indirect_effects
from toplens.core.auto_la import MIN_GAP
from toplens.core.corruption import clean_prob, corrupted_prob, make_corruption
from toplens.editors.presets import get_preset
from toplens.model import ModelAdapter

ROOT = Path(__file__).resolve().parents[1]


def outcomes(folder: Path) -> dict:
    """case_id -> (rewrite success, {paraphrase prompt: success})."""
    table = {}
    for line in (folder / "cases.jsonl").read_text().splitlines():
        post = json.loads(line)["post"]
        para = {o["prompt"]: o["success"] for o in post["generalization"]["outcomes"]}
        table[json.loads(line)["case_id"]] = (post["efficacy"]["outcomes"][0]["success"], para)
    return table


def pick(top: dict, rome: dict, n: int) -> list[tuple[int, str]]:
    """(case, paraphrase) pairs: both edits take the rewrite, TOP fails the paraphrase, ROME passes it."""
    chosen = []
    for case, (ok, para) in top.items():
        if case in rome and ok and rome[case][0]:
            missed = [p for p, s in para.items() if not s and rome[case][1].get(p)]
            chosen += [(case, missed[0])] if missed else []
    return chosen[:n]


def trace(adapter: ModelAdapter, prompt: str, subject: str, answer: str, min_gap: float = MIN_GAP) -> dict:
    """P(o*) and, at the last subject token and the last token, the best share of the corrupted
    gap that restoring one block's residual recovers."""
    c = make_corruption(adapter, prompt.replace(subject, "{}", 1), subject, answer)
    high, low = clean_prob(adapter, c), corrupted_prob(adapter, c)
    positions = [c.positions.last_subject, c.last]
    with torch.no_grad():
        ie = indirect_effects(adapter, c, "resid", positions=positions, base_prob=low)  # [layer, 2]
    gap = high - low  # too small a gap (the edit does not reach this prompt) has no shares to read
    share = (ie / gap if gap > min_gap * high and gap != 0 else ie * float("nan")).T  # [2, layer]
    half = [layer for layer, s in enumerate(share[1].tolist()) if s >= 0.5]
    measured = bool(torch.isfinite(share).all())
    return {"p_new": high, "p_new_corrupted": low, "subject_share": float(share[0].max()) if measured else None,
            "subject_layer": int(share[0].argmax()) if measured else None, "last_half_layer": half[0] if half else None,
            "last_share_by_layer": [round(s, 3) for s in share[1].tolist()]}


def edit_for(folder: Path, adapter: ModelAdapter):
    settings = json.loads(folder.with_name(f"{folder.name}.settings.json").read_text())
    editor = get_editor(settings["method"])
    # the variants are defined over the twelfth session's presets (bench/top_variants.py: TOP's layer-5 one)
    preset = get_preset(settings["method"], "smollm2-135m-l5" if settings["method"] == "top" else "smollm2-135m-fast")
    return editor, type(preset).from_dict({**preset.to_dict(), **settings["hparams"]})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "bench" / "out" / "dev200")
    parser.add_argument("--top", default="top-sink")
    parser.add_argument("--rome", default="rome")
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "paraphrase_traces.md")
    args = parser.parse_args(argv)
    top_dir, rome_dir = args.runs / args.top, args.runs / args.rome
    pairs = pick(outcomes(top_dir), outcomes(rome_dir), args.cases)
    records = {r.case_id: r for r in builtin_records()}  # case ids are the facts' ids, not list positions
    model = load_model()
    adapter = ModelAdapter(model)
    rows = []
    for case, paraphrase in pairs:
        request: EditRequest = records[case].request
        if request.subject not in paraphrase:  # the trace corrupts the subject where it stands
            print(f"case {case}: the paraphrase {paraphrase!r} does not contain the subject; skipped", file=sys.stderr)
            continue
        for name, folder in ((args.top, top_dir), (args.rome, rome_dir)):
            editor, hp = edit_for(folder, adapter)
            with editor.apply(adapter, request, hp):
                for kind, prompt in (("rewrite", request.text), ("paraphrase", paraphrase)):
                    rows.append({"case": case, "method": name, "prompt_kind": kind, "prompt": prompt,
                                 **trace(adapter, prompt, request.subject, request.target_new)})
            print(json.dumps(rows[-1]), file=sys.stderr)
    args.doc.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    args.doc.write_text(markdown(rows, args))
    print(args.doc.read_text())
    return 0


def markdown(rows: list[dict], args) -> str:
    lines = ["# Causal traces of the paraphrases TOP misses", "",
             f"Written by `python bench/paraphrase_traces.py --runs {args.runs.relative_to(ROOT)} --top {args.top} "
             f"--rome {args.rome} --cases {args.cases}` on the bundled model. Each row is one edited model "
             "and one prompt, traced for o*: P(o*) on the clean edited run, then, for the residual restored "
             "at the last subject token and at the last token, the largest share of P(o*) − P(o* | subject "
             "corrupted) that restoring the last subject token's residual after one block recovers (10 noise "
             "samples) and that block, and the first block after which the last token's residual recovers half "
             "(– where corrupting the subject moves P(o*) by less than 5% of its clean value: nothing to trace).", "",
             "| case | method | prompt | P(o*) | P(o*), subject corrupted | subject: best share (block) | "
             "last token: half by block |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        subject = "–" if r["subject_share"] is None else f"{r['subject_share']:.2f} ({r['subject_layer']})"
        half = "–" if r["last_half_layer"] is None else r["last_half_layer"]
        lines.append(f"| {r['case']} | {r['method']} | {r['prompt_kind']}: {r['prompt']} | {r['p_new']:.3f} | "
                     f"{r['p_new_corrupted']:.3f} | {subject} | {half} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
