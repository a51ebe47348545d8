"""SPDX 3.0.1 JSON-LD documents, deserialized by `spdx-python-model`; the AI and dataset
profile fields are extracted for the technical file."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

from spdx_python_model.bindings.v3_0_1 import model as spdx3

from attestation.predicates._quiet import quiet
from attestation.predicates._result import KIND_SPDX_3, PredicateResult, not_an_object, result

CONTEXT: Final = "https://spdx.org/rdf/3.0.1/spdx-context.jsonld"
_VOCABULARY: Final = "https://spdx.org/rdf/3.0.1/terms/"

AI_PACKAGE_FIELDS: Final = (
    "name",
    "software_packageVersion",
    "ai_typeOfModel",
    "ai_domain",
    "ai_limitation",
    "ai_autonomyType",
    "ai_safetyRiskAssessment",
    "ai_standardCompliance",
    "ai_useSensitivePersonalInformation",
    "ai_informationAboutApplication",
    "ai_informationAboutTraining",
    "ai_modelDataPreprocessing",
    "ai_modelExplainability",
    "ai_hyperparameter",
    "ai_metric",
    "ai_metricDecisionThreshold",
)
DATASET_FIELDS: Final = (
    "name",
    "software_packageVersion",
    "dataset_datasetType",
    "dataset_dataCollectionProcess",
    "dataset_intendedUse",
    "dataset_datasetSize",
    "dataset_knownBias",
    "dataset_confidentialityLevel",
    "dataset_hasSensitivePersonalInformation",
    "dataset_anonymizationMethodUsed",
    "dataset_datasetAvailability",
    "dataset_dataPreprocessing",
    "dataset_datasetNoise",
    "dataset_datasetUpdateMechanism",
    "dataset_sensor",
)


def validate_spdx3(document: Any, *, what: str = "predicate") -> PredicateResult:
    if not isinstance(document, dict):
        return not_an_object(KIND_SPDX_3, document, what)
    if document.get("@context") != CONTEXT:
        return result(
            KIND_SPDX_3,
            [f"$.@context: must be {CONTEXT!r} (SPDX 3.0.1), got {document.get('@context')!r}"],
        )
    objects = spdx3.SHACLObjectSet()
    try:
        with quiet() as deprecations:
            spdx3.JSONLDDeserializer().deserialize_data(document, objects)
            missing = objects.link()
    except (TypeError, ValueError, KeyError, AttributeError, NotImplementedError) as e:
        # The bindings stop at the first problem and say what it is in the message.
        return result(KIND_SPDX_3, [f"$.@graph: {e}"])

    errors: list[str] = []
    imported = {m.externalSpdxId for m in objects.foreach_type(spdx3.ExternalMap)}
    errors += [
        f"$.@graph: {ref!r} is referenced but neither defined nor imported"
        for ref in sorted(missing - imported)
    ]
    documents = list(objects.foreach_type(spdx3.SpdxDocument))
    if not documents:
        errors.append("$.@graph: has no SpdxDocument element")

    summary: dict[str, Any] = {
        "spec_version": _spec_version(documents),
        "elements": sum(1 for _ in objects.foreach_type(spdx3.Element)),
        "ai_packages": _extract(objects.foreach_type(spdx3.ai_AIPackage), AI_PACKAGE_FIELDS),
        "datasets": _extract(objects.foreach_type(spdx3.dataset_DatasetPackage), DATASET_FIELDS),
    }
    if documents:
        summary["profile_conformance"] = _plain(documents[0].profileConformance)
    if deprecations:
        summary["deprecations"] = deprecations
    return result(KIND_SPDX_3, errors, summary)


def _spec_version(documents: list[Any]) -> str | None:
    for document in documents:
        info = document.creationInfo
        if isinstance(info, spdx3.CreationInfo):
            version: str | None = info.specVersion
            return version
    return None


def _extract(elements: Iterable[Any], fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """The listed fields of each element, as JSON-ready values; unset ones left out."""
    out = []
    for element in sorted(elements, key=lambda e: e.get_id() or ""):
        entry: dict[str, Any] = {"spdxId": element.get_id()}
        for field in fields:
            value = _plain(getattr(element, field))
            if value not in (None, [], {}):
                entry[field] = value
        out.append(entry)
    return out


def _plain(value: Any) -> Any:
    """A property value made JSON-serialisable: enum IRIs shortened to their name,
    dictionary entries to a dict, referenced elements to their id."""
    if isinstance(value, str):
        return value.rsplit("/", 1)[-1] if value.startswith(_VOCABULARY) else value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, spdx3.SHACLObject):  # before Iterable: SHACLObjects iterate keys
        return _plain_object(value)
    if isinstance(value, Iterable):
        items = [_plain(v) for v in value]
        if items and all(isinstance(v, spdx3.DictionaryEntry) for v in value):
            return {k: v for item in items for k, v in item.items()}
        return items
    return value if value is None or isinstance(value, bool | int | float) else str(value)


def _plain_object(value: Any) -> Any:
    if isinstance(value, spdx3.DictionaryEntry):
        return {value.key: value.value}
    return value.get_id() or str(value)
