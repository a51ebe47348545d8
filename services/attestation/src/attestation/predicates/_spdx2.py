"""SPDX 2.2/2.3 documents in JSON, parsed and validated by `spdx-tools`."""

from __future__ import annotations

import re
from typing import Any, Final

from spdx_tools.spdx.datetime_conversions import datetime_to_iso_string
from spdx_tools.spdx.model.relationship import RelationshipType
from spdx_tools.spdx.parser.error import SPDXParsingError
from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
from spdx_tools.spdx.validation.validation_message import ValidationMessage

from attestation.predicates._quiet import quiet
from attestation.predicates._result import KIND_SPDX_2, PredicateResult, not_an_object, result

SUPPORTED_VERSIONS: Final = ("2.2", "2.3")

# spdx-tools reports a missing required field as a beartype type-hint violation of its model
# setter, e.g. `SetterError CreationInfo: Method ... parameter data_license="None" violates ...`.
_MISSING_FIELD = re.compile(r"SetterError (\w+): Method \S+ parameter (\w+)=\"None\" violates")
_JSON_NAMES: Final = {"spdx_id": "SPDXID", "spdx_version": "spdxVersion"}


def validate_spdx2(
    document: Any, *, expected_version: str | None = None, what: str = "predicate"
) -> PredicateResult:
    """Validate a parsed SPDX 2 JSON document; `expected_version` ("2.3") comes from a
    versioned predicate type and must then match the document's `spdxVersion`."""
    if not isinstance(document, dict):
        return not_an_object(KIND_SPDX_2, document, what)
    if "@context" in document or "@graph" in document:
        return result(
            KIND_SPDX_2,
            ["$: this is SPDX 3 JSON-LD; declare it as https://spdx.dev/Document/v3"],
        )
    spdx_version = document.get("spdxVersion")
    errors: list[str] = []
    if expected_version is not None and spdx_version != f"SPDX-{expected_version}":
        errors.append(
            f"$.spdxVersion: the document says {spdx_version!r} but it was declared as "
            f"SPDX {expected_version}"
        )
    summary: dict[str, Any] = {"spdx_version": spdx_version}
    try:
        with quiet():
            parsed = JsonLikeDictParser().parse(document)  # type: ignore[no-untyped-call]
    except SPDXParsingError as e:
        reasons: list[str] = e.get_messages()  # type: ignore[no-untyped-call]
        return result(KIND_SPDX_2, errors + _parsing_errors(reasons), summary)
    except (AttributeError, TypeError, ValueError, KeyError) as e:
        # The parser trusts the JSON shapes of the spec (`creationInfo` an object, ...).
        return result(KIND_SPDX_2, [*errors, f"$: not a readable SPDX 2 document ({e})"], summary)

    with quiet():
        messages = validate_full_spdx_document(parsed)
    errors += [_describe(m) for m in messages]
    info = parsed.creation_info
    summary.update(
        name=info.name,
        document_namespace=info.document_namespace,
        created=datetime_to_iso_string(info.created),
        creators=[actor.to_serialized_string() for actor in info.creators],
        packages=len(parsed.packages),
        files=len(parsed.files),
        describes=[
            str(r.related_spdx_element_id)
            for r in parsed.relationships
            if r.relationship_type == RelationshipType.DESCRIBES
            and r.spdx_element_id == info.spdx_id
        ],
    )
    return result(KIND_SPDX_2, errors, summary)


def _parsing_errors(messages: list[str]) -> list[str]:
    out: list[str] = []
    for message in messages:
        missing = _MISSING_FIELD.findall(message)
        if not missing:
            out.append(message)
        out += [
            f"{owner}: required field {_json_name(field)!r} is missing or null"
            for owner, field in missing
        ]
    return list(dict.fromkeys(out))


def _json_name(field: str) -> str:
    if field in _JSON_NAMES:
        return _JSON_NAMES[field]
    head, *rest = field.split("_")
    return head + "".join(part.title() for part in rest)


def _describe(message: ValidationMessage) -> str:
    context = message.context
    where = context.spdx_id or context.parent_id
    if where is None and context.element_type is not None:
        where = context.element_type.name.lower()
    return f"{where or 'document'}: {message.validation_message}"
