"""TOP's la sweep from its preset's edit layer, on the first records of the development benchmark:
`toplens sweep` folders (one la per job) joined with one more la read from a `toplens eval` run of
the preset on the same records. Writes the joined sweep.json and figure, and docs/la_sweep.md.

    python bench/la_sweep.py --sweeps bench/out/sweep100/la13 ... --eval bench/out/dev200/NAME --eval-la 23 \\
        --out bench/out/sweep100/all

An eval run's point is the sweep's point at that la when its hyperparameters are the sweep's with
that la: the same edit of each record, the same measurement (the eval measured records in batches,
the sweep one at a time, so their NLLs agree to float order). The script refuses other settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from toplens.analyses.cli.sweep import format_sweep
from toplens.analyses.evaluation.cases import case_from_dict, read_cases
from toplens.analyses.outputs import save_sweep
from toplens.analyses.sweep import SweepResult, at_la, join_sweeps, score_differences, sweep_point
from toplens.editors.top import TopHparams

ROOT = Path(__file__).resolve().parents[1]


def eval_point(folder: Path, la: int, like: SweepResult) -> SweepResult:
    """The sweep (one point, at ``la``) that ``folder``'s eval run gives on ``like``'s records."""
    lines = {d["case_id"]: d for d in read_cases(folder / "cases.jsonl")}
    ids = [c.case_id for c in like.points[0].cases]
    if missing := [c for c in ids if c not in lines]:
        raise SystemExit(f"--eval {folder}: cases {missing[:5]} of the sweep are not in its cases.jsonl")
    wanted = json.loads(at_la(TopHparams.from_dict(dict(like.hparams)), la).to_json())
    if (got := lines[ids[0]]["hparams"]) != wanted:
        diff = {k: (got.get(k), v) for k, v in wanted.items() if got.get(k) != v}
        raise SystemExit(f"--eval {folder}: its TOP settings differ from the sweep's at la {la}: {diff}")
    point = sweep_point(la, [case_from_dict(lines[c]) for c in ids])
    return SweepResult((point,), like.edit_layer, like.n_records, like.n_layers, like.model_name, like.hparams)


def markdown(result: SweepResult, command: str, eval_note: str) -> str:
    """The sweep as a table with intervals, and each la against the best, paired."""
    diffs = {d.la: d for d in score_differences(result)}
    cell = lambda v, b, f="{:.1f}": "–" if v is None else f.format(v) + (  # noqa: E731
        "" if b is None else f" [{f.format(b.low)}, {f.format(b.high)}]")
    best = next(iter(diffs.values())).best_la if diffs else None
    lines = ["# TOP's la sweep on the development benchmark", "", f"Written by `{command}`. {eval_note}", "",
             f"| la | n | Eff | Gen | S-Spec | R-Spec | Score | Score − la {best} (paired) |",
             "|---|---|---|---|---|---|---|---|"]
    for p in result.points:
        iv = p.intervals
        rates = [cell(getattr(p, n), None if iv is None else getattr(iv, n)) for n in
                 ("efficacy", "generalization", "s_specificity", "r_specificity", "score")]
        d = diffs.get(p.la)
        lines.append(f"| {p.la} | {len(p.cases)} | " + " | ".join(rates) + " | "
                     + ("–" if d is None else cell(d.difference, d.bounds, "{:+.1f}")) + " |")
    return "\n".join(lines) + "\n\n```\n" + format_sweep(result) + "\n```\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", nargs="+", type=Path, required=True, help="toplens sweep folders")
    parser.add_argument("--eval", type=Path, help="a toplens eval folder of the same TOP settings at --eval-la")
    parser.add_argument("--eval-la", type=int)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "la_sweep.md")
    args = parser.parse_args(argv)
    sweeps = [SweepResult.from_json((f / "sweep.json").read_text()) for f in args.sweeps]
    note = ""
    if args.eval is not None:
        sweeps.append(eval_point(args.eval, args.eval_la, sweeps[0]))
        note = (f"The point at la = {args.eval_la} is read from the `toplens eval` run `{args.eval.name}` "
                "of the same settings on the same records (its per-case outcomes; measured in batches).")
    result = join_sweeps(sweeps)
    save_sweep(result, args.out)
    command = "python bench/la_sweep.py " + " ".join(sys.argv[1:]) if argv is None else "python bench/la_sweep.py"
    args.doc.write_text(markdown(result, command, note))
    print(args.doc.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
