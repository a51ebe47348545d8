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
import time
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


LABELS = ("ok", "porosity", "crack")
INPUT_SHAPE = (1, 3, 32, 32)


def build_demo_model(folder: Path) -> Path:
    """The artefact folder of weld-seam-inspector 2.1.0: a tiny real ONNX classifier
    (ok / porosity / crack over 3x32x32 camera crops), its preprocessing config and model card."""
    from linegate.testing.onnx_models import build_classifier

    folder.mkdir(parents=True, exist_ok=True)
    build_classifier(folder / "model.onnx", input_shape=INPUT_SHAPE)
    preprocess = {
        "input": "image",
        "output": "probabilities",
        "shape": ["batch", 3, 32, 32],
        "layout": "NCHW",
        "scale": 1 / 255,
        "labels": list(LABELS),
    }
    (folder / "preprocess.json").write_text(json.dumps(preprocess, indent=2) + "\n")
    (folder / "model_card.md").write_text(
        f"# {MODEL_NAME} {MODEL_VERSION}\n\nWeld seam classifier for line 3 (demo model).\n\n"
        "- Classes: ok, porosity, crack\n"
        "- Limitation: trained under dome lighting; brightness drift degrades recall\n"
    )
    return folder


def golden_set_npz(path: Path) -> Path:
    """A golden set for the demo model: 40 labelled crops per class."""
    import numpy as np

    from linegate.testing.onnx_models import labelled_batch

    images, labels = labelled_batch(40, input_shape=INPUT_SHAPE, seed=7)
    with path.open("wb") as f:
        np.savez(f, inputs=images, labels=labels, label_names=np.array(LABELS))
    return path


def ml_bom_predicate(digest: str) -> dict[str, Any]:
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


def dataset_provenance_predicate(dataset_digest: str) -> dict[str, Any]:
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


def slsa_predicate(digest: str) -> dict[str, Any]:
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


def signed_statement(
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
    return (
        seed_supplier(settings, issuer)
        + seed_registry(settings, issuer)
        + seed_incident(settings, issuer)
        + seed_edge(settings, issuer)
    )


#: Step 5's triage: who owns which kind of AI incident (a named person per queue).
ROUTING = [
    ("defect_escape", "qa", "Lena Hoffmann", "QA owns escaped defects"),
    ("defect_escape", "data_science", "Dana Richter", "escapes mean the model is wrong"),
    ("scrap_spike", "qa", "Lena Hoffmann", "scrap is a quality KPI"),
    ("override_cluster", "qa", "Lena Hoffmann", "operators disagree with the model"),
    ("operator_feedback", "qa", "Lena Hoffmann", "line staff report wrong outputs"),
    ("drift", "data_science", "Dana Richter", "distribution shift is a model question"),
    ("confidence_collapse", "data_science", "Dana Richter", "model health"),
    ("rollout_abort", "data_science", "Dana Richter", "a candidate failed its canary"),
    ("sensor_degradation", "ot", "Jonas Weber", "cameras and lighting are OT's"),
    ("pdm_alert", "ot", "Jonas Weber", "maintenance of the line"),
    ("security", "ot", "Jonas Weber", "signature or update failures on devices"),
]


def seed_incident(settings: LinegateSettings, issuer: TokenIssuer) -> list[str]:
    """Routing rules for step 5: QA, OT and data-science queues with named owners."""
    admin = {"Authorization": "Bearer " + issuer.issue("demo-admin", [Role.ADMIN])[0]}
    with httpx.Client(base_url=settings.incident_url, timeout=30) as http:
        if http.get("/v1/routing-rules", headers=admin).json():
            return []
        for incident_type, queue, owner, reason in ROUTING:
            rule = {
                "incident_type": incident_type,
                "queue": queue,
                "owner": owner,
                "acknowledge_within_minutes": 15,
                "escalation": [{"owner": "Petra Schulz", "acknowledge_within_minutes": 60}],
                "reason": reason,
            }
            http.post("/v1/routing-rules", json=rule, headers=admin).raise_for_status()
    return [f"{len(ROUTING)} incident routing rules (QA, OT, data science)"]


DEVICE = {"id": "line3-cam1", "plant": "wolfsburg", "line": "line3", "station": "W3"}


def seed_edge(settings: LinegateSettings, issuer: TokenIssuer) -> list[str]:
    """Step 4's device: ``line3-cam1`` registered, its nkey seed and the keys it pins written
    to ``<data_dir>/demo/devices/``, and 2.1.0 assigned to line 3 once the gateway has it."""
    admin = {"Authorization": "Bearer " + issuer.issue("demo-admin", [Role.ADMIN])[0]}
    ops = {"Authorization": "Bearer " + issuer.issue("jonas.weber", [Role.REGISTRY_APPROVE])[0]}
    devices = settings.data_dir / "demo" / "devices"
    with httpx.Client(base_url=settings.gateway_url, timeout=30) as http:
        if http.get(f"/v1/devices/{DEVICE['id']}", headers=admin).status_code == 200:
            return []
        r = http.post("/v1/devices", json=DEVICE, headers=admin)
        r.raise_for_status()
        devices.mkdir(parents=True, exist_ok=True)
        creds = devices / f"{DEVICE['id']}.nk"
        creds.write_text(r.json()["nkey_seed"] + "\n")
        creds.chmod(0o600)
        release_keys = http.get("/v1/release-keys").json()["keys"]
        (devices / "gateway.pub.pem").write_text(release_keys[0])
        registry_keys = httpx.get(f"{settings.registry_url}/v1/signing-keys", timeout=30).json()
        (devices / "registry.pub.pem").write_text(registry_keys["keys"][0]["public_key_pem"])
        done = [
            f"device {DEVICE['id']} registered; run it with: linegate agent --device-id "
            f"{DEVICE['id']} --creds {creds} --release-key {devices / 'gateway.pub.pem'} "
            f"--model-key {devices / 'registry.pub.pem'} --line line3 --serve-port 8110"
        ]
        assignment = {
            "model": MODEL_NAME,
            "version": MODEL_VERSION,
            "selector": {"line": "line3"},
            "reason": "demo: line 3 runs the released 2.1.0",
        }
        # The gateway copies the release into the object store when the registry's event
        # arrives; assign once it has.
        for _ in range(60):
            r = http.post("/v1/assignments", json=assignment, headers=ops)
            if r.status_code < 400:
                done.append(f"{MODEL_NAME} {MODEL_VERSION} assigned to line 3")
                break
            time.sleep(0.5)
        else:
            done.append(f"{MODEL_NAME} {MODEL_VERSION} not assigned yet: {r.text}")
    return done


SYSTEM = {
    "id": "weld-seam-qa-line3",
    "name": "Weld seam inspection, line 3",
    "purpose": "Classify weld seams as ok, porosity or crack from end-of-line camera crops",
    "intended_use": "Automated part release on line 3; rejects are re-inspected by a welder",
    "deployment_context": "Line 3 camera station W3, three shifts, dome lighting",
    "decision_influenced": "Whether a welded part is released to the next station",
    "consequence_if_wrong": "A defective seam ships in a safety component",
    "eu_category": "high_risk",
    "eu_basis": "Annex I: Regulation (EU) 2023/1230 (machinery), safety component",
    "eu_rationale": "The model decides the release of safety-relevant welded parts",
    "nist_tier": 1,
    "owner": {"name": "Lena Hoffmann", "email": "lena.hoffmann@plant.example", "role": "QA"},
    "provider": "linegate",
    "supplier_id": SUPPLIER,
    "lines": ["line3"],
}


def seed_registry(settings: LinegateSettings, issuer: TokenIssuer) -> list[str]:
    """Step 3: QA registers the system; the model is pushed, signed, validated on its golden
    set, approved by two people who did not upload it, and released."""

    def auth(sub: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + issuer.issue(sub, [Role.REGISTRY_APPROVE])[0]}

    demo = settings.data_dir / "demo"
    folder = demo / f"{MODEL_NAME}-{MODEL_VERSION}"
    qa = auth("lena.hoffmann")
    done: list[str] = []
    with httpx.Client(base_url=settings.registry_url, timeout=120) as http:
        if http.get(f"/v1/inventory/systems/{SYSTEM['id']}", headers=qa).status_code == 200:
            return done
        http.post("/v1/inventory/systems", json=SYSTEM, headers=qa).raise_for_status()
        line = {
            "name": MODEL_NAME,
            "system_id": SYSTEM["id"],
            "critical_classes": ["porosity", "crack"],
            "tolerance": 0.02,
            "good_class": "ok",
        }
        http.post("/v1/models", json=line, headers=qa).raise_for_status()
        # Tier 1: approvals need current approver training (the competence register); each
        # approver's training is recorded by someone else (QA by its trainer, the rest by QA).
        # Responders approving corrective actions need responder training (the incident
        # service asks the register at every approval), operators overriding a decision on a
        # device override training.
        trainings = (
            ("jonas.weber", "approver", qa, "Release approval and human oversight", "QA-AI-101"),
            ("lena.hoffmann", "approver", auth("tom.trainer"), "Release approval", "QA-AI-101"),
            ("rita", "responder", qa, "AI incident response and corrective actions", "QA-AI-201"),
            ("sam", "responder", qa, "AI incident response and corrective actions", "QA-AI-201"),
            # The device checks overrides against this, signed into its desired state.
            ("lena.line-lead", "override", qa, "When to trust and override the model", "OP-AI-301"),
        )
        for person, role, recorder, course, record in trainings:
            training = {
                "person": person,
                "role": role,
                "system_id": SYSTEM["id"],
                "course": f"{course} for weld-seam inspection",
                "evidence": f"LMS record {record}",
                "valid_until": (datetime.now(UTC) + timedelta(days=365)).isoformat(),
            }
            http.post("/v1/competence", json=training, headers=recorder).raise_for_status()
        golden = golden_set_npz(demo / "golden-set.npz")
        http.post(
            f"/v1/models/{MODEL_NAME}/golden-sets",
            content=golden.read_bytes(),
            params={"description": "line 3 weld seams, 40 per class"},
            headers={**qa, "content-type": "application/octet-stream"},
        ).raise_for_status()
        done.append(
            "AI system weld-seam-qa-line3 in the inventory (high-risk, NIST tier 1); approver "
            "training of jonas.weber and lena.hoffmann, responder training of rita and sam, "
            "override training of lena.line-lead, in the competence register"
        )
        uploader = auth("dana.datasci")
        files = {
            part: (name, (folder / name).read_bytes())
            for part, name in (
                ("model", "model.onnx"),
                ("preprocess", "preprocess.json"),
                ("model_card", "model_card.md"),
            )
        }
        metadata = {
            "version": MODEL_VERSION,
            "security_version": 3,
            "code_revision": {
                "repository": "https://git.optivision.example/weld",
                "revision": "4f2c9e1",
            },
            "training_parameters": {"epochs": 40, "optimizer": "adam"},
            "metrics": {"recall_crack": 0.97, "recall_porosity": 0.95},
            "limitations": "Trained under dome lighting; brightness drift degrades recall",
            "intended_use": "Release decision for weld seams on line 3",
            "predetermined_changes": "Retraining on new line-3 data with the same architecture",
        }
        files["metadata"] = ("metadata.json", json.dumps(metadata).encode())
        path = f"/v1/models/{MODEL_NAME}/versions"
        http.post(path, files=files, headers=uploader).raise_for_status()
        version = f"{path}/{MODEL_VERSION}"
        http.post(f"{version}/validate", headers=qa).raise_for_status()
        for approver, why in (
            ("jonas.weber", "Golden set incl. synthetic porosity and crack probes reviewed"),
            ("lena.hoffmann", "Evidence complete: SLSA, ML-BOM and dataset provenance verified"),
        ):
            body = {"decision": "approve", "rationale": why}
            http.post(f"{version}/approvals", json=body, headers=auth(approver)).raise_for_status()
        r = http.post(f"{version}/release", json={"note": "demo release"}, headers=qa)
        if r.status_code >= 400:
            raise RuntimeError(f"demo release was refused: {r.text}")
        done.append(
            f"{MODEL_NAME} {MODEL_VERSION} pushed, signed, validated, approved by two, released"
        )
    return done


def seed_supplier(settings: LinegateSettings, issuer: TokenIssuer) -> list[str]:
    """Steps 1-2: Optivision onboarded and its attestations for 2.1.0 uploaded (once)."""
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

        model = build_demo_model(demo / f"{MODEL_NAME}-{MODEL_VERSION}") / "model.onnx"
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
            ("slsa", "https://slsa.dev/provenance/v1", slsa_predicate(dataset_digest)),
            ("ml-bom", "https://cyclonedx.org/bom/v1.6", ml_bom_predicate(digest)),
            (
                "dataset-provenance",
                "https://linegate.dev/attestation/dataset-provenance/v1",
                dataset_provenance_predicate(dataset_digest),
            ),
        ):
            envelope = signed_statement(key, subject, predicate_type, predicate)
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
