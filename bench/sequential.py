"""Sequential editing on the bundled model: ROME, MEMIT (batches of 10) and TOP, each with and
without the null-space projection, every edit kept, the curve measured at checkpoints.

Each configuration is one :func:`run_sequential` on the first N built-in cases (the rest are the
held-out pool for retention and Fluency), with its SmolLM2 preset on the fast path. Before the runs
the preserved keys' statistic K₀K₀ᵀ is built once per edit layer from ``--corpus-tokens`` tokens of
model-sampled text (streamed in batches, cached on disk), and its time and the share of key
directions the threshold keeps are reported. Writes docs/sequential_curves.md and .json, and the
figure docs/figures/sequential.png.

    python bench/sequential.py [--n 200] [--checkpoints 1,10,50,100,200] [--configs rome,top-nullspace]
        [--corpus-tokens 100000] [--out-dir bench/out/sequential] [--figure-name sequential] [--skip-run]

Every run resumes from its folder under ``--out-dir``, so an interrupted bench continues; runs of
other configurations that an earlier invocation with the same ``--n`` and ``--corpus-tokens`` left
in the summary stay in it, so the configurations can run as separate jobs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from toplens import ModelAdapter, load_model
from toplens.analyses.evaluation.datasets import load_dataset
from toplens.analyses.evaluation.sequential import SequentialPoint, SequentialResult, run_sequential
from toplens.analyses.figures import save_figure, sequential_curves
from toplens.core.covariance import SampledCorpus, key_second_moment
from toplens.core.nullspace import null_space
from toplens.editors.presets import fast_path, get_preset

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = (("efficacy", "Eff"), ("generalization", "Gen"), ("s_specificity", "S-Spec"), ("r_specificity", "R-Spec"),
           ("efficacy_at_1", "Eff@1"), ("retention", "Retain"), ("fluency", "Flu"))


@dataclass(frozen=True)
class Config:
    """One sequential run: the editor, requests per edit, and whether the projection is on."""

    name: str
    method: str
    batch_size: int
    project: str


CONFIGS = {c.name: c for c in (
    Config("rome", "rome", 1, "none"), Config("memit", "memit", 10, "none"), Config("top", "top", 1, "none"),
    Config("rome-nullspace", "rome", 1, "nullspace"), Config("memit-nullspace", "memit", 10, "nullspace"),
    Config("top-nullspace", "top", 1, "nullspace"))}


#: the presets the runs use: TOP's layer-5 preset (the twelfth session's, which the recorded runs
#: used; the later preset's kept-text KL costs about four times the edit time)
PRESETS = {"top": "smollm2-135m-l5"}


def hparams_for(config: Config, n_layers: int):
    """The method's SmolLM2 preset (:data:`PRESETS`) on the fast path, with the config's projection."""
    preset = get_preset(config.method, PRESETS.get(config.method, "smollm2-135m-fast"), n_layers)
    return fast_path(preset).replace(project=config.project)


def statistic(adapter: ModelAdapter, layers, tokens: int, threshold: float) -> list[dict]:
    """Build (or read from the cache) K₀K₀ᵀ at each layer from ``tokens`` sampled tokens: seconds,
    and the share of key directions whose eigenvalue is at most ``threshold`` of the largest."""
    sampled = SampledCorpus(n_texts=-(-tokens // SampledCorpus.n_tokens))
    rows = []
    for layer in sorted(set(layers)):
        start = time.perf_counter()
        moment = key_second_moment(adapter, layer, sampled=sampled)
        seconds = time.perf_counter() - start
        space = null_space(moment.float(), layer, threshold)
        rows.append({"layer": layer, "tokens": sampled.n_texts * sampled.n_tokens, "seconds": seconds,
                     "kept_fraction": space.kept_fraction})
    return rows


def point_rows(name: str, points: list[dict], marks: list[int]) -> list[str]:
    """Markdown rows of one run at the checkpoints ``marks`` it measured."""
    def cell(value) -> str:
        return "–" if value is None else f"{value:.1f}"
    by_edits = {p["edits"]: p for p in points}
    return [f"| {name} | {e} | " + " | ".join(cell(by_edits[e][k]) for k, _ in COLUMNS)
            + f" | {by_edits[e].get('refused', 0)} | {by_edits[e]['seconds']:.0f} |" for e in marks if e in by_edits]


def markdown(runs: list[dict], stats: list[dict], marks: list[int], n: int) -> str:
    """The table at ``marks`` for every run, and the statistic's cost."""
    lines = ["# Sequential editing on the built-in benchmark", "",
             f"Written by `python bench/sequential.py`: every edit kept on one SmolLM2-135M, the first {n} built-in "
             "cases in order, each method's SmolLM2 preset on the fast path, nothing reverted until the run ends. "
             "Rates in % over every fact edited so far; Retain: % of the held-out facts the unedited model knew "
             "that it still knows; Flu: Fluency ×100 of generations from held-out prompts; refused: edits the editor "
             "refused so far (left unedited, still measured); s: the edits' compute seconds so far (measuring "
             "excluded).", ""]
    lines += [f"- {r['label']}: retention on {r['retention_facts']} held-out facts; the unedited model's Fluency "
              f"{'–' if r['fluency_before'] is None else format(r['fluency_before'], '.1f')}" for r in runs]
    lines += ["", "| run | edits | " + " | ".join(label for _, label in COLUMNS) + " | refused | s |",
              "|---|---|" + "---|" * (len(COLUMNS) + 2)]
    for run in runs:
        lines += point_rows(run["label"], run["points"], marks)
    if stats:
        lines += ["", "The preserved keys' statistic K₀K₀ᵀ (model-sampled text, streamed in batches of 16 texts):", "",
                  "| layer | tokens sampled (texts × 64, nominal) | seconds | key directions kept |", "|---|---|---|---|"]
        lines += [f"| {s['layer']} | {s['tokens']} | {s['seconds']:.0f} | {100 * s['kept_fraction']:.1f}% |"
                  for s in stats]
        lines += ["", "Seconds near 0 mean the statistic was read from the disk cache of an earlier run."]
    return "\n".join(lines) + "\n"


def result_of(run: dict) -> SequentialResult:
    """A run of summary.json as the SequentialResult it was written from."""
    hp = type(get_preset(run["method"], "smollm2-135m")).from_dict(run["hparams"])
    return SequentialResult(run["method"], run["label"], hp, tuple(SequentialPoint.from_json(p) for p in run["points"]),
                            run["retention_facts"], run["fluency_before"], Path("."))


def earlier_runs(summary: Path, n: int, tokens: int) -> dict[str, dict]:
    """The runs an earlier invocation left in ``summary`` with the same ``n`` and ``tokens`` of
    corpus, by label (a config run again replaces its own), so that configurations can run as
    separate jobs into one table."""
    if not summary.exists():
        return {}
    report = json.loads(summary.read_text())
    same = report["n"] == n and report.get("corpus_tokens") == tokens  # an older summary has no size: not kept
    return {run["label"]: run for run in report["runs"]} if same else {}


def run_config(model, config: Config, records, held, out: Path, marks: list[int], tokens: int | None) -> SequentialResult:
    hp = hparams_for(config, ModelAdapter(model).n_layers)
    return run_sequential(model, records, config.method, out / config.name, hparams=hp, held_out=held,
                          batch_size=config.batch_size, checkpoints=marks,
                          corpus_tokens=tokens if config.project == "nullspace" else None)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    unknown = [c for c in args.configs.split(",") if c not in CONFIGS]
    if unknown or args.n < 1 or args.corpus_tokens < 1:
        raise SystemExit(f"--configs: unknown {unknown} (known: {sorted(CONFIGS)}); --n and --corpus-tokens must be positive")
    marks = sorted({int(x) for x in args.checkpoints.split(",") if int(x) <= args.n} | {args.n})
    summary = args.out_dir / "summary.json"
    if not args.skip_run:
        run_all([CONFIGS[c] for c in args.configs.split(",")], args.n, marks, args.corpus_tokens, args.out_dir)
    report = json.loads(summary.read_text())
    save_figure(sequential_curves([result_of(run) for run in report["runs"]]), args.figure_dir, args.figure_name)
    text = markdown(report["runs"], report["statistic"], marks, report["n"])
    args.doc.write_text(text)
    args.doc.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(text)
    return 0


def run_all(configs: list, n: int, marks: list[int], corpus_tokens: int, out_dir: Path) -> None:
    """Run each config on the first ``n`` built-in cases; summary.json in ``out_dir`` grows with each
    finished run (kept with the earlier runs of the same size), so a stopped bench still tabulates."""
    model = load_model()
    adapter = ModelAdapter(model)
    records = load_dataset("builtin")
    projected = [hparams_for(c, adapter.n_layers) for c in configs if c.project == "nullspace"]
    layers = [layer for hp in projected for layer in hp.edit_layers]
    stats = statistic(adapter, layers, corpus_tokens, projected[0].nullspace_threshold) if projected else []
    summary = out_dir / "summary.json"
    earlier = earlier_runs(summary, n, corpus_tokens)
    stats = stats or (json.loads(summary.read_text())["statistic"] if earlier else [])
    for c in configs:
        run = run_config(model, c, records[:n], records[n:], out_dir, marks, corpus_tokens)
        earlier[run.label] = run.to_json()
        summary.write_text(json.dumps({"runs": list(earlier.values()), "statistic": stats, "n": n,
                                       "corpus_tokens": corpus_tokens}, indent=2))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--checkpoints", default="1,10,50,100,200")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--corpus-tokens", type=int, default=100_000)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out" / "sequential")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "sequential_curves.md")
    parser.add_argument("--figure-dir", type=Path, default=ROOT / "docs" / "figures")
    parser.add_argument("--figure-name", default="sequential", help="the figure's file name, without suffix")
    parser.add_argument("--skip-run", action="store_true", help="only tabulate the runs the folders hold")
    return parser


if __name__ == "__main__":
    sys.exit(main())
