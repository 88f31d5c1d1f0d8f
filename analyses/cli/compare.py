"""`toplens compare`: several methods edit the same built-in (or given) record, side by side."""

from __future__ import annotations

import argparse
import json
from typing import Any

from toplens.analyses.cli.common import (add_data_arg, add_hparams_arg, add_methods_arg, add_model_args,
                                         check_hparams_flag, emit, hparams_overrides, load, parse_methods,
                                         records_from, resolve_all)
from toplens.analyses.evaluation.compare import Comparison, compare_methods

#: the built-in case the demo shows: "Wolfgang Amadeus Mozart is known for performing" -> " blues"
DEFAULT_CASE = 347


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="edit one record with several methods and show its prompts side by side")
    add_methods_arg(p, "rome,top")
    add_data_arg(p)
    p.add_argument("--case", default=str(DEFAULT_CASE),
                   help=f"the case_id of the record in --data (default {DEFAULT_CASE})")
    p.add_argument("--seed", type=int, default=0, help="seed for target_new of known facts")
    add_hparams_arg(p)
    add_model_args(p)
    p.set_defaults(run=run)


def _pick(records, case: str):
    for record in records:
        if str(record.case_id) == case:
            return record
    raise ValueError(f"--case {case!r}: no record with that case_id in --data (it has {len(records)} records)")


def run(args: argparse.Namespace) -> int:
    methods = parse_methods(args.methods)
    check_hparams_flag(args.hparams, methods)
    record = _pick(records_from(args, None), args.case)
    overrides = hparams_overrides(args.hparams, methods)
    model = load(args)
    result = compare_methods(model, record, resolve_all(model, overrides, args.model))
    emit(args, to_json(result), format_comparison(result))
    return 0 if result.restored else 1


def to_json(c: Comparison) -> dict[str, Any]:
    req = c.record.request
    return {"case_id": c.record.case_id, "request": req.to_dict(), "methods": list(c.methods),
            "seconds": {e.method: round(e.seconds, 3) for e in c.evaluations},
            "rows": [{"kind": r.kind, "prompt": r.prompt, "kept": r.kept, "before": r.before, "after": dict(r.after),
                      "new_after": dict(r.new_after), "leaked": dict(r.leaked)} for r in c.rows],
            "restored_bitexact": c.restored}


def format_comparison(c: Comparison) -> str:
    """Per prompt, P before and under each method's edit; on the subject's other relations, P of
    the unedited answer, with 'o* <' where o* now beats it."""
    req, width = c.record.request, 46
    lines = [f"{' vs '.join(m.upper() for m in c.methods)}: {req.text!r} -> {req.target_new!r} "
             f"(was {req.target_true!r}); edit seconds: "
             + ", ".join(f"{e.method} {e.seconds:.1f}" for e in c.evaluations), ""]
    head = f"{'':16}{'prompt':{width}}{'answer':>12}{'before':>8}" + "".join(f"{m:>16}" for m in c.methods)
    lines.append(head)
    for kind in ("rewrite", "paraphrase", "other relation"):
        for r in (r for r in c.rows if r.kind == kind):
            answer = json.dumps(req.target_new) if r.kept is None else json.dumps(r.kept)
            cells = "".join(f"{('o*<' if r.leaked[m] else '') + f'{r.after[m]:.3f}':>16}" for m in c.methods)
            lines.append(f"{kind:16}{r.prompt[:width - 1]:{width}}{answer[:11]:>12}{r.before:>8.3f}{cells}")
    leaks = {m: sum(r.leaked[m] for r in c.rows) for m in c.methods}
    n_other = sum(r.kind == "other relation" for r in c.rows)
    lines += ["", "P of the answer in that row: o* on the rewrite prompt and paraphrases, the unedited model's "
              "answer on the subject's other relations; 'o*<' marks an other relation where o* now beats it.",
              "other relations where o* leaked: " + ", ".join(f"{m} {leaks[m]}/{n_other}" for m in c.methods),
              f"weights restored bit for bit after every revert: {c.restored}"]
    return "\n".join(lines)
