"""Demo data for the reference scenario (shared/DESIGN.md), seeded by ``linegate up``.

Step 1: procurement onboards supplier Optivision with a signing key, a Sigstore identity, an
API client and an SLA (ML-BOM + SLSA provenance + dataset provenance for every model, refreshed
every 90 days, vulnerability response within 5 days). Step 2: Optivision attests model
``weld-seam-inspector`` 2.1.0: SLSA provenance, a CycloneDX 1.6 ML-BOM with a model card and
a dataset-provenance attestation, each an in-toto Statement in a DSSE envelope signed with its
key. Everything goes through the public HTTP API, as a real supplier's CI would, and seeding
is skipped when the supplier already exists. The files (the supplier's key, the model, the
envelopes) are left in ``<data_dir>/demo/`` for the README walkthrough.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from linegate.auth import Role, TokenIssuer
from linegate.settings import LinegateSettings
from linegate.signing import (
    IN_TOTO_PAYLOAD_TYPE,
    dsse_sign,
    load_or_create_private_key,
    public_key_pem,
)

SUPPLIER = "optivision"
MODEL_NAME = "weld-seam-inspector"
MODEL_VERSION = "2.1.0"


def build_demo_model(path: Path) -> Path:
    """A tiny real ONNX classifier (ok / porosity / crack) over 3x32x32 camera crops."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2026)
    weights = rng.normal(0, 0.5, size=(3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image", "axes"], ["pooled"], keepdims=0),
            helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
        ],
        "weld_seam_inspector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])],
        initializer=[
            numpy_helper.from_array(weights, "w"),
            numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="optivision"
    )
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def _ml_bom(digest: str) -> dict[str, Any]:
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "metadata": {"timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
        "components": [
            {
                "type": "machine-learning-model",
                "bom-ref": "weld-seam-inspector",
                "name": MODEL_NAME,
                "version": MODEL_VERSION,
                "supplier": {"name": "Optivision GmbH"},
                "hashes": [{"alg": "SHA-256", "content": digest}],
                "modelCard": {
                    "modelParameters": {
                        "task": "image-classification",
                        "architectureFamily": "linear",
                        "modelArchitecture": "pooled-colour linear classifier",
                        "inputs": [{"format": "image 3x32x32 float32"}],
                        "outputs": [{"format": "scores ok/porosity/crack"}],
                    },
                    "quantitativeAnalysis": {
                        "performanceMetrics": [
                            {"type": "recall", "value": "0.97", "slice": "crack"},
                            {"type": "recall", "value": "0.95", "slice": "porosity"},
                        ]
                    },
                    "considerations": {
                        "useCases": ["Release decision for weld seams on line 3"],
                        "technicalLimitations": [
                            "Trained under dome lighting; brightness drift degrades recall"
                        ],
                    },
                },
            }
        ],
    }


def _dataset_provenance(dataset_digest: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "dataset": {
            "name": "line3-weld-seams",
            "version": "2026.10",
            "digest": {"sha256": dataset_digest},
        },
        "source": {
            "kind": "production-line",
            "description": "Weld seam crops from line 3 cameras.",
        },
        "collection": {
            "process": "All rejected seams and every 20th passed seam imaged at station W3.",
            "period": {
                "start": (now - timedelta(days=200)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "end": (now - timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        },
        "licence": {"spdxExpression": "LicenseRef-Customer-Data"},
        "personalData": {"present": False},
        "labelling": {
            "process": "Two welding inspectors per image; a third resolves disagreements."
        },
        "knownBiases": ["Night shift under-represented (18 % of images)."],
        "limitations": ["No images from the new wire feeder installed in 2026-09."],
        "size": {"records": 48000, "classes": {"ok": 45000, "porosity": 1800, "crack": 1200}},
    }


def _slsa(digest: str) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "buildDefinition": {
            "buildType": "https://optivision.example/training/v1",
            "externalParameters": {
                "recipe": "configs/weld-seam-inspector.yaml",
                "revision": "4f2c9e1",
            },
            "resolvedDependencies": [
                {"uri": "dataset:line3-weld-seams@2026.10", "digest": {"sha256": digest}}
            ],
        },
        "runDetails": {
            "builder": {"id": "https://ci.optivision.example/training-runner"},
            "metadata": {"invocationId": "train-2041", "startedOn": now, "finishedOn": now},
        },
    }


def _envelope(
    key: Any, subject: dict[str, Any], predicate_type: str, predicate: dict[str, Any]
) -> bytes:
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [subject],
        "predicateType": predicate_type,
        "predicate": predicate,
    }
    return json.dumps(
        dsse_sign(json.dumps(statement).encode(), IN_TOTO_PAYLOAD_TYPE, key), indent=2
    ).encode()


def seed(settings: LinegateSettings, issuer: TokenIssuer) -> list[str]:
    """Seed the scenario once; returns what was done (empty when already seeded)."""
    url = settings.attestation_url
    staff = {"Authorization": "Bearer " + issuer.issue("pat.procurement", [Role.PROCUREMENT])[0]}
    supplier = {
        "Authorization": "Bearer "
        + issuer.issue("optivision-ci", [Role.SUPPLIER], tenant=SUPPLIER)[0]
    }
    demo = settings.data_dir / "demo"
    done: list[str] = []
    with httpx.Client(base_url=url, timeout=60) as http:
        if http.get(f"/v1/suppliers/{SUPPLIER}", headers=staff).status_code == 200:
            return done
        key = load_or_create_private_key(demo / "optivision.pem")
        (demo / "optivision.pub").write_bytes(public_key_pem(key.public_key()))
        contact = {"name": "Ana Weber", "email": "ana.weber@optivision.example", "role": "quality"}
        steps: list[tuple[str, str, dict[str, Any]]] = [
            (
                "POST",
                "/v1/suppliers",
                {"id": SUPPLIER, "name": "Optivision GmbH", "contacts": [contact]},
            ),
            (
                "POST",
                f"/v1/suppliers/{SUPPLIER}/keys",
                {"public_key_pem": public_key_pem(key.public_key()).decode()},
            ),
            (
                "POST",
                f"/v1/suppliers/{SUPPLIER}/identities",
                {
                    "issuer": "https://token.actions.githubusercontent.com",
                    "subject_pattern": r"https://github\.com/optivision/.+",
                },
            ),
            (
                "PUT",
                f"/v1/suppliers/{SUPPLIER}/sla",
                {
                    "required_evidence": {
                        "model": [
                            "slsa-provenance-v1",
                            "cyclonedx|spdx-3",
                            "linegate-dataset-provenance",
                        ]
                    },
                    "max_attestation_age_days": 90,
                    "vulnerability_response_days": 5,
                },
            ),
        ]
        for method, path, body in steps:
            http.request(method, path, json=body, headers=staff).raise_for_status()
        done.append("supplier optivision onboarded: key, Sigstore identity, SLA")
        client = http.post(
            f"/v1/suppliers/{SUPPLIER}/clients", json={"description": "demo CI"}, headers=staff
        )
        client.raise_for_status()
        (demo / "optivision-client.json").write_text(json.dumps(client.json(), indent=2))

        model = build_demo_model(demo / f"{MODEL_NAME}-{MODEL_VERSION}.onnx")
        digest = hashlib.sha256(model.read_bytes()).hexdigest()
        dataset_digest = hashlib.sha256(b"line3-weld-seams@2026.10 manifest").hexdigest()
        artefact = {
            "name": f"{MODEL_NAME} {MODEL_VERSION}",
            "kind": "model",
            "digest": f"sha256:{digest}",
        }
        http.post(
            f"/v1/suppliers/{SUPPLIER}/artefacts", json=artefact, headers=staff
        ).raise_for_status()
        subject = {"name": model.name, "digest": {"sha256": digest}}
        for name, predicate_type, predicate in (
            ("slsa", "https://slsa.dev/provenance/v1", _slsa(dataset_digest)),
            ("ml-bom", "https://cyclonedx.org/bom/v1.6", _ml_bom(digest)),
            (
                "dataset-provenance",
                "https://linegate.dev/attestation/dataset-provenance/v1",
                _dataset_provenance(dataset_digest),
            ),
        ):
            envelope = _envelope(key, subject, predicate_type, predicate)
            (demo / f"{name}.dsse.json").write_bytes(envelope)
            r = http.post(
                "/v1/attestations",
                content=envelope,
                headers={**supplier, "content-type": "application/vnd.dsse.envelope.v1+json"},
            )
            if r.status_code >= 400:
                raise RuntimeError(f"demo attestation {name} was rejected: {r.text}")
        done.append(
            f"{MODEL_NAME} {MODEL_VERSION} attested: SLSA provenance, CycloneDX ML-BOM, "
            "dataset provenance"
        )
    return done
