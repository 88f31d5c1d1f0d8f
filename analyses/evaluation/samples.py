"""Small, seeded sets of edit requests drawn from a known-facts file (for tests and benchmarks)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from toplens import EditRequest

from toplens.analyses.evaluation.known_facts import read_known_facts


def known_fact_requests(path: str | Path, n: int = 10, start: int = 0) -> list[EditRequest]:
    """The first ``n`` facts (from index ``start``) whose relation has another object; each is
    rewritten to the object of the next fact with the same relation and a different object."""
    facts = read_known_facts(path)
    by_relation = defaultdict(list)
    for fact in facts:
        by_relation[fact.relation_id].append(fact)
    requests: list[EditRequest] = []
    for index, fact in enumerate(facts[start:], start):
        peers = by_relation[fact.relation_id]
        after = peers[peers.index(fact) + 1:] + peers[: peers.index(fact)]
        other = next((p.attribute for p in after if p.attribute.strip() != fact.attribute.strip()), None)
        if other is None:
            continue
        requests.append(EditRequest(fact.template, fact.subject, " " + other.strip(), " " + fact.attribute.strip()))
        if len(requests) == n:
            break
    return requests


# The paper's running example: the default request of `toplens saliency`, `trace` and `independence`.
DEFAULT_REQUEST = EditRequest("The mother tongue of {} is", "Danielle Darrieux", " English", " French")
