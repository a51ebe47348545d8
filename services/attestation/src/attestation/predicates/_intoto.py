"""SLSA Provenance v1 and in-toto Link v0.3 predicates, checked against the JSON Schemas in
`schemas/` (no maintained Python library validates these predicates as JSON: the `in_toto`
package models the legacy v0.9 link layout, not the v0.3 predicate)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from attestation.predicates._jsonschema import schema_errors
from attestation.predicates._result import (
    KIND_IN_TOTO_LINK,
    KIND_SLSA_PROVENANCE_V1,
    PredicateResult,
    not_an_object,
    result,
)


def validate_slsa_provenance_v1(predicate: Any) -> PredicateResult:
    if not isinstance(predicate, dict):
        return not_an_object(KIND_SLSA_PROVENANCE_V1, predicate)
    errors = schema_errors("slsa-provenance-v1.json", predicate)
    build = _object(predicate.get("buildDefinition"))
    run = _object(predicate.get("runDetails"))
    builder = _object(run.get("builder"))
    metadata = _object(run.get("metadata"))
    summary = {
        "builder_id": _string(builder.get("id")),
        "build_type": _string(build.get("buildType")),
        "invocation_id": _string(metadata.get("invocationId")),
        "started_on": _string(metadata.get("startedOn")),
        "finished_on": _string(metadata.get("finishedOn")),
        "resolved_dependencies": _descriptors(build.get("resolvedDependencies")),
    }
    return result(KIND_SLSA_PROVENANCE_V1, errors, summary)


def validate_in_toto_link(predicate: Any) -> PredicateResult:
    if not isinstance(predicate, dict):
        return not_an_object(KIND_IN_TOTO_LINK, predicate)
    errors = schema_errors("in-toto-link-v0.3.json", predicate)
    materials = _descriptors(predicate.get("materials"))
    counts = Counter(m["name"] for m in materials if m["name"] is not None)
    errors += [
        f"$.materials: material name {name!r} appears {n} times; names must be unique"
        for name, n in sorted(counts.items())
        if n > 1
    ]
    command = predicate.get("command")
    summary = {
        "name": _string(predicate.get("name")),
        "command": [c for c in command if isinstance(c, str)] if isinstance(command, list) else [],
        "materials": materials,
    }
    return result(KIND_IN_TOTO_LINK, errors, summary)


def _descriptors(value: Any) -> list[dict[str, Any]]:
    """The identifying fields of a list of ResourceDescriptors, tolerating junk."""
    if not isinstance(value, list):
        return []
    out = []
    for item in value:
        if not isinstance(item, dict):
            continue
        digest = _object(item.get("digest"))
        out.append(
            {
                "name": _string(item.get("name")),
                "uri": _string(item.get("uri")),
                "digest": {k: v for k, v in digest.items() if isinstance(v, str)},
            }
        )
    return out


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) else None
