"""Where each rule of ``rel_feat_layer="auto"`` puts la, per request, on the first N built-in cases.

For every case: the subject is corrupted, the last token's clean residual restored after each layer
above TOP's edit layer, and la read off the recovered shares by the rise rule and by the first
layer that reaches half of the gap (``toplens.core.auto_la``). Prints the count of cases per la for
each rule, and the model's la from the probe facts beside them; writes the per-case shares as JSON.

    python bench/auto_la_rules.py [--n 100] [--out bench/out/auto_la_rules.json]
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

from toplens import ModelAdapter, load_model
from toplens.analyses.evaluation.datasets import load_dataset
from toplens.core.auto_la import choose_la, model_la, read_la
from toplens.editors.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]


def case_rows(adapter: ModelAdapter, records, edit_layer: int) -> list[dict]:
    """Per record: the recovered shares, and la by the rise and half-gap rules (None without a signal)."""
    rows = []
    for record in records:
        c = choose_la(adapter, record.request, edit_layer, warn=False)
        known = math.isfinite(c.baseline)
        rows.append({"case_id": record.case_id, "layers": list(c.layers), "share": list(c.recovered),
                     "baseline": c.baseline, "rise": c.la if known else None,
                     "half": read_la(c.layers, c.recovered, "fraction", base=c.baseline) if known else None})
    return rows


def counts(rows: list[dict], rule: str) -> list[tuple[int | None, int]]:
    """(la, cases) for ``rule``, by la, the cases without a signal (None) last."""
    return sorted(Counter(r[rule] for r in rows).items(), key=lambda kv: (kv[0] is None, kv[0] or 0))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "auto_la_rules.json")
    args = parser.parse_args(argv)
    adapter = ModelAdapter(load_model())
    edit_layer = get_preset("top", "smollm2-135m-l5").layers[-1]  # the layer its recorded runs used (5)
    rows = case_rows(adapter, load_dataset("builtin", limit=args.n), edit_layer)
    model = model_la(adapter, edit_layer)
    for rule in ("rise", "half"):
        print(rule, ", ".join(f"la {la}: {n}" for la, n in counts(rows, rule)))
    print(f"model's la (probe facts): {model.la}; median share by layer: "
          + ", ".join(f"{layer}: {s:.2f}" for layer, s in zip(model.layers, model.recovered)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"edit_layer": edit_layer, "model_la": model.la, "cases": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
