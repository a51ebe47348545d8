"""Signed statements holding text no database can store (U+0000, or an unpaired surrogate,
in a subject name, the predicate type or the predicate) are recorded rejections naming where,
on SQLite and PostgreSQL alike; on PostgreSQL they were a 500 from the driver, and nothing was
recorded."""

from __future__ import annotations

import json
from typing import Any

import pytest

from linegate.auth import Role
from tests.attestation.conftest import TESTDATA, sign, slsa_predicate, statement

SLSA = "https://slsa.dev/provenance/v1"
DIGEST = {"sha256": "ab" * 32}
SUBJECTS = [{"name": "model.onnx", "digest": DIGEST}]


@pytest.mark.parametrize(
    ("subjects", "predicate_type", "predicate", "where"),
    [
        ([{"name": "model\u0000.onnx", "digest": DIGEST}], SLSA, None, "subject.0.name"),
        (SUBJECTS, "https://example.test/predicate\u0000/v1", None, "predicateType"),
        (SUBJECTS, SLSA, {"note\u0000": "x"}, "predicate"),
        ([{"name": "model\ud800.onnx", "digest": DIGEST}], SLSA, None, "subject.0.name"),
    ],
    ids=["nul-subject-name", "nul-predicate-type", "nul-predicate-key", "surrogate-subject"],
)
async def test_unstorable_text_in_a_signed_statement_is_a_recorded_rejection(
    stack: Any, subjects: Any, predicate_type: str, predicate: Any, where: str
) -> None:
    key = await stack.onboard("optivision")
    payload = statement(subjects, predicate_type, {**slsa_predicate(), **(predicate or {})})
    r = await stack.upload("optivision", sign(key, payload))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert any("U+0000" in reason and where in reason for reason in problem["reasons"]), problem
    record = await stack.client.get(
        f"/v1/attestations/{problem['id']}", headers=stack.token(Role.PROCUREMENT)
    )
    assert record.status_code == 200, record.text
    assert record.json()["status"] == "rejected"


async def test_unstorable_text_in_an_sbom_is_a_recorded_rejection(stack: Any) -> None:
    """The same for a document parsed as a whole (an unsigned CycloneDX BOM)."""
    await stack.onboard("optivision", key=False)
    bom = json.loads((TESTDATA / "cyclonedx" / "valid-machine-learning-1.6.json").read_bytes())
    bom["components"][0]["name"] = "weld\u0000seam"
    r = await stack.upload(
        "optivision", json.dumps(bom).encode(), content_type="application/vnd.cyclonedx+json"
    )
    assert r.status_code == 400, r.text  # a malformed document, as one that is not JSON
    problem = r.json()
    assert any("document.components.0.name" in reason for reason in problem["reasons"]), problem
    record = await stack.client.get(
        f"/v1/attestations/{problem['id']}", headers=stack.token(Role.PROCUREMENT)
    )
    assert record.json()["status"] == "rejected"
