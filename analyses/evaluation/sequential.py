"""Sequential editing: many edits kept on one model, measured as they accumulate.

:func:`run_sequential` edits the model with the requests of ``records`` in order, ``batch_size``
at a time (one edit of the whole batch for a batched editor such as MEMIT; one request per step
otherwise), each computed on the model as the edits before left it. At each checkpoint it
measures, on every record edited so far, Efficacy, Generalization, S- and R-Specificity (against
the tokens the unedited model predicted) and Efficacy@1; **retention**, the share of held-out
facts the unedited model knows (its top next token is the true object's first token) that the
model still knows; and the **Fluency** of generations from held-out prompts. With
``project="nullspace"`` the run's edits share one :class:`~toplens.core.nullspace.SequentialProjection`:
each layer's null space from the unedited model, and the earlier edits' keys (K_p) kept too.

The output folder holds ``run.json`` (the settings), ``edits/NNNNN.safetensors`` (every edit, in
order; ``edits.jsonl`` lists them with their case ids and seconds) and ``curve.jsonl`` (one line
per checkpoint). A rerun into the folder applies the saved edits again, each checked against the
weights hash it was computed on, and goes on. The model is reverted on every exit.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from toplens import EditHandle, WeightEdit, as_adapter
from toplens.core.cache import write_atomic
from toplens.core.hparams import Hparams
from toplens.core.nullspace import KeyInPreservedSpan, SequentialProjection
from toplens.core.requests import RequestError
from toplens.editors import get_editor
from toplens.editors.presets import preset_or_given

from toplens.analyses.evaluation import metrics as m
from toplens.analyses.evaluation.cases import jsonable
from toplens.analyses.evaluation.evaluate import (GENERATION_TOKENS, GENERATION_TOP_K, Measurement,
                                                  check_record_fits, generate, measure)
from toplens.analyses.evaluation.records import Record
from toplens.analyses.evaluation.retention import HeldOut, known_held_out, retention  # noqa: F401 (re-exported)
from toplens.analyses.evaluation.sequential_settings import check_held_out, corpus_key, generation_entry, projection_for
from toplens.analyses.evaluation.results import METRICS

logger = logging.getLogger(__name__)

DEFAULT_CHECKPOINTS = (1, 10, 50, 100, 200)
RATES = (*METRICS, "efficacy_at_1")


@dataclass(frozen=True)
class SequentialPoint:
    """The model after ``edits`` sequential edits. Rates in percent over the records edited so far
    (None where no record had that metric's prompts); ``retention`` in percent of the held-out
    facts the unedited model knew (None when it knew none, or none were asked for); ``fluency`` ×100
    (None without generations); ``seconds`` the edits' compute time so far; ``refused`` the records
    so far whose edit the editor refused (left unedited, and measured as they are)."""

    edits: int
    efficacy: float | None
    generalization: float | None
    s_specificity: float | None
    r_specificity: float | None
    efficacy_at_1: float | None
    retention: float | None
    fluency: float | None
    seconds: float
    refused: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "SequentialPoint":
        """A curve.jsonl line; a NaN (retention without facts, as earlier versions wrote it) reads as None."""
        value = lambda x: None if isinstance(x, float) and x != x else x  # noqa: E731
        return cls(**{f.name: value(raw[f.name]) for f in fields(cls) if f.name in raw})


@dataclass(frozen=True)
class SequentialResult:
    """One method's sequential run: its label (the method, ``+nullspace`` with the projection),
    the settings it ran with, the curve, how many held-out facts retention is measured on, and the
    unedited model's Fluency (×100)."""

    method: str
    label: str
    hparams: Hparams
    points: tuple[SequentialPoint, ...]
    retention_facts: int
    fluency_before: float | None
    out_dir: Path

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "label": self.label, "hparams": jsonable(self.hparams.to_dict()),
                "retention_facts": self.retention_facts, "fluency_before": self.fluency_before,
                "points": [p.to_json() for p in self.points]}


def label_of(method: str, hp: Hparams) -> str:
    return f"{method}+nullspace" if hp.project == "nullspace" else method


def _mean_rates(measurements: Sequence[Measurement]) -> dict[str, float | None]:
    out = {}
    for name in RATES:
        rates = [r for x in measurements if getattr(x, name) is not None and (r := getattr(x, name).rate) is not None]
        out[name] = 100.0 * float(np.mean(rates)) if rates else None
    return out


def _fluency(model, prompts: Sequence[str], tokens: int, top_k: int, seed: int) -> float | None:
    value = m.fluency(generate(model, prompts, n_tokens=tokens, top_k=top_k, seed=seed)) if tokens else None
    return None if value is None else 100.0 * value


def run_sequential(model, records: Sequence[Record], method: str, out_dir: str | Path, *,
                   hparams: Hparams | None = None, held_out: Sequence[Record] = (), batch_size: int = 1,
                   checkpoints: Sequence[int] = DEFAULT_CHECKPOINTS, retention_facts: int = 100,
                   generation_tokens: int = GENERATION_TOKENS, top_k: int = GENERATION_TOP_K, seed: int = 0,
                   corpus: Iterable[str] | None = None, corpus_tokens: int | None = None,
                   model_name: str | None = None, progress: bool = True) -> SequentialResult:
    """Edit the model with every record's request in order and measure the curve; the model ends
    with its original weights. See the module docstring for what is measured and written.

    Args:
        model: a TransformerLens model (or ModelAdapter).
        records: the facts to edit, in order.
        method: an editor name; ``hparams`` its settings (default its preset for the model).
        out_dir: run.json, edits/, edits.jsonl and curve.jsonl; a rerun resumes.
        held_out: records no edit touches, for retention and the Fluency prompts.
        batch_size: requests per step (above 1 only for a batched editor such as MEMIT).
        checkpoints: edit counts at which to measure (a batch that passes one is measured after it).
        retention_facts: how many known held-out facts retention is measured on (0: none).
        generation_tokens, top_k, seed: the Fluency generations (0 tokens: none).
        corpus, corpus_tokens: with ``project="nullspace"``, the texts K₀'s statistic is taken over
            (default: model-sampled text), or how many tokens of sampled text to take it over
            (default 6,144); streamed in batches, cached on disk.
    """
    adapter = as_adapter(model)
    editor = get_editor(method)
    hp = preset_or_given(method, hparams, model_name or adapter.name, adapter.n_layers)
    marks = _check_run(editor, records, batch_size, checkpoints)
    check_held_out(held_out, retention_facts, generation_tokens)
    projection, corpus_key = projection_for(hp, corpus, corpus_tokens)
    for record in records:
        check_record_fits(adapter, record)
    out = Path(out_dir)
    settings = {"method": method, "model": model_name or adapter.name, "hparams": jsonable(hp.to_dict()),
                "batch_size": batch_size, "checkpoints": marks, "case_ids": [r.case_id for r in records],
                "retention_facts": retention_facts, "generation": generation_entry(generation_tokens, top_k, seed),
                "corpus": corpus_key}
    _claim(out, settings, hp)
    known = known_held_out(adapter, held_out, records, retention_facts)
    fluency_before = _fluency(adapter, known.generation_prompts, generation_tokens, top_k, seed)
    befores = [measure(adapter, r) for r in tqdm(records, desc="before", disable=not progress, leave=False)]
    gen = (generation_tokens, top_k, seed)
    run = _Run(adapter, editor, hp, records, befores, known, out, gen, projection)
    points = run.go(batch_size, marks, progress)
    return SequentialResult(method, label_of(method, hp), hp, tuple(points), len(known.facts), fluency_before, out)


def _check_run(editor, records: Sequence[Record], batch_size: int, checkpoints: Sequence[int]) -> list[int]:
    """The checkpoints, sorted; every argument checked before any work."""
    if not records:
        raise ValueError("records: give at least one record to edit")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    if batch_size > 1 and not editor.batched:
        raise ValueError(f"batch_size={batch_size}: {editor.name!r} edits one request per step; only a batched "
                         "editor (memit) takes several")
    marks = sorted(set(checkpoints))
    if not marks or marks[0] < 1 or marks[-1] > len(records):
        raise ValueError(f"checkpoints must be edit counts from 1 to {len(records)} (the records); got {list(checkpoints)}")
    return marks


def _claim(out: Path, settings: dict[str, Any], hp: Hparams) -> None:
    """Write run.json, or check that the folder's run had these settings (a resume; a run.json
    of an earlier version reads with the fields added since at their defaults)."""
    path = out / "run.json"
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        stored["hparams"] = {**jsonable(type(hp)().to_dict()), **stored.get("hparams", {})}
        stored.setdefault("corpus", corpus_key(None) if hp.project == "nullspace" else None)
        differ = [k for k in settings if stored.get(k) != settings[k]]
        if differ:
            raise ValueError(f"{out} holds a sequential run with other {', '.join(differ)}; use another folder")
        return
    (out / "edits").mkdir(parents=True, exist_ok=True)
    text = json.dumps(settings, indent=2) + "\n"
    write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


@dataclass
class _Run:
    """One sequential run's state while it goes."""

    adapter: Any
    editor: Any
    hp: Hparams
    records: Sequence[Record]
    befores: Sequence[Measurement]
    known: HeldOut
    out: Path
    gen: tuple[int, int, int]
    projection: SequentialProjection | None
    refused: int = 0  # records whose edit was refused (left unedited, still measured)

    def go(self, batch_size: int, marks: list[int], progress: bool) -> list[SequentialPoint]:
        projection = self.projection
        for layer in self.hp.edit_layers if projection is not None else ():  # Û from the unedited model
            projection.space(self.adapter, layer, self.hp.nullspace_threshold)
        points = [SequentialPoint.from_json(json.loads(x)) for x in _lines(self.out / "curve.jsonl")]
        with EditHandle(self.adapter) as handle, (projection.active() if projection else nullcontext()):
            done, seconds = self._replay(handle, projection)
            pending = [c for c in marks if c > (points[-1].edits if points else 0)]
            if pending and done >= pending[0]:  # interrupted while measuring: measure now
                points.append(self._point(done, seconds, pending))
            bar = tqdm(total=len(self.records), initial=done, desc=f"sequential {self.editor.name}",
                       disable=not progress)
            while done < len(self.records) and pending:
                batch = self.records[done:done + batch_size]
                seconds += self._step(handle, projection, batch, done)
                done += len(batch)
                bar.update(len(batch))
                if done >= pending[0]:
                    points.append(self._point(done, seconds, pending))
            bar.close()
        return points

    def _step(self, handle: EditHandle, projection, batch: Sequence[Record], done: int) -> float:
        start, requests = time.perf_counter(), [r.request for r in batch]
        line = {"file": f"{len(_lines(self.out / 'edits.jsonl')):05d}.safetensors", "case_ids": [r.case_id for r in batch],
                "first": done}
        try:
            edit = self.editor.compute(self.adapter, requests if self.editor.batched else requests[0], self.hp)
        except (RequestError, KeyInPreservedSpan) as err:  # this request cannot be edited: counted, not applied
            logger.warning("sequential: cases %s refused, left unedited: %s", line["case_ids"], err)
            edit, line["file"], line["refused"] = None, None, str(err)
            self.refused += len(batch)
        line["seconds"] = seconds = time.perf_counter() - start
        if edit is not None:
            edit.save(self.out / "edits" / line["file"])
            if projection is not None:
                projection.remember(self.adapter, requests, self.hp, self.editor.fold_role)
            handle.add(edit)
        with open(self.out / "edits.jsonl", "a", encoding="utf-8") as sink:
            sink.write(json.dumps(line) + "\n")
        return seconds

    def _replay(self, handle: EditHandle, projection) -> tuple[int, float]:
        """Apply the folder's saved edits again, in order; the count of records they edit and their seconds."""
        done, seconds = 0, 0.0
        for raw in _lines(self.out / "edits.jsonl"):
            line = json.loads(raw)
            want = [r.case_id for r in self.records[done:done + len(line["case_ids"])]]
            if line["case_ids"] != want or line["first"] != done:
                raise ValueError(f"{self.out}/edits.jsonl: edit {line['file']} holds cases {line['case_ids']}, "
                                 f"where this run's order has {want}; use another folder")
            if line["file"] is None:  # a refused request: nothing was applied
                self.refused += len(line["case_ids"])
                done, seconds = done + len(line["case_ids"]), seconds + line["seconds"]
                continue
            edit = WeightEdit.load(self.out / "edits" / line["file"])
            if projection is not None:
                projection.remember(self.adapter, edit.requests, self.hp, self.editor.fold_role)
            handle.add(edit)
            done, seconds = done + len(line["case_ids"]), seconds + line["seconds"]
        return done, seconds

    def _point(self, done: int, seconds: float, pending: list[int]) -> SequentialPoint:
        """Measure the model now, append the line to curve.jsonl and drop the checkpoints passed."""
        after = [measure(self.adapter, r, b.tokens) for r, b in zip(self.records[:done], self.befores[:done])]
        point = SequentialPoint(done, **_mean_rates(after), retention=retention(self.adapter, self.known.facts),
                                fluency=_fluency(self.adapter, self.known.generation_prompts, *self.gen),
                                seconds=seconds, refused=self.refused)
        with open(self.out / "curve.jsonl", "a", encoding="utf-8") as sink:
            sink.write(json.dumps(point.to_json()) + "\n")
        while pending and pending[0] <= done:
            pending.pop(0)
        return point


def _lines(path: Path) -> list[str]:
    """The complete lines of a JSON-lines file (a truncated last line, from an interrupt, is dropped)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines = lines[:-1]
        write_atomic(path, lambda tmp: Path(tmp).write_text("".join(x + "\n" for x in lines), encoding="utf-8"))
    return [x for x in lines if x.strip()]
