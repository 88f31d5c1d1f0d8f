"""The subject's other facts under ROME and TOP: for each edited fact, the prompts that pair the
same subject with another relation (COUNTERFACT_RS's relation-specific prompts), the token the
unedited model predicts there (stop words skipped) and its probability before and after the
edit, next to the probability of the new object o*. The paper's claim is that TOP disturbs these
facts less than ROME. Writes docs/other_facts.md and docs/other_facts.json.

    python bench/other_facts.py [--n 10] [--methods rome,top] [--out DIR] [--backend hooked]

The edits and measurements are ``toplens eval`` cases (no generations); ``--out`` keeps them, and
a rerun with the same folder reuses the cases already there.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

from toplens.analyses.evaluation.cases import read_cases
from toplens.analyses.evaluation.datasets import load_records
from toplens.analyses.evaluation.metrics import load_stop_words
from toplens.analyses.evaluation.runner import run_eval
from toplens import load_model

ROOT = Path(__file__).resolve().parents[1]
KNOWN = ROOT.parent / "shared" / "data" / "known_1000.json"
STOP_WORDS = ROOT.parent / "shared" / "data" / "stopwords.txt"


def other_fact_rows(case: dict) -> list[dict]:
    """One row per relation-specific prompt of a case: kept token, P before / after, P(o*) after."""
    pre = case["pre"]["r_specificity"]["outcomes"]
    post = case["post"]["r_specificity"]["outcomes"]
    rows = []
    for before, after in zip(pre, post):
        rows.append({"prompt": after["prompt"], "token": after["wanted"], "p_before": math.exp(-before["nll_wanted"]),
                     "p_after": math.exp(-after["nll_wanted"]), "p_new_after": math.exp(-after["nll_rival"]),
                     "kept": bool(after["success"])})
    return rows


def fact_summary(case: dict) -> dict:
    """Per edited fact: did the edit take, and the mean other-fact probabilities before / after."""
    rows = other_fact_rows(case)
    eff = case["post"]["efficacy"]["outcomes"][0]
    return {"case_id": case["case_id"], "method": case["method"], "prompt": eff["prompt"],
            "target_new": eff["wanted"], "target_true": eff["rival"],
            "p_new": math.exp(-eff["nll_wanted"]), "p_true": math.exp(-eff["nll_rival"]),
            "edit_took": bool(eff["success"]), "n_other": len(rows),
            "mean_p_before": statistics.fmean(r["p_before"] for r in rows) if rows else None,
            "mean_p_after": statistics.fmean(r["p_after"] for r in rows) if rows else None,
            "mean_p_new_after": statistics.fmean(r["p_new_after"] for r in rows) if rows else None,
            "kept": sum(r["kept"] for r in rows), "prompts": rows}


def method_totals(facts: list[dict]) -> dict:
    """Over all facts of a method: edits that took, other facts kept, mean P before / after."""
    rows = [r for f in facts for r in f["prompts"]]
    return {"n_facts": len(facts), "edits_took": sum(f["edit_took"] for f in facts), "n_other": len(rows),
            "kept": sum(r["kept"] for r in rows),
            "mean_p_before": statistics.fmean(r["p_before"] for r in rows),
            "mean_p_after": statistics.fmean(r["p_after"] for r in rows),
            "mean_abs_change": statistics.fmean(abs(r["p_after"] - r["p_before"]) for r in rows),
            "mean_p_new_after": statistics.fmean(r["p_new_after"] for r in rows)}


def markdown(by_method: dict[str, list[dict]], totals: dict[str, dict], meta: dict) -> str:
    methods = list(by_method)
    lines = ["# The subject's other facts under ROME and TOP", "",
             f"Measured by `python bench/other_facts.py --n {meta['n']}` on {meta['model']} ({meta['backend']}), "
             f"{meta['threads']} thread(s), {meta['seconds']:.0f} s (edits reused from an earlier run are not timed "
             "again). Records: the first known_1000 facts through the COUNTERFACT_RS builder (`toplens eval "
             "--data known_1000.json`). For each record, the *other facts* are its relation-specific prompts: "
             "the same subject with another relation. The kept token is the unedited model's top next token "
             "there, stop words skipped. A fact is kept when that token still beats o* after the edit.", "",
             "| method | edits that took | other facts kept | mean P(kept) before | after | mean abs. change "
             "| mean P(o*) on them after |", "|---|---|---|---|---|---|---|"]
    for m in methods:
        t = totals[m]
        lines.append(f"| {m} | {t['edits_took']}/{t['n_facts']} | {t['kept']}/{t['n_other']} | "
                     f"{t['mean_p_before']:.3f} | {t['mean_p_after']:.3f} | {t['mean_abs_change']:.3f} | "
                     f"{t['mean_p_new_after']:.3f} |")
    lines += ["", "Per fact: P(o*) / P(o) on the rewrite prompt after the edit, then the mean P(kept token) "
              "of its other facts before → after, and how many were kept.", "",
              "| fact | " + " | ".join(f"{m} P(o*)/P(o) | {m} other facts | {m} kept" for m in methods) + " |",
              "|---|" + "---|---|---|" * len(methods)]
    for i, first in enumerate(by_method[methods[0]]):
        cells = []
        for m in methods:
            f = by_method[m][i]
            cells.append(f"{f['p_new']:.3f} / {f['p_true']:.3f}{' ✓' if f['edit_took'] else ' ✗'} | "
                         f"{f['mean_p_before']:.3f} → {f['mean_p_after']:.3f} | {f['kept']}/{f['n_other']}")
        lines.append(f"| {first['prompt']}{first['target_true']} →{first['target_new']} | " + " | ".join(cells) + " |")
    lines += ["", "The same cases' COUNTERFACT_RS rates, and a reading of both tables, are in docs/results.md."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--methods", default="rome,top")
    p.add_argument("--data", default=str(KNOWN))
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "other_facts"))
    p.add_argument("--backend", default="hooked", choices=["hooked", "bridge"])
    p.add_argument("--docs", default=str(ROOT / "docs"))
    args = p.parse_args(argv)
    import torch
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    records = load_records(args.data)[: args.n]
    model = load_model(backend=args.backend)
    start = time.perf_counter()
    run_eval(model, records, methods, args.out,
             stop_words=load_stop_words(STOP_WORDS if STOP_WORDS.exists() else None), generation_tokens=0)
    cases = read_cases(Path(args.out) / "cases.jsonl")
    wanted = {str(r.case_id) for r in records}
    by_method = {m: [fact_summary(c) for c in cases if c["method"] == m and str(c["case_id"]) in wanted]
                 for m in methods}
    totals = {m: method_totals(facts) for m, facts in by_method.items()}
    meta = {"n": args.n, "model": "SmolLM2-135M-Instruct", "backend": args.backend,
            "threads": torch.get_num_threads(), "seconds": time.perf_counter() - start}
    docs = Path(args.docs)
    (docs / "other_facts.json").write_text(json.dumps({"meta": meta, "totals": totals, "facts": by_method},
                                                      indent=1) + "\n", encoding="utf-8")
    (docs / "other_facts.md").write_text(markdown(by_method, totals, meta), encoding="utf-8")
    print(markdown(by_method, totals, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
