"""Linegate's own predicates: dataset provenance and SLA evidence.

SLA evidence for the ``model-performance`` term is what the SLA scorecard scores performance
commitments on (:mod:`attestation.sla_performance`): each measurement's ``metric`` and optional
``slice``, about the model ``scope.model`` (or ``scope.product``) at ``scope.modelVersion`` or the
statement's subjects. ``committed``/``met`` are the supplier's own reading; the scorecard judges
``measured`` against the buyer's terms.

Both are JSON Schemas (draft 2020-12) in `schemas/`; the few rules a schema cannot say
(a period that ends before it starts, a `met` flag that contradicts the numbers, an evidence id
that points nowhere) are checked here and reported with the same `<json path>: <reason>` shape.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from attestation.predicates._jsonschema import schema_errors
from attestation.predicates._result import (
    KIND_DATASET_PROVENANCE,
    KIND_SLA_EVIDENCE,
    PredicateResult,
    not_an_object,
    result,
)

_OPERATORS: Final[dict[str, Callable[[float, float], bool]]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
    "==": operator.eq,
}


def validate_dataset_provenance(predicate: Any) -> PredicateResult:
    if not isinstance(predicate, dict):
        return not_an_object(KIND_DATASET_PROVENANCE, predicate)
    errors = schema_errors("dataset-provenance-v1.json", predicate)
    if errors:
        return result(KIND_DATASET_PROVENANCE, errors)

    collection = predicate["collection"]
    errors += _period_errors(collection["period"], "$.collection.period")
    size = predicate["size"]
    splits = predicate.get("splits", [])
    split_records = sum(s["records"] for s in splits)
    if split_records > size["records"]:
        errors.append(
            f"$.splits: the splits hold {split_records} records, "
            f"more than $.size.records ({size['records']})"
        )
    for name, n in sorted(Counter(s["name"] for s in splits).items()):
        if n > 1:
            errors.append(f"$.splits: split name {name!r} appears {n} times")

    dataset, personal = predicate["dataset"], predicate["personalData"]
    summary = {
        "name": dataset["name"],
        "version": dataset["version"],
        "sha256": dataset["digest"]["sha256"],
        "source_kind": predicate["source"]["kind"],
        "source": predicate["source"]["description"],
        "collection_process": collection["process"],
        "collection_period": dict(collection["period"]),
        "licence": predicate["licence"]["spdxExpression"],
        "personal_data": personal["present"],
        "legal_basis": personal.get("legalBasis"),
        "labelling_process": predicate["labelling"]["process"],
        "known_biases": list(predicate["knownBiases"]),
        "limitations": list(predicate["limitations"]),
        "records": size["records"],
        "splits": {s["name"]: s["records"] for s in splits},
    }
    return result(KIND_DATASET_PROVENANCE, errors, summary)


def validate_sla_evidence(predicate: Any) -> PredicateResult:
    if not isinstance(predicate, dict):
        return not_an_object(KIND_SLA_EVIDENCE, predicate)
    errors = schema_errors("sla-evidence-v1.json", predicate)
    if errors:
        return result(KIND_SLA_EVIDENCE, errors)

    errors += _period_errors(predicate["period"], "$.period")
    evidence_ids = [e["id"] for e in predicate["evidence"]]
    for eid, n in sorted(Counter(evidence_ids).items()):
        if n > 1:
            errors.append(f"$.evidence: evidence id {eid!r} appears {n} times")

    measurements = []
    for i, m in enumerate(predicate["measurements"]):
        path = f"$.measurements[{i}]"
        committed = m["committed"]
        met = _OPERATORS[committed["operator"]](m["measured"], committed["value"])
        if "met" in m and m["met"] != met:
            errors.append(
                f"{path}.met: says {m['met']} but measured {m['measured']} "
                f"{committed['operator']} committed {committed['value']} is {met}"
            )
        errors += [
            f"{path}.evidence: {ref!r} is not the id of an entry in $.evidence"
            for ref in m.get("evidence", [])
            if ref not in evidence_ids
        ]
        measurement = {
            "metric": m["metric"],
            "unit": m["unit"],
            "operator": committed["operator"],
            "committed": committed["value"],
            "measured": m["measured"],
            "met": met,
        }
        if "slice" in m:
            measurement["slice"] = m["slice"]
        measurements.append(measurement)
    all_met = all(m["met"] for m in measurements)
    if "met" in predicate and predicate["met"] != all_met:
        errors.append(
            f"$.met: says {predicate['met']} but the measurements "
            f"{'all' if all_met else 'do not all'} meet their commitments"
        )

    summary = {
        "agreement": predicate["agreement"]["reference"],
        "term": predicate["term"],
        "period": dict(predicate["period"]),
        "scope": dict(predicate.get("scope", {})),
        "measurements": measurements,
        "met": all_met,
        "evidence": [
            {"id": e["id"], "kind": e["kind"], "uri": e.get("uri"), "digest": e.get("digest")}
            for e in predicate["evidence"]
        ],
    }
    return result(KIND_SLA_EVIDENCE, errors, summary)


def _period_errors(period: dict[str, str], path: str) -> list[str]:
    try:
        start = datetime.fromisoformat(period["start"])
        end = datetime.fromisoformat(period["end"])
        ends_first = end < start
    except (ValueError, TypeError):
        # RFC 3339 forms Python does not parse, or one naive and one aware: the schema's
        # date-time check has already vouched for the syntax, so say nothing more.
        return []
    if ends_first:
        return [f"{path}: ends ({period['end']}) before it starts ({period['start']})"]
    return []
