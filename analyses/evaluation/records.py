"""Record: one evaluation case (an edit request and the prompts that judge it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from toplens import EditRequest


class DatasetError(ValueError):
    """A malformed dataset record; the message names the record (case_id or index) and the field."""


@dataclass(frozen=True)
class Record:
    """One COUNTERFACT_RS case.

    Attributes:
        case_id: the record's id in its file (CounterFact's ``case_id``, known facts' ``known_id``).
        request: the edit; ``request.target_true`` is the object the model should know now.
        paraphrase_prompts: same subject and relation, other wording (filled, no ``{}``).
        neighborhood_prompts: other subjects with the same relation (filled).
        relation_specific_prompts: the same subject with other relations (filled).
        generation_prompts: prompts to generate free text from (fluency, consistency).
        reference_texts: texts about ``target_new`` to compare generations with; None if absent.
        relation_id: the edited relation, e.g. ``"P103"``.
        neighborhood_targets: each neighborhood prompt's own true object (with its leading space)
            when it differs from ``request.target_true``; None means all are ``target_true``.
        attribute_prompts: other subjects whose true object is ``target_new`` (CounterFact's).
    """

    case_id: int | str
    request: EditRequest
    paraphrase_prompts: tuple[str, ...] = ()
    neighborhood_prompts: tuple[str, ...] = ()
    relation_specific_prompts: tuple[str, ...] = ()
    generation_prompts: tuple[str, ...] = ()
    reference_texts: tuple[str, ...] | None = None
    relation_id: str | None = None
    neighborhood_targets: tuple[str, ...] | None = None
    attribute_prompts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        targets = self.neighborhood_targets
        if targets is not None and len(targets) != len(self.neighborhood_prompts):
            raise DatasetError(
                f"record {self.case_id!r}: field 'neighborhood_targets' has {len(targets)} entries "
                f"for {len(self.neighborhood_prompts)} neighborhood prompts"
            )

    @property
    def neighborhood_true(self) -> tuple[str, ...]:
        """The true object of each neighborhood prompt."""
        if self.neighborhood_targets is not None:
            return self.neighborhood_targets
        return (self.request.target_true or "",) * len(self.neighborhood_prompts)

    def to_dict(self) -> dict[str, Any]:
        """COUNTERFACT_RS JSON shape (targets stored without their leading space)."""
        r = self.request
        rewrite = {"prompt": r.prompt, "subject": r.subject, "relation_id": self.relation_id,
                   "target_new": {"str": r.target_new.strip()}}
        if r.target_true is not None:
            rewrite["target_true"] = {"str": r.target_true.strip()}
        out: dict[str, Any] = {"case_id": self.case_id, "requested_rewrite": rewrite}
        for name in ("paraphrase_prompts", "neighborhood_prompts", "attribute_prompts",
                     "generation_prompts", "relation_specific_prompts"):
            out[name] = list(getattr(self, name))
        if self.reference_texts is not None:
            out["reference_texts"] = list(self.reference_texts)
        if self.neighborhood_targets is not None:
            out["neighborhood_targets"] = [t.strip() for t in self.neighborhood_targets]
        return out
