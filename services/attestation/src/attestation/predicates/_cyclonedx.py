"""CycloneDX BOMs in JSON, spec versions 1.2 to 1.6.

The BOM is checked against the CycloneDX JSON Schema for its `specVersion` by
`cyclonedx-python-lib` (`JsonStrictValidator`: no unknown properties). Only a BOM that passes
has its model cards and data components read, into the pydantic models of `_cyclonedx_models`,
because the library's object model drops both.

One deviation from the library's defaults: the check of the `iri-reference` format. jsonschema
(>= 4.25, non-GPL format extra) runs it through `rfc3987-syntax`, a lark Earley parser that
takes ~0.15 s per IRI, so a real 1,900-component SBOM took over three minutes
(CycloneDX/cyclonedx-python-lib#862, python-jsonschema/jsonschema#1392). We map the IRI to a
URI as RFC 3987 section 3.1 says (percent-encode the non-ASCII characters an IRI allows, reject
any other) and hand it to jsonschema's own RFC 3986 `uri-reference` check, which is a regex.

Even so, the library's validator (python-jsonschema) takes 1.5-1.8 s of CPU for a real 2 MB
SBOM. The same schema files, compiled by `jsonschema-rs` with the same format checks, answer
"valid?" in 7-31 ms: a BOM it finds valid is accepted without the library's walk, and any
other goes to the library, which decides and words every error (as in `_jsonschema`).
`tests/attestation/test_predicates.py` holds both to one verdict on every BOM there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import quote

import jsonschema_rs
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation import json as cyclonedx_json
from cyclonedx.validation.json import JsonStrictValidator
from jsonschema import Draft7Validator, FormatChecker  # type: ignore[import-untyped]
from pydantic import ValidationError

from attestation.predicates._cyclonedx_models import ComponentData, ModelCard
from attestation.predicates._jsonschema import describe_all, python_formats
from attestation.predicates._result import KIND_CYCLONEDX, PredicateResult, not_an_object, result

SUPPORTED_SPEC_VERSIONS: Final = ("1.2", "1.3", "1.4", "1.5", "1.6")

_M = TypeVar("_M", ModelCard, ComponentData)


def validate_cyclonedx(
    bom: Any, *, expected_version: str | None = None, what: str = "predicate"
) -> PredicateResult:
    """Validate a parsed CycloneDX JSON BOM; `expected_version` comes from a versioned
    predicate type or media type and must then match the BOM's `specVersion`."""
    if not isinstance(bom, dict):
        return not_an_object(KIND_CYCLONEDX, bom, what)
    spec_version = bom.get("specVersion")
    summary: dict[str, Any] = {"spec_version": spec_version}
    if bom.get("bomFormat") != "CycloneDX":
        return result(
            KIND_CYCLONEDX,
            [f"$.bomFormat: must be 'CycloneDX', got {bom.get('bomFormat')!r}"],
            summary,
        )
    if spec_version not in SUPPORTED_SPEC_VERSIONS:
        supported = ", ".join(SUPPORTED_SPEC_VERSIONS)
        return result(
            KIND_CYCLONEDX,
            [f"$.specVersion: {spec_version!r} is not a supported CycloneDX version ({supported})"],
            summary,
        )
    errors: list[str] = []
    if expected_version is not None and expected_version != spec_version:
        errors.append(
            f"$.specVersion: the BOM says {spec_version} but it was declared as CycloneDX "
            f"{expected_version}"
        )
    fast = _fast_validator(spec_version)
    if fast is None or not fast.is_valid(bom):
        found = _schema_validator(spec_version).validate_str(json.dumps(bom), all_errors=True)
        errors += describe_all(e.data for e in found or ())
    if errors:
        return result(KIND_CYCLONEDX, errors, summary)

    components = list(_walk(bom.get("components"), "$.components"))
    metadata_component = bom.get("metadata", {}).get("component")
    described = (
        list(_walk([metadata_component], "$.metadata.component")) if metadata_component else []
    )
    models: list[dict[str, Any]] = []
    datasets: list[dict[str, Any]] = []
    for path, component in described + components:
        if component.get("type") == "machine-learning-model":
            models.append(_model_summary(path, component, datasets, errors))
        for i, data in enumerate(component.get("data", [])):
            entry = _parse(ComponentData, data, f"{path}.data[{i}]", errors)
            if entry is not None:
                datasets.append({**entry.summary(), "component": component.get("name")})
    summary.update(
        serial_number=bom.get("serialNumber"),
        components=len(components),
        models=models,
        datasets=datasets,
    )
    return result(KIND_CYCLONEDX, errors, summary)


def _model_summary(
    path: str, component: dict[str, Any], datasets: list[dict[str, Any]], errors: list[str]
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        key: component[key]
        for key in ("bom-ref", "group", "name", "version", "publisher")
        if key in component
    }
    card = component.get("modelCard")
    if card is None:
        return summary
    model_card = _parse(ModelCard, card, f"{path}.modelCard", errors)
    if model_card is None:
        return summary
    summary["modelCard"] = model_card.summary()
    parameters = model_card.model_parameters
    for dataset in parameters.datasets if parameters else []:
        if isinstance(dataset, ComponentData):
            datasets.append({**dataset.summary(), "model": component.get("name")})
    return summary


def _parse(model: type[_M], value: Any, path: str, errors: list[str]) -> _M | None:
    try:
        return model.model_validate(value)
    except ValidationError as e:
        errors += [f"{path}.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        return None


def _walk(components: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every component, nested ones included, with its JSON path; depth-first, in order."""
    stack = [(path, components)]
    while stack:
        path, items = stack.pop()
        if not isinstance(items, list):
            continue
        nested = []
        for i, component in enumerate(items):
            if isinstance(component, dict):
                yield f"{path}[{i}]", component
                nested.append((f"{path}[{i}].components", component.get("components")))
        stack.extend(reversed(nested))


class _LinearIriJsonStrictValidator(JsonStrictValidator):
    """`JsonStrictValidator` with the linear-time `iri`/`iri-reference` check (module docstring)."""

    __evolved: Any = None

    @property
    def _validator(self) -> Any:
        if self.__evolved is None:
            self.__evolved = super()._validator.evolve(format_checker=_format_checker())
        return self.__evolved


@cache
def _schema_validator(spec_version: str) -> JsonStrictValidator:
    return _LinearIriJsonStrictValidator(SchemaVersion.from_version(spec_version))


@cache
def _fast_validator(spec_version: str) -> Any:
    """`jsonschema-rs` over the library's own schema file and referenced schemas for
    `spec_version`, checking formats with :func:`_format_checker`; None (the library alone
    then) if this version of the library keeps them elsewhere."""
    try:
        schema_file = _schema_validator(spec_version)._schema_file
        prefix = "http://cyclonedx.org/schema/"
        resources = [
            (f"{prefix}{name}.SNAPSHOT.schema.json", _load(getattr(cyclonedx_json, attribute)))
            for name, attribute in (
                ("spdx", "_S_SPDX"),
                ("cryptography-defs", "_S_CDEFS"),
                ("jsf-0.82", "_S_JSF"),
            )
        ]
        schema = _load(schema_file)
    except (AttributeError, OSError, TypeError, ValueError):
        return None
    return jsonschema_rs.Draft7Validator(
        schema,
        registry=jsonschema_rs.Registry(resources),
        validate_formats=True,
        formats=python_formats(_format_checker()),
        offline=True,
    )


def _load(path: Any) -> Any:
    return json.loads(Path(path).read_text("utf-8"))


@cache
def _format_checker() -> Any:
    base = Draft7Validator.FORMAT_CHECKER
    checker = FormatChecker(formats=())
    checker.checkers = dict(base.checkers)
    # Without an RFC 3986 checker to delegate to, keep jsonschema's own (slow but right).
    if "uri" in base.checkers and "uri-reference" in base.checkers:
        checker.checkers["iri"] = (_iri_check(base, "uri"), ())
        checker.checkers["iri-reference"] = (_iri_check(base, "uri-reference"), ())
    return checker


def _iri_check(base: Any, uri_format: str) -> Callable[[object], bool]:
    def check(instance: object) -> bool:
        if not isinstance(instance, str):
            return True
        uri = _iri_to_uri(instance)
        return uri is not None and bool(base.conforms(uri, uri_format))

    return check


def _iri_to_uri(iri: str) -> str | None:
    """RFC 3987 section 3.1: percent-encode `ucschar` (and `iprivate`, in the query) as UTF-8;
    None if `iri` holds a character that no IRI may contain there."""
    if any(char <= " " or char == "\x7f" for char in iri):
        # Never part of an IRI; also rfc3986-validator's `$` would let a final newline through.
        return None
    if iri.isascii():
        return iri
    query_start = iri.find("?")
    query_end = iri.find("#", query_start) if query_start >= 0 else -1
    out = []
    for index, char in enumerate(iri):
        if char.isascii():
            out.append(char)
            continue
        in_query = 0 <= query_start < index and (query_end < 0 or index < query_end)
        if not (_ucschar(ord(char)) or (in_query and _iprivate(ord(char)))):
            return None
        out.append(quote(char, safe=""))
    return "".join(out)


def _ucschar(cp: int) -> bool:
    if cp < 0x10000:
        return 0xA0 <= cp <= 0xD7FF or 0xF900 <= cp <= 0xFDCF or 0xFDF0 <= cp <= 0xFFEF
    # Planes 1-14 minus each plane's last two code points; plane 14 only from U+E1000.
    return cp < 0xF0000 and (cp & 0xFFFF) <= 0xFFFD and not 0xE0000 <= cp < 0xE1000


def _iprivate(cp: int) -> bool:
    return 0xE000 <= cp <= 0xF8FF or (cp >= 0xF0000 and (cp & 0xFFFF) <= 0xFFFD)
