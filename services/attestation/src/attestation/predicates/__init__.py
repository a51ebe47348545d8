"""Validate the predicate of an in-toto Statement v1, or an SBOM uploaded on its own, by type.

Each predicate type is checked by the library that is kept for it: CycloneDX by
`cyclonedx-python-lib` (JSON Schema), SPDX 2 by `spdx-tools`, SPDX 3 by `spdx-python-model`;
SLSA provenance, in-toto links and Linegate's own predicates by the JSON Schemas in `schemas/`.
Nothing here raises on bad input or lets a library warning escape: every problem becomes one
line in `PredicateResult.errors`, naming the JSON path it is about.

    >>> from attestation.predicates import validate_predicate
    >>> r = validate_predicate("https://slsa.dev/provenance/v1", {"buildDefinition": {}})
    >>> r.kind, r.errors[0]
    ('slsa-provenance-v1', "$: 'runDetails' is a required property")
    >>> validate_predicate("https://example.com/unknown", {}).recognised
    False

Validation is CPU-bound (a 2 MB SBOM takes seconds): call it from a worker thread in async code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from types import MappingProxyType
from typing import Any, Final

from attestation.predicates._cyclonedx import SUPPORTED_SPEC_VERSIONS, validate_cyclonedx
from attestation.predicates._intoto import validate_in_toto_link, validate_slsa_provenance_v1
from attestation.predicates._linegate import validate_dataset_provenance, validate_sla_evidence
from attestation.predicates._result import (
    KIND_CYCLONEDX,
    KIND_DATASET_PROVENANCE,
    KIND_IN_TOTO_LINK,
    KIND_SLA_EVIDENCE,
    KIND_SLSA_PROVENANCE_V1,
    KIND_SPDX_2,
    KIND_SPDX_3,
    KIND_UNRECOGNISED,
    PredicateResult,
)
from attestation.predicates._spdx2 import validate_spdx2
from attestation.predicates._spdx3 import validate_spdx3

__all__ = [
    "DATASET_PROVENANCE_V1",
    "DOCUMENT_MEDIA_TYPES",
    "KIND_CYCLONEDX",
    "KIND_DATASET_PROVENANCE",
    "KIND_IN_TOTO_LINK",
    "KIND_SLA_EVIDENCE",
    "KIND_SLSA_PROVENANCE_V1",
    "KIND_SPDX_2",
    "KIND_SPDX_3",
    "KIND_UNRECOGNISED",
    "PREDICATE_TYPES",
    "SLA_EVIDENCE_V1",
    "PredicateResult",
    "validate_document",
    "validate_predicate",
]

logger = logging.getLogger(__name__)

DATASET_PROVENANCE_V1: Final = "https://linegate.dev/attestation/dataset-provenance/v1"
SLA_EVIDENCE_V1: Final = "https://linegate.dev/attestation/sla-evidence/v1"

_Validator = Callable[[Any], PredicateResult]

# predicateType URI -> (kind, validator). The CycloneDX and SPDX 2 URIs follow the in-toto
# attestation predicate specs (spec/predicates/cyclonedx.md, spdx2.md, spdx3.md), where
# the unversioned `https://spdx.dev/Document` means SPDX 2.
_DISPATCH: Final[dict[str, tuple[str, _Validator]]] = {
    "https://slsa.dev/provenance/v1": (KIND_SLSA_PROVENANCE_V1, validate_slsa_provenance_v1),
    "https://cyclonedx.org/bom": (KIND_CYCLONEDX, validate_cyclonedx),
    **{
        f"https://cyclonedx.org/bom/v{v}": (
            KIND_CYCLONEDX,
            partial(validate_cyclonedx, expected_version=v),
        )
        for v in SUPPORTED_SPEC_VERSIONS
    },
    "https://spdx.dev/Document": (KIND_SPDX_2, validate_spdx2),
    "https://spdx.dev/Document/v2.2": (
        KIND_SPDX_2,
        partial(validate_spdx2, expected_version="2.2"),
    ),
    "https://spdx.dev/Document/v2.3": (
        KIND_SPDX_2,
        partial(validate_spdx2, expected_version="2.3"),
    ),
    "https://spdx.dev/Document/v3": (KIND_SPDX_3, validate_spdx3),
    "https://in-toto.io/attestation/link/v0.3": (KIND_IN_TOTO_LINK, validate_in_toto_link),
    DATASET_PROVENANCE_V1: (KIND_DATASET_PROVENANCE, validate_dataset_provenance),
    SLA_EVIDENCE_V1: (KIND_SLA_EVIDENCE, validate_sla_evidence),
}

PREDICATE_TYPES: Final = MappingProxyType({uri: kind for uri, (kind, _) in _DISPATCH.items()})
"""Every predicateType URI this package validates, mapped to the kind it reports."""

DOCUMENT_MEDIA_TYPES: Final = MappingProxyType(
    {"application/vnd.cyclonedx+json": KIND_CYCLONEDX, "application/spdx+json": KIND_SPDX_2}
)
"""Media types `validate_document` accepts; SPDX JSON is SPDX 3 when it is JSON-LD."""


def validate_predicate(predicate_type: str, predicate: Any) -> PredicateResult:
    """Validate the `predicate` of an in-toto Statement v1 according to its predicateType URI."""
    entry = _DISPATCH.get(predicate_type) if isinstance(predicate_type, str) else None
    if entry is None:
        return PredicateResult(kind=KIND_UNRECOGNISED, recognised=False)
    kind, validate = entry
    return _guarded(kind, validate, predicate)


def validate_document(media_type: str, document: Any) -> PredicateResult:
    """Validate an unsigned SBOM uploaded as a whole document: media_type
    'application/vnd.cyclonedx+json' or 'application/spdx+json' (document already parsed
    with json.loads). A `version` media type parameter, if given, must match the document."""
    if not isinstance(media_type, str):
        return PredicateResult(kind=KIND_UNRECOGNISED, recognised=False)
    essence, _, parameters = media_type.partition(";")
    essence = essence.strip().lower()
    version = _parameter(parameters, "version")
    if essence == "application/vnd.cyclonedx+json":
        check = partial(validate_cyclonedx, expected_version=version, what="document")
        return _guarded(KIND_CYCLONEDX, check, document)
    if essence == "application/spdx+json":
        if isinstance(document, dict) and "@context" in document:
            return _guarded(KIND_SPDX_3, partial(validate_spdx3, what="document"), document)
        check = partial(validate_spdx2, expected_version=version, what="document")
        return _guarded(KIND_SPDX_2, check, document)
    return PredicateResult(kind=KIND_UNRECOGNISED, recognised=False)


def _guarded(kind: str, validate: _Validator, value: Any) -> PredicateResult:
    """Run a validator; a third-party exception it did not expect becomes an error line."""
    try:
        return validate(value)
    except Exception as e:
        logger.exception("validating a %s predicate failed unexpectedly", kind)
        return PredicateResult(
            kind=kind,
            recognised=True,
            errors=(f"$: could not be validated ({type(e).__name__}: {e})",),
        )


def _parameter(parameters: str, name: str) -> str | None:
    for parameter in parameters.split(";"):
        key, _, value = parameter.partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"') or None
    return None
