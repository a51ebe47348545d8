"""The result type every validator returns, and the kinds of predicate it can name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

KIND_SLSA_PROVENANCE_V1: Final = "slsa-provenance-v1"
KIND_CYCLONEDX: Final = "cyclonedx"
KIND_SPDX_2: Final = "spdx-2"
KIND_SPDX_3: Final = "spdx-3"
KIND_IN_TOTO_LINK: Final = "in-toto-link"
KIND_DATASET_PROVENANCE: Final = "linegate-dataset-provenance"
KIND_SLA_EVIDENCE: Final = "linegate-sla-evidence"
KIND_UNRECOGNISED: Final = "unrecognised"

# Enough to act on; a broken 2 MB SBOM can otherwise produce thousands of lines.
MAX_ERRORS: Final = 100


@dataclass(frozen=True)
class PredicateResult:
    """What validating one predicate (or one uploaded document) found.

    `errors` is empty when the predicate is valid; each entry names the field or JSON path
    it is about. `summary` holds JSON-serialisable fields for the technical file.
    """

    kind: str
    recognised: bool
    errors: tuple[str, ...] = ()
    summary: dict[str, Any] = field(default_factory=dict)


def result(kind: str, errors: list[str], summary: dict[str, Any] | None = None) -> PredicateResult:
    """A result for a recognised kind, with the error list capped at `MAX_ERRORS`."""
    if len(errors) > MAX_ERRORS:
        dropped = len(errors) - MAX_ERRORS
        errors = [*errors[:MAX_ERRORS], f"... and {dropped} more errors"]
    return PredicateResult(kind=kind, recognised=True, errors=tuple(errors), summary=summary or {})


def not_an_object(kind: str, value: Any, what: str = "predicate") -> PredicateResult:
    return result(kind, [f"$: the {what} must be a JSON object, got {json_type(value)}"])


_JSON_TYPES: Final = (
    (bool, "boolean"),
    (int | float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    return next((name for t, name in _JSON_TYPES if isinstance(value, t)), type(value).__name__)
