"""One evaluation split across machines: shard K of N takes records K-1, K-1+N, K-1+2N, ... (so each
shard mixes the relations as the whole does), runs in its own folder and resumes there like any
run; :func:`merge_shards` joins the N folders into one cases.jsonl and one summary.json, in the
order of the unsharded run.

A shard folder holds ``shard.json`` (K, N and the number of records of the whole run), written
before the first case and checked on every resume, so that folders of different splits or data
cannot be merged or mixed.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any, Sequence, TypeVar

from toplens.core.cache import write_atomic

from toplens.analyses.evaluation.cases import CASES_FILE, case_from_dict, read_cases, summarize_lines
from toplens.analyses.evaluation.runner import SKIPPED_FILE, SUMMARY_FILE, EvalResult, SkippedCase

logger = logging.getLogger(__name__)

SHARD_FILE = "shard.json"
T = TypeVar("T")
#: the settings every line of a method must share across shards
SHARED_SETTINGS = ("model", "hparams", "generation")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not (isinstance(self.index, int) and isinstance(self.count, int) and 1 <= self.index <= self.count):
            raise ValueError(f"a shard is K/N with 1 <= K <= N; got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``"K/N"``, as ``--shard`` takes it (a SLURM array job passes ``$SLURM_ARRAY_TASK_ID/N``)."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if not match:
            raise ValueError(f"--shard must be K/N, e.g. 2/8; got {text!r}")
        return cls(int(match[1]), int(match[2]))

    def select(self, records: Sequence[T]) -> tuple[T, ...]:
        """This shard's records: every ``count``-th, from record ``index - 1``."""
        return tuple(records[self.index - 1:: self.count])

    def global_index(self, local: int) -> int:
        """The index in the whole run of this shard's record ``local``."""
        return self.index - 1 + local * self.count

    def size(self, total: int) -> int:
        return len(range(self.index - 1, total, self.count))


def claim_folder(out_dir: str | Path, shard: Shard, total: int) -> None:
    """Mark ``out_dir`` as shard ``shard`` of a run of ``total`` records, or check that it already is."""
    out = Path(out_dir)
    marker = {"index": shard.index, "count": shard.count, "records": total}
    path = out / SHARD_FILE
    if path.exists():
        held = json.loads(path.read_text(encoding="utf-8"))
        if held != marker:
            raise ValueError(f"--out {str(out)!r} holds shard {held.get('index')}/{held.get('count')} of "
                             f"{held.get('records')} records; this run is {shard.index}/{shard.count} of {total}")
        return
    if (out / CASES_FILE).exists():
        raise ValueError(f"--out {str(out)!r} holds an unsharded run; give each shard its own folder")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(marker) + "\n", encoding="utf-8")


def _read_shard(folder: Path) -> tuple[Shard, int]:
    path = folder / SHARD_FILE
    if not path.exists():
        raise ValueError(f"{str(folder)!r} is not a shard folder (no {SHARD_FILE}); run it with toplens eval --shard")
    held = json.loads(path.read_text(encoding="utf-8"))
    return Shard(held["index"], held["count"]), held["records"]


def _check_split(shards: Sequence[tuple[Shard, int]], folders: Sequence[Path]) -> None:
    """The folders are shards 1..N of one split of the same number of records, each once."""
    counts, totals = {s.count for s, _ in shards}, {t for _, t in shards}
    if len(counts) > 1 or len(totals) > 1:
        raise ValueError(f"the folders are shards of different splits: {[f'{s.index}/{s.count} of {t}' for s, t in shards]}")
    count = counts.pop()
    indices = sorted(s.index for s, _ in shards)
    if indices != list(range(1, count + 1)):
        missing = sorted(set(range(1, count + 1)) - set(indices))
        repeated = sorted({i for i in indices if indices.count(i) > 1})
        raise ValueError(f"merging needs each of the shards 1..{count} once; missing {missing}, repeated {repeated} "
                         f"(folders {[str(f) for f in folders]})")


def _check_settings(lines_by_folder: Sequence[tuple[Path, list[dict[str, Any]]]]) -> None:
    """Every method's lines share their model, hparams and generation settings across the shards,
    and the precision "auto" resolved to where the lines record it."""
    first: dict[str, tuple[Path, dict]] = {}
    ran: dict[str, tuple[Path, str]] = {}
    for folder, lines in lines_by_folder:
        for line in lines:
            wanted = {k: line.get(k) for k in SHARED_SETTINGS}
            seen = first.setdefault(line["method"], (folder, wanted))
            differ = [k for k in SHARED_SETTINGS if seen[1][k] != wanted[k]]
            precision = (line.get("as_run") or {}).get("precision")
            if precision is not None and ran.setdefault(line["method"], (folder, precision))[1] != precision:
                seen, differ = (ran[line["method"]][0], None), ["precision (as run)"]
            if differ:
                raise ValueError(f"{line['method']!r} ran with other {', '.join(differ)} in {str(folder)!r} than in "
                                 f"{str(seen[0])!r}; shards of one run must share their settings")


def _by_case(lines: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """A shard's lines grouped by case, in the order the shard ran them."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        groups.setdefault(json.dumps(line["case_id"]), []).append(line)
    return list(groups.values())


def merge_shards(folders: Sequence[str | Path], out_dir: str | Path) -> EvalResult:
    """Join the shard folders of one run into ``out_dir``: cases.jsonl (in the unsharded run's
    order), skipped.jsonl (with each record's index in the whole run) and summary.json. Refuses
    folders of different splits or settings, a missing or repeated shard, and a case twice."""
    paths = [Path(f) for f in folders]
    if any(p.resolve() == Path(out_dir).resolve() for p in paths):
        raise ValueError(f"--out {str(out_dir)!r} is one of the shard folders; merge into another folder")
    shards = [_read_shard(p) for p in paths]
    _check_split(shards, paths)
    order = sorted(range(len(paths)), key=lambda i: shards[i][0].index)
    cases = [(paths[i], read_cases(paths[i] / CASES_FILE)) for i in order]
    _check_settings(cases)
    _warn_incomplete([shards[i] for i in order], [paths[i] for i in order])
    merged = [line for row in zip_longest(*(_by_case(lines) for _, lines in cases)) for group in row if group
              for line in group]
    keys = [(json.dumps(line["case_id"]), line["method"]) for line in merged]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"case(s) {twice[:5]} appear in more than one shard; the shards overlap")
    skipped = [{**line, "index": shards[i][0].global_index(line["index"])}
               for i in order for line in read_cases(paths[i] / SKIPPED_FILE)]
    return _write(Path(out_dir), merged, skipped)


def _warn_incomplete(shards: Sequence[tuple[Shard, int]], folders: Sequence[Path]) -> None:
    for (shard, total), folder in zip(shards, folders):
        done = {json.dumps(line["case_id"]) for name in (CASES_FILE, SKIPPED_FILE) for line in read_cases(folder / name)}
        if len(done) < shard.size(total):
            logger.warning("shard %d/%d (%s) holds %d of its %d records; the merge covers only those",
                           shard.index, shard.count, folder, len(done), shard.size(total))


def _write(out: Path, lines: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> EvalResult:
    methods = list(dict.fromkeys(line["method"] for line in [*lines, *skipped]))
    result = EvalResult({mt: summarize_lines([x for x in lines if x["method"] == mt]) for mt in methods},
                        {mt: tuple(case_from_dict(x) for x in lines if x["method"] == mt) for mt in methods}, out,
                        tuple(SkippedCase(x["case_id"], x["index"], x["method"], x["reason"]) for x in skipped))
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in ((CASES_FILE, lines), (SKIPPED_FILE, skipped)):
        text = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows)
        write_atomic(out / name, lambda tmp, text=text: Path(tmp).write_text(text, encoding="utf-8"))
    summary = json.dumps(result.to_json(), indent=2) + "\n"
    write_atomic(out / SUMMARY_FILE, lambda tmp: Path(tmp).write_text(summary, encoding="utf-8"))
    return result
