"""`toplens figures`: every analysis figure on one model with a small seeded set of cases."""

from __future__ import annotations

import argparse
import json

from toplens.analyses.cli.common import (add_data_arg, add_hparams_arg, add_model_args, add_out_arg, check_at_least,
                                         check_folder, check_hparams_flag, check_las, check_requests_fit,
                                         check_writable, hparams_overrides, load, parse_ints, records_from,
                                         resolve_all)
from toplens.analyses.cli.sweep import LAS_HELP
from toplens.analyses.gallery import METHODS, make_figures


def add_parser(sub) -> None:
    p = sub.add_parser("figures", help="regenerate every analysis figure on a model with a small seeded set of cases")
    add_out_arg(p, "PNG, PDF, JSON and index.md", required=True)
    p.add_argument("--n", type=int, default=4, help="records for the RIE, sweep and eval figures")
    add_data_arg(p)
    p.add_argument("--seed", type=int, default=0, help="seed for the records and the tracing noise")
    p.add_argument("--samples", type=int, default=5, help="noise samples per causal trace")
    p.add_argument("--las", default=None, help=f"the sweep's {LAS_HELP}")
    add_hparams_arg(p)
    p.add_argument("--eval-dir", default=None, help="reuse this `toplens eval` folder for the eval figure "
                                                    "(default: evaluate rome,top on the --n records)")
    add_model_args(p)
    p.set_defaults(run=run)


def validate(args: argparse.Namespace) -> None:
    """The flags and folders, before the data or the model loads."""
    check_at_least(args, 1, "n", "samples")
    check_at_least(args, 0, "seed")
    check_las(args.las)
    check_writable(args.out, "--out", folder=True)
    check_folder(args.eval_dir, "--eval-dir")
    check_hparams_flag(args.hparams, METHODS, flat_to=METHODS)


def run(args: argparse.Namespace) -> int:
    validate(args)
    las = parse_ints(args.las, "--las")
    records = records_from(args, args.n)
    overrides = hparams_overrides(args.hparams, METHODS, flat_to=METHODS)
    model = load(args)
    check_requests_fit(model, [r.request for r in records], "--data")
    index = make_figures(model, records, args.out, hparams=resolve_all(model, overrides, args.model),
                         samples=args.samples, seed=args.seed, las=las, eval_dir=args.eval_dir, source=args.data)
    print(json.dumps({"index": str(index.path), "figures": [e[0] for e in index.entries]}) if args.json
          else f"wrote {len(index.entries)} figures and {index.path}")
    return 0
