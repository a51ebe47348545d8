"""Predicate validation against real third-party files (../shared/testdata) and hand-made
Linegate predicates. Expected outcomes for the third-party files: ../shared/testdata/README.md."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from attestation import predicates
from attestation.predicates import (
    KIND_CYCLONEDX,
    KIND_DATASET_PROVENANCE,
    KIND_IN_TOTO_LINK,
    KIND_SLA_EVIDENCE,
    KIND_SLSA_PROVENANCE_V1,
    KIND_SPDX_2,
    KIND_SPDX_3,
    KIND_UNRECOGNISED,
    PREDICATE_TYPES,
    PredicateResult,
    _cyclonedx,
    _jsonschema,
    validate_document,
    validate_predicate,
)

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"
SCHEMAS = Path(predicates.__file__).parent / "schemas"

CYCLONEDX = "https://cyclonedx.org/bom"
SPDX_2_3 = "https://spdx.dev/Document/v2.3"
SPDX_3 = "https://spdx.dev/Document/v3"
SLSA = "https://slsa.dev/provenance/v1"
LINK = "https://in-toto.io/attestation/link/v0.3"
DATASET = "https://linegate.dev/attestation/dataset-provenance/v1"
SLA = "https://linegate.dev/attestation/sla-evidence/v1"
CDX_JSON = "application/vnd.cyclonedx+json"
SPDX_JSON = "application/spdx+json"

SHA256 = "a3f1c9" + "0" * 58


@cache
def _read(name: str) -> str:
    path = TESTDATA / name
    if not path.is_file():
        pytest.skip(f"third-party test data {path} is not present")
    return path.read_text("utf-8")


def load(name: str) -> Any:
    """A fresh parsed copy of a test data file, safe to mutate."""
    return json.loads(_read(name))


def valid(result: PredicateResult, kind: str) -> dict[str, Any]:
    assert result.recognised
    assert result.kind == kind
    assert result.errors == ()
    json.dumps(result.summary)  # must be JSON-serialisable as it is
    return result.summary


def invalid(result: PredicateResult, kind: str) -> str:
    """All error lines joined, after checking the result is a recognised failure."""
    assert result.recognised
    assert result.kind == kind
    assert result.errors
    json.dumps(result.summary)
    return "\n".join(result.errors)


class _BothVerdicts:
    """Stands in for `_jsonschema.fast_validator(name)`: answers with jsonschema-rs, after
    checking that python-jsonschema, the authority, gives the same verdict."""

    def __init__(self, file_name: str) -> None:
        self.file_name = file_name
        self.fast = _FAST_VALIDATOR(file_name)

    def is_valid(self, instance: Any) -> bool:
        verdict = self.fast.is_valid(instance)
        authority = _jsonschema.validator(self.file_name).is_valid(instance)
        assert verdict == authority, (self.file_name, instance)
        return bool(verdict)


_FAST_VALIDATOR = _jsonschema.fast_validator
_FAST_CYCLONEDX = _cyclonedx._fast_validator


class _BothCycloneDxVerdicts:
    """Stands in for `_cyclonedx._fast_validator(version)`: answers with jsonschema-rs, after
    checking that cyclonedx-python-lib's validator, the authority, gives the same verdict."""

    def __init__(self, spec_version: str) -> None:
        self.spec_version = spec_version
        self.fast = _FAST_CYCLONEDX(spec_version)
        assert self.fast is not None  # the library's schema files were found

    def is_valid(self, bom: Any) -> bool:
        verdict = self.fast.is_valid(bom)
        library = _cyclonedx._schema_validator(self.spec_version)
        assert verdict == (library.validate_str(json.dumps(bom)) is None), self.spec_version
        return bool(verdict)


@pytest.fixture(autouse=True)
def _schema_validators_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every schema check in this module runs both validators and holds them to one verdict:
    the fast one may only skip the authority's walk, never change an outcome."""
    monkeypatch.setattr(_jsonschema, "fast_validator", _BothVerdicts)
    monkeypatch.setattr(_cyclonedx, "_fast_validator", _BothCycloneDxVerdicts)


# ---------------------------------------------------------------- the public surface


def test_predicate_types_cover_the_specified_uris() -> None:
    assert PREDICATE_TYPES[SLSA] == KIND_SLSA_PROVENANCE_V1
    assert PREDICATE_TYPES[CYCLONEDX] == KIND_CYCLONEDX
    assert PREDICATE_TYPES["https://cyclonedx.org/bom/v1.6"] == KIND_CYCLONEDX
    assert PREDICATE_TYPES["https://cyclonedx.org/bom/v1.2"] == KIND_CYCLONEDX
    assert PREDICATE_TYPES["https://spdx.dev/Document"] == KIND_SPDX_2
    assert PREDICATE_TYPES[SPDX_2_3] == KIND_SPDX_2
    assert PREDICATE_TYPES[SPDX_3] == KIND_SPDX_3
    assert PREDICATE_TYPES[LINK] == KIND_IN_TOTO_LINK
    assert PREDICATE_TYPES[DATASET] == KIND_DATASET_PROVENANCE
    assert PREDICATE_TYPES[SLA] == KIND_SLA_EVIDENCE
    assert KIND_UNRECOGNISED not in PREDICATE_TYPES.values()


@pytest.mark.parametrize(
    "predicate_type",
    ["https://example.com/custom/v1", "https://slsa.dev/provenance/v0.2", "", "HTTPS://SLSA.DEV"],
)
def test_unknown_predicate_type_is_unrecognised_without_errors(predicate_type: str) -> None:
    result = validate_predicate(predicate_type, {"anything": [1, 2, 3]})

    assert result == PredicateResult(kind=KIND_UNRECOGNISED, recognised=False)


@pytest.mark.parametrize("predicate_type", sorted(PREDICATE_TYPES))
@pytest.mark.parametrize("predicate", [None, [], [{"bomFormat": "CycloneDX"}], "{}", 3, True])
def test_non_object_predicates_are_errors_not_exceptions(
    predicate_type: str, predicate: Any
) -> None:
    errors = invalid(validate_predicate(predicate_type, predicate), PREDICATE_TYPES[predicate_type])

    assert "must be a JSON object" in errors


def test_an_unexpected_library_failure_becomes_an_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(file_name: str, instance: Any) -> list[str]:
        raise RuntimeError("schema store is on fire")

    monkeypatch.setattr("attestation.predicates._intoto.schema_errors", explode)

    errors = invalid(
        validate_predicate(SLSA, load("slsa/slsa_predicate_v1_0.json")), KIND_SLSA_PROVENANCE_V1
    )

    assert "RuntimeError: schema store is on fire" in errors
    assert "failed unexpectedly" in caplog.text


@pytest.mark.parametrize("media_type", ["application/json", "text/plain", "application/xml"])
def test_unknown_document_media_type_is_unrecognised(media_type: str) -> None:
    result = validate_document(media_type, load("cyclonedx/valid-bom-1.6.json"))

    assert result == PredicateResult(kind=KIND_UNRECOGNISED, recognised=False)


def test_document_media_type_is_case_insensitive_and_checks_its_version() -> None:
    bom = load("cyclonedx/valid-bom-1.6.json")

    valid(validate_document("Application/VND.CycloneDX+JSON; version=1.6", bom), KIND_CYCLONEDX)
    errors = invalid(validate_document(f"{CDX_JSON}; version=1.5", bom), KIND_CYCLONEDX)
    assert "$.specVersion" in errors
    assert "1.5" in errors


def test_schema_files_are_valid_draft_2020_12() -> None:
    for name in ("dataset-provenance-v1.json", "sla-evidence-v1.json"):
        schema = json.loads((SCHEMAS / name).read_text("utf-8"))
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


# ---------------------------------------------------------------- CycloneDX


def test_cyclonedx_ml_bom_1_6_extracts_the_model_card() -> None:
    bom = load("cyclonedx/valid-machine-learning-1.6.json")

    summary = valid(validate_predicate("https://cyclonedx.org/bom/v1.6", bom), KIND_CYCLONEDX)

    assert summary["spec_version"] == "1.6"
    assert summary["components"] == 1
    [model] = summary["models"]
    assert (model["group"], model["name"], model["version"]) == (
        "CompVis",
        "stable-diffusion",
        "1.4",
    )
    assert model["publisher"] == "Acme Inc"
    card = model["modelCard"]
    parameters = card["modelParameters"]
    assert parameters["approach"] == {"type": "supervised"}
    assert parameters["task"] == "task goes here"
    assert parameters["architectureFamily"] == "the architecture family goes here"
    assert parameters["modelArchitecture"] == "The architecture of the model."
    assert parameters["datasets"] == [
        {
            "type": "dataset",
            "name": "Training Data",
            "contents": {"url": "https://example.com/path/to/dataset"},
            "classification": "public",
        }
    ]
    assert parameters["inputs"] == [{"format": "string"}]
    assert parameters["outputs"] == [{"format": "byte[]"}]
    [metric] = card["quantitativeAnalysis"]["performanceMetrics"]
    assert metric["type"] == "The type of performance metric"
    assert (
        metric["confidenceInterval"]["lowerBound"] == "The lower bound of the confidence interval"
    )
    assert "graphics" not in card["quantitativeAnalysis"]  # embedded JPEG stays out of the summary
    considerations = card["considerations"]
    assert "Data scientists and ML researchers" in considerations["users"]
    assert "Text-to-image generation for creative applications" in considerations["useCases"]
    assert (
        "Limited performance on non-photographic styles" in considerations["technicalLimitations"]
    )
    assert considerations["ethicalConsiderations"] == [
        {"name": "The name of the risk", "mitigationStrategy": "Strategy used to address this risk"}
    ]
    [fairness] = considerations["fairnessAssessments"]
    assert fairness["harms"] == "Expected harms to the identified groups"
    assert {"name": "modelcard:custom-property", "value": "custom-value"} in card["properties"]
    assert summary["datasets"] == [{**parameters["datasets"][0], "model": "stable-diffusion"}]


def test_cyclonedx_ml_bom_extracts_environmental_considerations() -> None:
    bom = load("cyclonedx/valid-machine-learning-considerations-env-1.6.json")

    summary = valid(validate_predicate(CYCLONEDX, bom), KIND_CYCLONEDX)

    [model] = summary["models"]
    assert model["name"] == "Llama-2-7b"
    environmental = model["modelCard"]["considerations"]["environmentalConsiderations"]
    [consumption] = environmental["energyConsumptions"]
    assert consumption["activity"] == "training"
    assert consumption["activityEnergyCost"] == {"value": 0.4, "unit": "kWh"}
    assert consumption["co2CostEquivalent"] == {"value": 31.22, "unit": "tCO2eq"}
    [provider] = consumption["energyProviders"]
    assert provider["energySource"] == "natural-gas"
    assert provider["organization"]["name"] == "Meta"


def test_cyclonedx_ml_bom_1_5_validates_and_extracts() -> None:
    bom = load("cyclonedx/valid-machine-learning-1.5.json")

    summary = valid(validate_document(CDX_JSON, bom), KIND_CYCLONEDX)

    assert summary["spec_version"] == "1.5"
    [model] = summary["models"]
    assert model["modelCard"]["modelParameters"]["task"] == "task goes here"
    assert model["modelCard"]["considerations"]["performanceTradeoffs"][1] == (
        "Higher resolution output requires more computational resources"
    )


def test_cyclonedx_data_component_is_a_dataset() -> None:
    bom = load("cyclonedx/valid-component-data-1.6.json")

    summary = valid(validate_predicate("https://cyclonedx.org/bom/v1.6", bom), KIND_CYCLONEDX)

    assert summary["models"] == []
    assert summary["datasets"] == [
        {
            "type": "configuration",
            "name": "app.ini",
            "contents": {"url": "https://example.com/cfg/1337/app.ini"},
            "component": "my-configs",
        },
        {
            "type": "other",
            "name": ".env",
            "contents": {"url": "https://example.com/cfg/1337/env"},
            "component": "my-configs",
        },
    ]


def test_cyclonedx_dataset_governance_and_nested_components_are_read() -> None:
    bom = load("cyclonedx/valid-component-data-1.6.json")
    data = bom["components"][0]["data"][0]
    data["classification"] = "confidential"
    data["governance"] = {"owners": [{"organization": {"name": "OptiVision GmbH"}}]}
    bom["components"] = [
        {"type": "application", "name": "inspector", "components": bom["components"]}
    ]

    summary = valid(validate_predicate(CYCLONEDX, bom), KIND_CYCLONEDX)

    assert summary["components"] == 2
    dataset = summary["datasets"][0]
    assert dataset["classification"] == "confidential"
    assert dataset["governance"] == {"owners": [{"organization": {"name": "OptiVision GmbH"}}]}


def test_cyclonedx_plain_sbom_1_6_validates() -> None:
    summary = valid(
        validate_predicate(CYCLONEDX, load("cyclonedx/valid-bom-1.6.json")), KIND_CYCLONEDX
    )

    assert summary["spec_version"] == "1.6"
    assert summary["serial_number"] == "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79"
    assert summary["models"] == []


def test_cyclonedx_unknown_hash_algorithm_is_rejected_by_the_schema() -> None:
    bom = load("cyclonedx/invalid-hash-alg-1.6.json")

    errors = invalid(validate_predicate(CYCLONEDX, bom), KIND_CYCLONEDX)

    assert "$.components[0].hashes[0].alg" in errors
    assert "'FOO' is not one of" in errors


@pytest.mark.parametrize(
    ("name", "spec_version", "components"),
    [("keycloak-10.0.2.bom.json", "1.2", 903), ("juice-shop.bom.1.4.json", "1.4", 1115)],
)
def test_large_real_sboms_validate(name: str, spec_version: str, components: int) -> None:
    # Also a guard on the IRI format check: with jsonschema's default one, juice-shop alone
    # takes minutes and trips the test timeout.
    summary = valid(validate_document(CDX_JSON, load(f"cyclonedx/{name}")), KIND_CYCLONEDX)

    assert summary["spec_version"] == spec_version
    assert summary["components"] == components


def test_cyclonedx_strict_schema_rejects_unknown_properties() -> None:
    bom = load("cyclonedx/valid-bom-1.6.json")
    bom["components"][0]["modelcard"] = {}  # a typo of modelCard

    errors = invalid(validate_predicate(CYCLONEDX, bom), KIND_CYCLONEDX)

    assert "$.components[0]" in errors
    assert "'modelcard' was unexpected" in errors


@pytest.mark.parametrize(
    "url", ["https://example.com/a b", "https://example.com/a\n", "https://exa\tmple.com/"]
)
def test_cyclonedx_rejects_malformed_iri_references(url: str) -> None:
    bom = load("cyclonedx/valid-component-data-1.6.json")
    bom["components"][0]["externalReferences"] = [{"type": "website", "url": url}]

    errors = invalid(validate_predicate(CYCLONEDX, bom), KIND_CYCLONEDX)

    assert "$.components[0].externalReferences[0].url" in errors
    assert "iri-reference" in errors


@pytest.mark.parametrize(
    "url",
    [
        "https://例え.jp/パス?q=値#frag",
        "git+https://github.com/jestjs/jest.git#packages/jest-globals",
        "http://[::1]:8080/",
        "pkg:npm/%40scope/name@1.0.0",
    ],
)
def test_cyclonedx_accepts_well_formed_iri_references(url: str) -> None:
    bom = load("cyclonedx/valid-component-data-1.6.json")
    bom["components"][0]["externalReferences"] = [{"type": "website", "url": url}]

    valid(validate_predicate(CYCLONEDX, bom), KIND_CYCLONEDX)


def test_cyclonedx_predicate_type_version_must_match_spec_version() -> None:
    bom = load("cyclonedx/valid-bom-1.6.json")

    errors = invalid(validate_predicate("https://cyclonedx.org/bom/v1.5", bom), KIND_CYCLONEDX)

    assert "$.specVersion: the BOM says 1.6 but it was declared as CycloneDX 1.5" in errors


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"specVersion": "1.1"}, "'1.1' is not a supported CycloneDX version"),
        ({"specVersion": "2.0"}, "'2.0' is not a supported CycloneDX version"),
        ({"specVersion": None}, "None is not a supported CycloneDX version"),
        ({"bomFormat": "SPDX"}, "$.bomFormat: must be 'CycloneDX'"),
    ],
)
def test_cyclonedx_needs_a_supported_format_and_version(
    change: dict[str, Any], expected: str
) -> None:
    bom = {**load("cyclonedx/valid-bom-1.6.json"), **change}

    assert expected in invalid(validate_predicate(CYCLONEDX, bom), KIND_CYCLONEDX)


# ---------------------------------------------------------------- SPDX 2


def test_spdx_2_3_sbom_validates() -> None:
    document = load("spdx/software-example11.spdx23.json")
    before = copy.deepcopy(document)

    summary = valid(validate_predicate(SPDX_2_3, document), KIND_SPDX_2)

    assert document == before  # the caller's dict is not touched
    assert summary["spdx_version"] == "SPDX-2.3"
    assert summary["name"] == "SBOM-SPDX-2d85f548-12fa-46d5-87ce-5e78e5e111f4"
    assert summary["created"] == "2022-11-03T07:10:10Z"
    assert summary["creators"] == ["Tool: sigs.k8s.io/bom/pkg/spdx", "Organization: Unknown"]
    assert summary["packages"] == 4
    assert summary["files"] == 1
    assert summary["describes"] == ["SPDXRef-Package-hello-server-src", "SPDXRef-File-hello-server"]


def test_spdx_2_3_validates_as_an_uploaded_document_too() -> None:
    document = load("spdx/software-example11.spdx23.json")

    assert valid(validate_document(SPDX_JSON, document), KIND_SPDX_2)["packages"] == 4
    assert valid(validate_predicate("https://spdx.dev/Document", document), KIND_SPDX_2)


@pytest.mark.parametrize(
    ("remove", "field"),
    [
        ((), "dataLicense"),
        ((), "documentNamespace"),
        ((), "SPDXID"),
        (("packages", 0), "downloadLocation"),
    ],
)
def test_spdx_2_3_missing_required_field_is_named(remove: tuple[Any, ...], field: str) -> None:
    document = load("spdx/software-example11.spdx23.json")
    owner = document
    for step in remove:
        owner = owner[step]
    del owner[field]

    errors = invalid(validate_predicate(SPDX_2_3, document), KIND_SPDX_2)

    assert f"required field {field!r} is missing" in errors


def test_spdx_2_3_validation_messages_are_the_errors() -> None:
    document = load("spdx/software-example11.spdx23.json")
    document["packages"][1]["checksums"][0]["checksumValue"] = "not-hex"
    document["relationships"].append(
        {
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": "SPDXRef-nowhere",
        }
    )

    result = validate_predicate(SPDX_2_3, document)

    errors = invalid(result, KIND_SPDX_2)
    assert "must consist of 64 lowercase hexadecimal digits, but is: not-hex" in errors
    assert 'did not find the referenced spdx_id "SPDXRef-nowhere"' in errors
    assert len(result.errors) == 2


def test_spdx_2_version_must_match_the_predicate_type() -> None:
    document = load("spdx/software-example11.spdx23.json")

    errors = invalid(validate_predicate("https://spdx.dev/Document/v2.2", document), KIND_SPDX_2)

    assert "$.spdxVersion: the document says 'SPDX-2.3' but it was declared as SPDX 2.2" in errors


def test_spdx_3_document_under_an_spdx_2_type_is_pointed_to_v3() -> None:
    document = load("spdx/dataset-example01.spdx3.json")

    errors = invalid(validate_predicate(SPDX_2_3, document), KIND_SPDX_2)

    assert SPDX_3 in errors


@pytest.mark.parametrize(
    "document", [{}, {"creationInfo": 5}, {"spdxVersion": "SPDX-2.3", "packages": 7}]
)
def test_spdx_2_malformed_documents_are_errors(document: dict[str, Any]) -> None:
    invalid(validate_predicate("https://spdx.dev/Document", document), KIND_SPDX_2)


# ---------------------------------------------------------------- SPDX 3


def test_spdx_3_ai_bom_extracts_ai_package_and_dataset_fields() -> None:
    document = load("spdx/ai-simplehtr.spdx3.json")

    summary = valid(validate_predicate(SPDX_3, document), KIND_SPDX_3)

    assert summary["spec_version"] == "3.0.1"
    assert summary["profile_conformance"] == ["core", "software", "ai", "dataset"]
    packages = {p["name"]: p for p in summary["ai_packages"]}
    assert set(packages) == {"word-model", "line-model"}
    word = packages["word-model"]
    assert word["spdxId"] == "https://my-first-aibom.com/word-model"
    assert word["software_packageVersion"] == "0.0"
    assert word["ai_domain"] == [
        "handwriting recognition",
        "image recognition",
        "optical character recognition",
    ]
    assert word["ai_autonomyType"] == "no"
    assert word["ai_safetyRiskAssessment"] == "low"
    assert word["ai_typeOfModel"][0].startswith("Deep Neural network composed of CNN and RNN")
    assert word["ai_hyperparameter"]["optimizer"] == "RMSprop"
    assert set(word["ai_metric"]) == {"charErrorRates", "wordAccuracies"}
    assert "ai_limitation" not in word  # not stated in this file
    [dataset] = summary["datasets"]
    assert dataset["name"] == "IAMdataset"
    assert dataset["dataset_datasetType"] == ["image"]
    assert dataset["dataset_intendedUse"] == "For line level or word level character recognition"
    assert dataset["dataset_datasetSize"] == 4620000000
    assert dataset["dataset_dataCollectionProcess"].startswith(
        "It was decided to use the Lancaster - Oslo/Bergen corpus (LOB)"
    )
    assert dataset["dataset_sensor"] == {
        "printer": "HP Laserjet 4000TN",
        "scanner": "HP-Scanjet 6100",
    }


def test_spdx_3_dataset_bom_extracts_dataset_fields() -> None:
    document = load("spdx/dataset-example01.spdx3.json")

    summary = valid(validate_document(SPDX_JSON, document), KIND_SPDX_3)

    assert summary["ai_packages"] == []
    [dataset] = summary["datasets"]
    assert dataset["name"] == "Our World in Data CO2 and Greenhouse Gas Emissions dataset"
    assert dataset["software_packageVersion"] == "2024-04-15"
    assert dataset["dataset_datasetType"] == ["structured", "timestamp"]
    assert (
        dataset["dataset_intendedUse"]
        == "To make the data about greenhouse gas emissions accessible."
    )
    assert dataset["dataset_dataCollectionProcess"].startswith(
        "The data is collected from various sources"
    )
    assert dataset["dataset_knownBias"] == [
        "Data in some geographical areas are more completed than the others."
    ]
    assert dataset["dataset_hasSensitivePersonalInformation"] == "no"
    assert dataset["dataset_confidentialityLevel"] == "clear"
    assert dataset["dataset_datasetSize"] == 2689


def test_spdx_3_ai_limitation_is_extracted_when_stated() -> None:
    document = load("spdx/ai-simplehtr.spdx3.json")
    for element in document["@graph"]:
        if element["type"] == "ai_AIPackage" and element["name"] == "word-model":
            element["ai_limitation"] = "Only English handwriting; fails on cursive."

    summary = valid(validate_predicate(SPDX_3, document), KIND_SPDX_3)

    word = next(p for p in summary["ai_packages"] if p["name"] == "word-model")
    assert word["ai_limitation"] == "Only English handwriting; fails on cursive."


def test_spdx_3_invalid_enum_value_is_an_error() -> None:
    document = load("spdx/ai-simplehtr.spdx3.json")
    for element in document["@graph"]:
        if element["type"] == "ai_AIPackage":
            element["ai_autonomyType"] = "sometimes"

    errors = invalid(validate_predicate(SPDX_3, document), KIND_SPDX_3)

    assert "'sometimes' is not a valid value" in errors


def test_spdx_3_unresolved_reference_is_an_error() -> None:
    document = load("spdx/dataset-example01.spdx3.json")
    document["@graph"].append(
        {
            "type": "Relationship",
            "spdxId": "https://example.com/relationship-1",
            "creationInfo": "_:creationinfo",
            "relationshipType": "contains",
            "from": "https://spdx.org/spdxdocs/DatasetPackage1-035470d9-3ede-4952-91c8-c2abb943c90b",
            "to": ["https://example.com/not-in-this-document"],
        }
    )

    errors = invalid(validate_predicate(SPDX_3, document), KIND_SPDX_3)

    assert "'https://example.com/not-in-this-document' is referenced but neither defined" in errors


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"@context": "https://spdx.org/rdf/3.0.0/spdx-context.jsonld"}, "$.@context: must be"),
        ({"@graph": 5}, "$.@graph"),
        ({"@graph": []}, "has no SpdxDocument element"),
    ],
)
def test_spdx_3_malformed_documents_are_errors(change: dict[str, Any], expected: str) -> None:
    document = {**load("spdx/dataset-example01.spdx3.json"), **change}

    assert expected in invalid(validate_predicate(SPDX_3, document), KIND_SPDX_3)


# ---------------------------------------------------------------- SLSA provenance v1


def test_slsa_provenance_predicate_validates() -> None:
    summary = valid(
        validate_predicate(SLSA, load("slsa/slsa_predicate_v1_0.json")), KIND_SLSA_PROVENANCE_V1
    )

    assert summary["builder_id"] == (
        "https://github.com/octo-org/octo-repo/.github/workflows/docker.yaml@refs/heads/development"
    )
    assert summary["build_type"] == "https://actions.github.io/buildtypes/workflow/v1"
    assert summary["invocation_id"] == (
        "https://github.com/octo-org/octo-repo/actions/runs/10313983218/attempts/2"
    )
    assert summary["resolved_dependencies"] == [
        {
            "name": None,
            "uri": "git+https://github.com/octo-org/octo-repo@refs/tags/1.21.0",
            "digest": {"gitCommit": "1ac93ce21ee526b36fd154b9058d97dfaa424c50"},
        }
    ]


def test_slsa_provenance_without_builder_id_is_rejected() -> None:
    predicate = load("slsa/slsa_predicate_v1_0.json")
    del predicate["runDetails"]["builder"]["id"]

    result = validate_predicate(SLSA, predicate)

    assert (
        invalid(result, KIND_SLSA_PROVENANCE_V1)
        == "$.runDetails.builder: 'id' is a required property"
    )
    assert result.summary["builder_id"] is None


def test_slsa_provenance_reports_every_broken_field_with_its_path() -> None:
    predicate = load("slsa/slsa_predicate_v1_0.json")
    del predicate["buildDefinition"]["externalParameters"]
    dependency = predicate["buildDefinition"]["resolvedDependencies"][0]
    dependency["digest"] = {"gitCommit": "1AC93CE2", "sha256": SHA256.upper()}
    predicate["buildDefinition"]["resolvedDependencies"].append(
        {"name": "no-uri-digest-or-content"}
    )
    predicate["runDetails"]["metadata"]["startedOn"] = "yesterday"

    result = validate_predicate(SLSA, predicate)

    errors = invalid(result, KIND_SLSA_PROVENANCE_V1)
    assert "$.buildDefinition: 'externalParameters' is a required property" in errors
    assert (
        "$.buildDefinition.resolvedDependencies[0].digest.gitCommit: '1AC93CE2' does not match"
        in errors
    )
    assert "$.buildDefinition.resolvedDependencies[0].digest.sha256" in errors
    assert (
        "$.buildDefinition.resolvedDependencies[1]: needs at least one of content, digest, uri"
        in errors
    )
    assert "$.runDetails.metadata.startedOn: 'yesterday' is not a 'date-time'" in errors
    assert len(result.errors) == 5


def test_slsa_provenance_allows_unknown_and_extension_fields() -> None:
    predicate = load("slsa/slsa_predicate_v1_0.json")
    predicate["https://example.com/extension"] = {"x": 1}
    predicate["buildDefinition"]["resolvedDependencies"][0]["digest"]["somecoolhash"] = "abcd"

    valid(validate_predicate(SLSA, predicate), KIND_SLSA_PROVENANCE_V1)


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("builder", "https://ci.example/builder", True),
        ("builder", "urn:example:builder", True),
        ("builder", "relative/path", False),
        ("builder", "https://exa mple.com", False),
        ("builder", "https://ci.example/%zz", False),
        ("builder", "", False),
        ("startedOn", "2026-12-04T10:00:00+01:00", True),
        ("startedOn", "2026-12-04t10:00:00z", True),
        ("startedOn", "2026-12-04 10:00:00Z", False),
        ("startedOn", "2026-02-30T10:00:00Z", False),
        ("startedOn", "2026-12-04T10:00:00", False),
        # RFC 3339 allows a leap second; python-jsonschema's checker does not, jsonschema-rs's
        # built-in one does: the fast path must keep the authority's verdict.
        ("startedOn", "2016-12-31T23:59:60Z", False),
    ],
)
def test_slsa_provenance_formats_keep_one_verdict(field: str, value: str, ok: bool) -> None:
    predicate = load("slsa/slsa_predicate_v1_0.json")
    if field == "builder":
        predicate["runDetails"]["builder"]["id"] = value
    else:
        predicate["runDetails"]["metadata"]["startedOn"] = value

    result = validate_predicate(SLSA, predicate)  # the autouse fixture compares both verdicts

    assert (result.errors == ()) is ok, result.errors
    assert _FAST_VALIDATOR("slsa-provenance-v1.json").is_valid(predicate) is ok


# ---------------------------------------------------------------- in-toto link v0.3


def _link(**changes: Any) -> dict[str, Any]:
    link: dict[str, Any] = {
        "name": "package-model",
        "command": ["python", "export.py", "--format", "onnx"],
        "materials": [
            {"name": "model.pt", "digest": {"sha256": SHA256}},
            {
                "name": "export.py",
                "uri": "git+https://example.com/repo",
                "digest": {"gitBlob": "ab" * 20},
            },
        ],
        "byproducts": {"return-value": 0},
        "environment": {"python": "3.11"},
    }
    return {**link, **changes}


def test_in_toto_link_validates() -> None:
    summary = valid(validate_predicate(LINK, _link()), KIND_IN_TOTO_LINK)

    assert summary["name"] == "package-model"
    assert summary["command"] == ["python", "export.py", "--format", "onnx"]
    assert [m["name"] for m in summary["materials"]] == ["model.pt", "export.py"]


def test_in_toto_link_materials_need_name_digest_and_unique_names() -> None:
    materials = [
        {"name": "model.pt", "digest": {"sha256": SHA256}},
        {"name": "model.pt", "digest": {"sha256": SHA256}},
        {"uri": "https://example.com/data.tar", "digest": {"sha256": SHA256}},
        {"name": "weights.bin", "uri": "https://example.com/weights.bin"},
    ]

    errors = invalid(validate_predicate(LINK, _link(materials=materials)), KIND_IN_TOTO_LINK)

    assert "$.materials: material name 'model.pt' appears 2 times" in errors
    assert "$.materials[2]: 'name' is a required property" in errors
    assert "$.materials[3]: 'digest' is a required property" in errors


def test_in_toto_link_needs_a_name_and_string_command() -> None:
    predicate = _link(command="python export.py")
    del predicate["name"]

    errors = invalid(validate_predicate(LINK, predicate), KIND_IN_TOTO_LINK)

    assert "$: 'name' is a required property" in errors
    assert "$.command: 'python export.py' is not of type 'array'" in errors


# ---------------------------------------------------------------- Linegate dataset provenance


def _dataset_provenance(**changes: Any) -> dict[str, Any]:
    predicate: dict[str, Any] = {
        "dataset": {
            "name": "press-line-3-surface-defects",
            "version": "2025.03",
            "digest": {"sha256": SHA256},
            "uri": "s3://optivision-datasets/press-line-3/2025.03.tar",
            "mediaType": "application/x-tar",
        },
        "producer": {"name": "OptiVision GmbH", "contact": "data@optivision.example"},
        "source": {
            "kind": "production-line",
            "description": "Images of stamped door panels at the end-of-line inspection station.",
            "sites": [{"site": "Plant Wolfsburg", "line": "Press line 3", "station": "EOL-2"}],
            "sensors": [
                {
                    "type": "camera-mono",
                    "model": "Basler acA2440",
                    "count": 4,
                    "settings": {"fps": 20},
                }
            ],
        },
        "collection": {
            "process": "Every 10th panel imaged under dome lighting; all rejected panels imaged.",
            "period": {"start": "2024-09-01T00:00:00Z", "end": "2025-02-28T23:59:59Z"},
            "samplingStrategy": "systematic 1-in-10 plus all rejects",
            "conditions": "three shifts, two die sets, summer and winter ambient temperature",
        },
        "licence": {
            "spdxExpression": "LicenseRef-OptiVision-Customer-Data",
            "restrictions": ["no resale"],
        },
        "personalData": {"present": False},
        "labelling": {
            "process": "Two quality inspectors label each defect; disagreements go to a third.",
            "performedBy": "in-house",
            "labelSet": ["ok", "scratch", "dent", "split"],
            "agreement": {"metric": "cohen-kappa", "value": 0.87},
        },
        "knownBiases": ["Winter months over-represented: 60 % of images."],
        "limitations": ["No images of the new aluminium die set introduced in March 2025."],
        "size": {
            "records": 120000,
            "bytes": 9_800_000_000,
            "classes": {"ok": 112000, "scratch": 8000},
        },
        "splits": [
            {"name": "train", "records": 96000},
            {"name": "validation", "records": 12000},
            {"name": "test", "records": 12000, "digest": {"sha256": SHA256}},
        ],
    }
    return {**predicate, **changes}


def test_dataset_provenance_validates_and_summarises() -> None:
    summary = valid(validate_predicate(DATASET, _dataset_provenance()), KIND_DATASET_PROVENANCE)

    assert summary["name"] == "press-line-3-surface-defects"
    assert summary["version"] == "2025.03"
    assert summary["sha256"] == SHA256
    assert summary["source_kind"] == "production-line"
    assert summary["collection_period"] == {
        "start": "2024-09-01T00:00:00Z",
        "end": "2025-02-28T23:59:59Z",
    }
    assert summary["licence"] == "LicenseRef-OptiVision-Customer-Data"
    assert summary["personal_data"] is False
    assert summary["legal_basis"] is None
    assert summary["records"] == 120000
    assert summary["splits"] == {"train": 96000, "validation": 12000, "test": 12000}
    assert summary["known_biases"] == ["Winter months over-represented: 60 % of images."]


def test_dataset_provenance_with_personal_data_needs_a_legal_basis() -> None:
    predicate = _dataset_provenance(personalData={"present": True, "categories": ["worker hands"]})

    errors = invalid(validate_predicate(DATASET, predicate), KIND_DATASET_PROVENANCE)
    assert errors == "$.personalData: 'legalBasis' is a required property"

    predicate["personalData"]["legalBasis"] = "legitimate-interests"
    summary = valid(validate_predicate(DATASET, predicate), KIND_DATASET_PROVENANCE)
    assert summary["legal_basis"] == "legitimate-interests"


def test_dataset_provenance_reports_every_error_with_its_path() -> None:
    predicate = _dataset_provenance()
    del predicate["licence"]
    predicate["dataset"]["digest"] = {"sha1": "ab" * 20}
    predicate["source"]["kind"] = "somewhere"
    predicate["size"]["records"] = -1
    predicate["collection"]["period"]["end"] = "next spring"
    predicate["license"] = {"spdxExpression": "MIT"}  # the American spelling is not a field

    result = validate_predicate(DATASET, predicate)

    errors = invalid(result, KIND_DATASET_PROVENANCE)
    assert "$: 'licence' is a required property" in errors
    assert "$: Additional properties are not allowed ('license' was unexpected)" in errors
    assert "$.dataset.digest: 'sha256' is a required property" in errors
    assert "$.source.kind: 'somewhere' is not one of" in errors
    assert "$.size.records: -1 is less than the minimum of 0" in errors
    assert "$.collection.period.end: 'next spring' is not a 'date-time'" in errors
    assert len(result.errors) == 6
    assert result.summary == {}


def test_dataset_provenance_checks_period_order_and_split_sizes() -> None:
    predicate = _dataset_provenance()
    predicate["collection"]["period"] = {
        "start": "2025-03-01T00:00:00Z",
        "end": "2025-02-01T00:00:00+01:00",
    }
    predicate["splits"].append({"name": "train", "records": 1000})

    errors = invalid(validate_predicate(DATASET, predicate), KIND_DATASET_PROVENANCE)

    assert "$.collection.period: ends (2025-02-01T00:00:00+01:00) before it starts" in errors
    assert "$.splits: the splits hold 121000 records, more than $.size.records (120000)" in errors
    assert "$.splits: split name 'train' appears 2 times" in errors


# ---------------------------------------------------------------- Linegate SLA evidence


def _sla_evidence(**changes: Any) -> dict[str, Any]:
    predicate: dict[str, Any] = {
        "agreement": {"reference": "SLA-OPTI-2025-004", "clause": "5.2"},
        "term": "model-performance",
        "period": {"start": "2025-04-01T00:00:00Z", "end": "2025-06-30T23:59:59Z"},
        "scope": {"product": "SurfaceInspector", "modelVersion": "3.4.1", "lines": ["press-3"]},
        "measurements": [
            {
                "metric": "defect-recall",
                "unit": "ratio",
                "committed": {"operator": ">=", "value": 0.98},
                "measured": 0.991,
                "met": True,
                "sampleSize": 4200,
                "method": "weekly golden-set replay",
                "evidence": ["golden-set-report"],
            },
            {
                "metric": "false-reject-rate",
                "unit": "percent",
                "committed": {"operator": "<=", "value": 1.5},
                "measured": 1.2,
                "evidence": ["golden-set-report", "mes-export"],
            },
        ],
        "evidence": [
            {
                "id": "golden-set-report",
                "kind": "report",
                "uri": "https://portal.optivision.example/reports/2025-q2.pdf",
                "digest": {"sha256": SHA256},
            },
            {"id": "mes-export", "kind": "monitoring-export", "digest": {"sha256": SHA256}},
        ],
        "met": True,
    }
    return {**predicate, **changes}


def test_sla_evidence_validates_and_summarises() -> None:
    summary = valid(validate_predicate(SLA, _sla_evidence()), KIND_SLA_EVIDENCE)

    assert summary["agreement"] == "SLA-OPTI-2025-004"
    assert summary["term"] == "model-performance"
    assert summary["period"] == {"start": "2025-04-01T00:00:00Z", "end": "2025-06-30T23:59:59Z"}
    assert summary["scope"]["modelVersion"] == "3.4.1"
    assert summary["measurements"][1] == {
        "metric": "false-reject-rate",
        "unit": "percent",
        "operator": "<=",
        "committed": 1.5,
        "measured": 1.2,
        "met": True,
    }
    assert summary["met"] is True
    assert [e["id"] for e in summary["evidence"]] == ["golden-set-report", "mes-export"]


def test_sla_evidence_for_a_missed_vulnerability_response_is_valid_and_not_met() -> None:
    predicate = _sla_evidence(
        term="vulnerability-response",
        measurements=[
            {
                "metric": "critical-cve-time-to-fix",
                "unit": "hours",
                "committed": {"operator": "<=", "value": 72},
                "measured": 96,
                "met": False,
                "evidence": ["mes-export"],
            }
        ],
        met=False,
    )

    summary = valid(validate_predicate(SLA, predicate), KIND_SLA_EVIDENCE)

    assert summary["met"] is False
    assert summary["measurements"][0]["met"] is False


def test_sla_evidence_flags_claims_the_numbers_contradict() -> None:
    predicate = _sla_evidence()
    predicate["measurements"][0]["measured"] = 0.95  # below the committed 0.98, still says met
    predicate["measurements"][1]["evidence"] = ["dashboard"]

    errors = invalid(validate_predicate(SLA, predicate), KIND_SLA_EVIDENCE)

    assert "$.measurements[0].met: says True but measured 0.95 >= committed 0.98 is False" in errors
    assert (
        "$.measurements[1].evidence: 'dashboard' is not the id of an entry in $.evidence" in errors
    )
    assert "$.met: says True but the measurements do not all meet their commitments" in errors


def test_sla_evidence_reports_every_schema_error_with_its_path() -> None:
    predicate = _sla_evidence(term="uptime-ish", measurements=[])
    predicate["evidence"][1] = {"id": "mes-export", "kind": "report"}
    predicate["period"] = {"start": "2025-04-01T00:00:00Z"}

    result = validate_predicate(SLA, predicate)

    errors = invalid(result, KIND_SLA_EVIDENCE)
    assert "$.term: 'uptime-ish' is not one of" in errors
    assert "$.measurements: [] should be non-empty" in errors
    assert "$.evidence[1]: needs at least one of digest, uri" in errors
    assert "$.period: 'end' is a required property" in errors
    assert len(result.errors) == 4


def test_sla_evidence_bad_operator_and_period_order() -> None:
    predicate = _sla_evidence(
        period={"start": "2025-06-30T00:00:00Z", "end": "2025-04-01T00:00:00Z"}
    )
    errors = invalid(validate_predicate(SLA, predicate), KIND_SLA_EVIDENCE)
    assert "$.period: ends (2025-04-01T00:00:00Z) before it starts (2025-06-30T00:00:00Z)" in errors

    predicate = _sla_evidence()
    predicate["measurements"][0]["committed"]["operator"] = "about"
    errors = invalid(validate_predicate(SLA, predicate), KIND_SLA_EVIDENCE)
    assert "$.measurements[0].committed.operator: 'about' is not one of" in errors


# ---------------------------------------------------------------- nothing escapes


def test_no_library_prints_while_validating_the_real_files(
    capfd: pytest.CaptureFixture[str],
) -> None:
    validate_document(SPDX_JSON, load("spdx/software-example11.spdx23.json"))
    validate_document(SPDX_JSON, load("spdx/ai-simplehtr.spdx3.json"))
    validate_document(CDX_JSON, load("cyclonedx/invalid-hash-alg-1.6.json"))
    validate_predicate(SLSA, load("slsa/slsa_predicate_v1_0.json"))
    broken = load("spdx/software-example11.spdx23.json")
    del broken["creationInfo"]
    validate_document(SPDX_JSON, broken)

    assert capfd.readouterr() == ("", "")
