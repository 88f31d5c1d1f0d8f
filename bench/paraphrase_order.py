"""Which prompts an edit takes, by word order: Generalization and R-Specificity split by whether the
prompt puts the subject first ("{} has its capital in") or after other words ("The capital of {} is"),
per variant folder that bench/top_variants.py wrote, on the cases every folder holds; and the same
for the cases whose rewriting prompt puts the subject first, and for those that do not.

    python bench/paraphrase_order.py --out-dir bench/out/top_variants --variants rome,top-auto [--data FILE] [--json]

Each rate pools the paraphrase outcomes of the cases; its 95% interval resamples cases (2000 draws),
so the paraphrases of one case move together.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from toplens.analyses.evaluation.datasets import load_dataset

ORDERS = ("subject first", "subject later")
METRICS = ("generalization", "r_specificity")
CASES = ("all cases", "rewrite: subject first", "rewrite: subject later")
DRAWS = 2000


def outcomes(folder: Path, subjects: dict, metric: str = "generalization") -> dict:
    """case_id -> per order, (successes, prompts) of the edit's outcomes on ``metric``'s prompts."""
    table = {}
    for text in (folder / "cases.jsonl").read_text().splitlines():
        line = json.loads(text)
        counts = {order: [0, 0] for order in ORDERS}
        for outcome in (line["post"].get(metric) or {}).get("outcomes", []):
            order = ORDERS[0] if outcome["prompt"].startswith(subjects[line["case_id"]]) else ORDERS[1]
            counts[order][0] += bool(outcome["success"])
            counts[order][1] += 1
        table[line["case_id"]] = counts
    return table


def pooled_rate(table: dict, ids: list, order: str, seed: int = 0) -> dict:
    """The pooled success rate of ``order``'s paraphrases over ``ids``, with a case bootstrap."""
    hits = np.array([table[i][order][0] for i in ids], dtype=float)
    total = np.array([table[i][order][1] for i in ids], dtype=float)
    picks = np.random.default_rng(seed).integers(0, len(ids), size=(DRAWS, len(ids)))
    draws = hits[picks].sum(1) / np.maximum(total[picks].sum(1), 1)
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"rate": 100 * hits.sum() / max(total.sum(), 1), "low": 100 * low, "high": 100 * high,
            "paraphrases": int(total.sum()), "cases": int((total > 0).sum())}


def rows_for(out_dir: Path, variants: list[str], records) -> list[dict]:
    """One row per (metric, set of cases, variant): the pooled rate of each order, on the cases every
    folder holds (all of them, then by the order of their rewriting prompt)."""
    subjects = {r.case_id: r.request.subject for r in records}
    first = {r.case_id for r in records if r.request.prompt.lstrip().startswith("{}")}
    rows = []
    for metric in METRICS:
        tables = {v: outcomes(out_dir / v, subjects, metric) for v in variants}
        ids = sorted(set.intersection(*(set(t) for t in tables.values())))
        for cases, chosen in zip(CASES, (ids, [i for i in ids if i in first], [i for i in ids if i not in first])):
            rows += [{"metric": metric, "cases": cases, "variant": v, "n": len(chosen),
                      **{o: pooled_rate(t, chosen, o) for o in ORDERS}} for v, t in tables.items() if chosen]
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--variants", required=True)
    parser.add_argument("--data", default="builtin", help="the dataset the folders were evaluated on "
                        "(builtin, builtin-questions or a file toplens eval reads)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = rows_for(args.out_dir, args.variants.split(","), load_dataset(args.data))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("| metric | cases | variant | n cases | " + " | ".join(f"{o} (prompts)" for o in ORDERS) + " |")
    print("|---|---|---|---|" + "---|" * len(ORDERS))
    for r in rows:
        cells = [f"{r[o]['rate']:.1f} [{r[o]['low']:.1f}, {r[o]['high']:.1f}] ({r[o]['paraphrases']})" for o in ORDERS]
        print(f"| {r['metric']} | {r['cases']} | {r['variant']} | {r['n']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
