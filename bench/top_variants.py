"""TOP variants against ROME on the built-in COUNTERFACT_RS cases: one ``toplens eval`` per variant
on the same first N cases (no generations, the fast path's levers), every rate and Efficacy@1 with
a bootstrap 95% interval over cases, the difference to a baseline variant with a paired interval,
and the median NLL of o* on the rewrite prompt and on the paraphrases. Writes docs/top_variants.md
and .json (the record docs/top_stage2.md reads).

    python bench/top_variants.py [--variants rome,top,top-reset-both] [--n 100] [--baseline rome]
        [--define 'name=top:{"stage2_reset": "none"}'] [--out-dir bench/out/top_variants] [--skip-eval]

Each eval resumes from its folder under ``--out-dir``, so an interrupted run continues; a variant's
settings are stored beside its folder and a rerun with other settings is refused.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from toplens.analyses.evaluation.intervals import bootstrap, paired_bootstrap
from toplens.analyses.evaluation.results import EFFICACY_AT_1, METRIC_ABBREVIATIONS, METRICS
from toplens.editors.presets import changed_fields, fast_path
from toplens.editors.rome import RomeHparams

ROOT = Path(__file__).resolve().parents[1]
_LEVERS = fast_path(RomeHparams())
FAST = {"precision": _LEVERS.precision, "stop_rule": _LEVERS.stop_rule,
        "context_lengths": [list(x) for x in _LEVERS.context_lengths]}
#: name -> (method, settings over the method's SmolLM2 preset and the fast path's levers)
VARIANTS: dict[str, tuple[str, dict]] = {
    "rome": ("rome", {}),
    "top": ("top", {}),
    "rome-short": ("rome", {"v_lr": 1.0, "early_stop_loss": 0.2, "precision": "float32"}),  # ROME's shipped preset since the sixteenth session
    "top-reset-none": ("top", {"stage2_reset": "none"}),
    "top-reset-subject": ("top", {"stage2_reset": "others_but_subject"}),
    "top-reset-both": ("top", {"stage2_reset": "both"}),
    "top-rewrite-0.3": ("top", {"stage2_rewrite_weight": 0.3}),
    "top-keep-1": ("top", {"stage2_reset": "none", "stage2_keep_weight": 1.0}),
    "top-keep-5": ("top", {"stage2_reset": "none", "stage2_keep_weight": 5.0}),
    "top-keep-5-rewrite-1": ("top", {"stage2_reset": "none", "stage2_keep_weight": 5.0, "stage2_rewrite_weight": 1.0}),
    "top-auto": ("top", {"rel_feat_layer": "auto"}),
    "top-auto-none": ("top", {"rel_feat_layer": "auto", "stage2_reset": "none"}),
    "top-auto-keep-5": ("top", {"rel_feat_layer": "auto", "stage2_keep_weight": 5.0}),
    "top-keep-5-spare": ("top", {"stage2_reset": "none", "stage2_keep_weight": 5.0, "stage2_keep_spare": True}),
    "top-content": ("top", {"relation_position": "last_content"}),
    "top-auto-content": ("top", {"rel_feat_layer": "auto", "relation_position": "last_content"}),
    "top-auto-after": ("top", {"rel_feat_layer": "auto", "relation_position": "after_subject"}),
    "top-la23": ("top", {"rel_feat_layer": 18}),  # la = 23, the preset since the eighth session
    "top-la15": ("top", {"rel_feat_layer": 10}),  # la = 15, the preset before it
    "top-after": ("top", {"relation_position": "after_subject"}),
    "top-keep-5-la23": ("top", {"stage2_keep_weight": 5.0}),
    "top-auto-request": ("top", {"rel_feat_layer": "auto", "auto_la": "request"}),  # the rise rule per request
    "top-all-prompts": ("top", {"stage2": "all_prompts"}),  # stage 2 over every rewriting prompt, la = 23
    "top-prefix": ("top", {"relation_prefix": True}),  # a rewriting row led by the prompt's relation words
    "top-prefix-all": ("top", {"relation_prefix": True, "stage2": "all_prompts"}),
    "top-sink": ("top", {"key": "sink"}),  # a one-token subject at the first position keyed there too
    "rome-sink": ("rome", {"key": "sink"}),
    "top-auto-rewrite-0.3": ("top", {"rel_feat_layer": "auto", "stage2_rewrite_weight": 0.3}),
    "top-auto-rewrite-1": ("top", {"rel_feat_layer": "auto", "stage2_rewrite_weight": 1.0}),
    # the development benchmark's baselines (docs/results.md): MEMIT, RETS and the published TOP stage 2
    "memit": ("memit", {}),
    "rets": ("rets", {}),
    # the published stage 2 over the SmolLM2 preset of the eleventh session, which had key="sink" (its
    # 32-case row ran so); get_preset("top", "smollm2-135m-faithful") keeps the consistent key
    "top-faithful": ("top", {"rel_feat_layer": 5, "v_num_grad_steps1": 20, "v_num_grad_steps2": 100,
                             "stage2_loss": "l2", "stage2_site": "subject"}),
    # eleventh session (docs/top_stage2.md): over key="sink", the preset since then
    "top-sink-none-keep5-spare": ("top", {"key": "sink", "stage2_reset": "none", "stage2_keep_weight": 5.0,
                                          "stage2_keep_spare": True}),
    "top-sink-none-leak5": ("top", {"key": "sink", "stage2_reset": "none", "stage2_leak_weight": 5.0}),
    "top-sink-clamp2": ("top", {"key": "sink", "clamp_norm_factor": 2.0}),
    "top-sink-ie": ("top", {"key": "sink", "relation_position": "max_ie"}),
    "top-sink-all": ("top", {"key": "sink", "relation_position": "all"}),
    # twelfth session: the edit layer moved up, la kept at 23
    "top-sink-l8": ("top", {"key": "sink", "layers": [8], "rel_feat_layer": 15}),
    "top-sink-l12": ("top", {"key": "sink", "layers": [12], "rel_feat_layer": 11}),
    "top-sink-mom2": ("top", {"key": "sink", "mom2_adjustment": True}),  # C⁻¹ in the fold (sampled-text C)
    "top-sink-l8-mom2": ("top", {"key": "sink", "layers": [8], "rel_feat_layer": 15, "mom2_adjustment": True}),
    "top-sink-l8-mom2-keep5-spare": ("top", {"key": "sink", "layers": [8], "rel_feat_layer": 15, "mom2_adjustment": True,
                                             "stage2_reset": "none", "stage2_keep_weight": 5.0, "stage2_keep_spare": True}),
    "top-sink-l8-keep5-spare": ("top", {"key": "sink", "layers": [8], "rel_feat_layer": 15, "stage2_reset": "none",
                                        "stage2_keep_weight": 5.0, "stage2_keep_spare": True}),
    "top-sink-l8-mom2-keep2-spare": ("top", {"key": "sink", "layers": [8], "rel_feat_layer": 15, "mom2_adjustment": True,
                                             "stage2_reset": "none", "stage2_keep_weight": 2.0, "stage2_keep_spare": True}),
    # thirteenth session: the kept text's weight between the two screened, and the null-space
    # projection of the fold (S-Specificity at layer 8)
    "top-sink-l8-mom2-ns": ("top", {"key": "sink", "layers": [8], "rel_feat_layer": 15, "mom2_adjustment": True,
                                    "project": "nullspace"}),
    "top-sink-l8-ns": ("top", {"key": "sink", "layers": [8], "rel_feat_layer": 15, "project": "nullspace"}),
    # the thirteenth session's preset over the layer-5 base, and with the relation taken after the subject
    "top-l8-keep3": ("top", {"key": "sink", "layers": [8], "rel_feat_layer": 15, "mom2_adjustment": True,
                             "stage2_reset": "none", "stage2_keep_weight": 3.0, "stage2_keep_spare": True}),
    "top-l8-keep3-after": ("top", {"key": "sink", "layers": [8], "rel_feat_layer": 15, "mom2_adjustment": True,
                                   "stage2_reset": "none", "stage2_keep_weight": 3.0, "stage2_keep_spare": True,
                                   "relation_position": "after_subject"}),
    # fifteenth session: the preset with a rewriting row led by the relation words (TOP's lost
    # paraphrases name the relation before the subject; the row moves the fold's mean key there)
    "top-l8-keep3-prefix": ("top", {"key": "sink", "layers": [8], "rel_feat_layer": 15, "mom2_adjustment": True,
                                    "stage2_reset": "none", "stage2_keep_weight": 3.0, "stage2_keep_spare": True,
                                    "relation_prefix": True}),
    # and with a row in the other word order ("is located in the continent of: {subject} is"), fitted by stage 2
    "top-l8-keep3-reorder": ("top", {"key": "sink", "layers": [8], "rel_feat_layer": 15, "mom2_adjustment": True,
                                     "stage2_reset": "none", "stage2_keep_weight": 3.0, "stage2_keep_spare": True,
                                     "relation_reorder": True}),
    # and with the kept text turned round as well, to hold the subject's other facts in that order
    "top-l8-keep3-reorder-kept": ("top", {"key": "sink", "layers": [8], "rel_feat_layer": 15, "mom2_adjustment": True,
                                          "stage2_reset": "none", "stage2_keep_weight": 3.0, "stage2_keep_spare": True,
                                          "relation_reorder": True, "stage2_keep_reordered": True}),
    # sixteenth session: the turned-round text at a third of the kept text's weight (1 against 3)
    "top-l8-keep3-reorder-kept1": ("top", {"key": "sink", "layers": [8], "rel_feat_layer": 15, "mom2_adjustment": True,
                                           "stage2_reset": "none", "stage2_keep_weight": 3.0, "stage2_keep_spare": True,
                                           "relation_reorder": True, "stage2_keep_reordered": True,
                                           "stage2_keep_reordered_scale": 1 / 3}),
    # seventeenth session: the preset (top-l8-keep3) on the short path (presets.SHORT_LEVERS: Adam's step
    # 1.0, stage 1's stop 0.1, stage 2's KL stop 0.2), and with the kept text at 4
    "top-l8-short": ("top", {"key": "sink", "layers": [8], "rel_feat_layer": 15, "mom2_adjustment": True,
                             "stage2_reset": "none", "stage2_keep_weight": 3.0, "stage2_keep_spare": True,
                             "v_lr": 1.0, "v_lr2": 1.0, "early_stop1": 0.1, "early_stop2": 0.2}),
    "top-l8-short-keep4": ("top", {"key": "sink", "layers": [8], "rel_feat_layer": 15, "mom2_adjustment": True,
                                   "stage2_reset": "none", "stage2_keep_weight": 4.0, "stage2_keep_spare": True,
                                   "v_lr": 1.0, "v_lr2": 1.0, "early_stop1": 0.1, "early_stop2": 0.2}),
    "top-sink-l8-mom2-keep3-spare": ("top", {"key": "sink", "layers": [8], "rel_feat_layer": 15, "mom2_adjustment": True,
                                             "stage2_reset": "none", "stage2_keep_weight": 3.0, "stage2_keep_spare": True}),
}
COLUMNS = (*METRICS, EFFICACY_AT_1)
HEAD = [*(METRIC_ABBREVIATIONS[c] for c in COLUMNS), "Score"]


def base_settings(method: str) -> dict:
    """The values by which the preset the variants were defined over (TOP: "smollm2-135m-l5", the
    twelfth session's preset; ROME: its fast path, before the short one became its default in the
    sixteenth session) differs from today's preset, so that a variant keeps its meaning."""
    return changed_fields(method, {"top": "smollm2-135m-l5", "rome": "smollm2-135m-fast"}.get(method, "smollm2-135m"))


def run_variant(name: str, method: str, settings: dict, n: int, out: Path, data: str = "builtin") -> None:
    """``toplens eval`` of one variant on the first ``n`` built-in cases, resuming from ``out``
    (its settings are stored over the base preset, which the command line adds)."""
    hparams = {**FAST, **settings}
    stored = out.parent / f"{out.name}.settings.json"
    wanted = {"method": method, "hparams": hparams, "data": data}
    if stored.exists() and {"data": data, **json.loads(stored.read_text())} != wanted:  # older files: no data
        raise SystemExit(f"{out} holds variant {name!r} with other settings or data ({stored}); use another --out-dir")
    out.parent.mkdir(parents=True, exist_ok=True)
    stored.write_text(json.dumps(wanted, indent=2))
    cmd = [sys.executable, "-c", "import sys; from toplens.analyses.cli import main; sys.exit(main(sys.argv[1:]))",
           "eval", "--methods", method, "--data", data, "--limit", str(n), "--no-generation",
           "--out", str(out), "--json", "--hparams", json.dumps({**base_settings(method), **hparams})]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def case_table(out: Path) -> dict:
    """case_id -> (per-case rates of COLUMNS with NaN where undefined, rewrite NLLs, paraphrase NLLs)."""
    rows = {}
    for line in (out / "cases.jsonl").read_text().splitlines():
        post = json.loads(line)["post"]
        rates = [np.nan if post.get(c) is None or post[c]["rate"] is None else post[c]["rate"] for c in COLUMNS]
        nll = {m: [o["nll_wanted"] for o in post[m]["outcomes"]] for m in ("efficacy", "generalization")}
        rows[json.loads(line)["case_id"]] = (rates, nll["efficacy"], nll["generalization"])
    return rows


def summarize(name: str, table: dict, ids: list, base: dict | None) -> dict:
    rates = np.array([table[i][0] for i in ids], dtype=float)
    whole = bootstrap(rates, score_columns=4)  # the Score from the four rates; Efficacy@1 beside them
    row = {"variant": name, "n": len(ids), "value": whole.value.tolist(), "low": whole.low.tolist(),
           "high": whole.high.tolist(),
           "median_rewrite_nll": float(np.median([x for i in ids for x in table[i][1]])),
           "median_paraphrase_nll": float(np.median([x for i in ids for x in table[i][2]]))}
    if base is not None:
        diff = paired_bootstrap(np.array([base[i][0] for i in ids], dtype=float), rates)
        row["diff"] = {"value": diff.value.tolist(), "low": diff.low.tolist(), "high": diff.high.tolist()}
    return row


def markdown(rows: list[dict], variants: dict, baseline: str, data: str = "builtin") -> str:
    head = ["variant", "n", *HEAD, "NLL rewrite", "NLL para."]
    lines = [f"# TOP variants {_data_title(data)}", "",
             f"Written by `python bench/top_variants.py`: `toplens eval --data {data} --no-generation` per "
             f"variant on the same first cases, each over its method's SmolLM2 preset (TOP: the layer-5 one, `smollm2-135m-l5`; `top-sink` is that preset) with the fast path's levers "
             f"{json.dumps(FAST)}. Rates in %, with a bootstrap 95% interval over cases (2000 draws); the Score is "
             "the harmonic mean of Eff, Gen, S-Spec and R-Spec (Eff@1 is beside it). NLL columns: the median NLL of "
             f"o* after the edit on the rewrite prompt and on the paraphrases. The rows below the first table are "
             f"each variant minus {baseline!r} on the same cases, with a paired interval.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{v:.1f} [{lo:.1f}, {hi:.1f}]" for v, lo, hi in zip(r["value"], r["low"], r["high"])]
        lines.append(f"| {r['variant']} | {r['n']} | " + " | ".join(cells)
                     + f" | {r['median_rewrite_nll']:.2f} | {r['median_paraphrase_nll']:.2f} |")
    lines += ["", f"| variant − {baseline} | n | " + " | ".join(HEAD) + " |", "|" + "---|" * (len(HEAD) + 2)]
    for r in rows:
        if "diff" in r and r["variant"] != baseline:
            d = r["diff"]
            cells = [f"{v:+.1f} [{lo:+.1f}, {hi:+.1f}]" for v, lo, hi in zip(d["value"], d["low"], d["high"])]
            lines.append(f"| {r['variant']} | {r['n']} | " + " | ".join(cells) + " |")
    lines += ["", "Settings of each variant (over the preset and the fast path):", ""]
    lines += [f"- `{name}`: {method} {json.dumps(settings)}" for name, (method, settings) in variants.items()]
    return "\n".join(lines) + "\n"


def _data_title(data: str) -> str:
    if data in ("builtin", "builtin-questions"):
        return "on the built-in benchmark" + ("" if data == "builtin" else " in question form")
    return f"on {Path(data).name}"


def parse_define(text: str) -> tuple[str, tuple[str, dict]]:
    name, _, rest = text.partition("=")
    method, _, settings = rest.partition(":")
    if not name or method not in ("rome", "top", "rets", "memit"):
        raise SystemExit(f"--define must be NAME=METHOD:JSON with METHOD one of rome, top, rets, memit; got {text!r}")
    return name, (method, json.loads(settings or "{}"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--define", action="append", default=[], help="NAME=METHOD:JSON, a variant of your own")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--baseline", default="rome")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out" / "top_variants")
    parser.add_argument("--skip-eval", action="store_true", help="only tabulate what the folders hold")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "top_variants.md")
    parser.add_argument("--data", default="builtin",
                        help="builtin (statements), builtin-questions (the same facts asked as questions), or a "
                             "dataset file toplens eval reads (CounterFact records or known facts)")
    args = parser.parse_args(argv)
    known = {**VARIANTS, **dict(parse_define(d) for d in args.define)}
    names = args.variants.split(",")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; known: {sorted(known)}")
    chosen = {n: known[n] for n in names}
    if not args.skip_eval:
        for name, (method, settings) in chosen.items():
            run_variant(name, method, settings, args.n, args.out_dir / name, args.data)
    tables = {n: case_table(args.out_dir / n) for n in names if (args.out_dir / n / "cases.jsonl").exists()}
    common = set.intersection(*(set(t) for t in tables.values()))
    ids = [i for i in next(iter(tables.values())) if i in common][: args.n]  # in the benchmark's order
    base = tables.get(args.baseline)
    rows = [summarize(n, t, ids, base) for n, t in tables.items()]
    text = markdown(rows, {n: chosen[n] for n in tables}, args.baseline, args.data)
    args.doc.write_text(text)
    args.doc.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
