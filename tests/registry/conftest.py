"""Fixtures for the registry: a running app on real NATS and a real database, tiny real ONNX
models, and a helper that drives the public API the way QA, data science and approvers do."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from linegate.auth import Role
from linegate.testing.fixtures import bearer
from linegate.testing.onnx_models import labelled_batch, write_model_dir
from registry.app import create_app
from registry.settings import RegistrySettings

MODEL = "weld-seam-inspector"
SYSTEM = "weld-seam-qa-line3"
LABELS = ("ok", "scratch", "dent")
#: The approvers the tests use; create_system records their training on the system.
APPROVERS = ("alex-approver", "bea-approver")


def system_body(
    system_id: str = SYSTEM, *, tier: int = 1, category: str = "minimal"
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": system_id,
        "name": "Weld seam inspection, line 3",
        "purpose": "Detect porosity and cracks in weld seams from camera crops",
        "intended_use": "Automated part release on line 3, with manual re-inspection of rejects",
        "deployment_context": "Line 3 end-of-line camera station, three shifts",
        "decision_influenced": "Whether a welded part is released to the next station",
        "consequence_if_wrong": "A defective seam ships in a safety component",
        "eu_category": category,
        "eu_rationale": "Safety component of machinery under Regulation (EU) 2023/1230",
        "nist_tier": tier,
        "owner": {"name": "Maria Keller", "email": "maria.keller@plant.example"},
    }
    if category == "high_risk":
        body["eu_basis"] = "Annex I: Regulation (EU) 2023/1230 (machinery), safety component"
    return body


def golden_npz(n_per_class: int = 20, seed: int = 1) -> bytes:
    images, labels = labelled_batch(n_per_class, seed=seed)
    buffer = io.BytesIO()
    np.savez(buffer, inputs=images, labels=labels, label_names=np.array(LABELS))
    return buffer.getvalue()


def multipart(metadata: dict[str, Any] | bytes | None, files: dict[str, bytes]) -> dict[str, Any]:
    parts: dict[str, Any] = {}
    if metadata is not None:
        raw = metadata if isinstance(metadata, bytes) else json.dumps(metadata).encode()
        parts["metadata"] = ("metadata.json", raw, "application/json")
    for name, data in files.items():
        parts[name] = (name, data, "application/octet-stream")
    return {"files": parts}


@dataclass
class RegistryClient:
    client: Any
    app: Any
    mint: Any
    tmp: Path

    def auth(self, *roles: Role, sub: str = "qa-lead") -> dict[str, str]:
        return bearer(self.mint(*(roles or (Role.REGISTRY_APPROVE,)), sub=sub))

    async def create_system(
        self, *, trained: tuple[str, ...] = APPROVERS, **kw: Any
    ) -> dict[str, Any]:
        """Add the system and record current approver training for ``trained`` on it."""
        body = system_body(**kw)
        r = await self.client.post("/v1/inventory/systems", json=body, headers=self.auth())
        assert r.status_code == 201, r.text
        for person in trained:
            await self.train(person, system_id=body["id"])
        return r.json()  # type: ignore[no-any-return]

    async def train(
        self,
        person: str,
        *,
        system_id: str = SYSTEM,
        role: str = "approver",
        valid_until: str = "2099-12-31T00:00:00Z",
        **kw: Any,
    ) -> Any:
        body = {
            "person": person,
            "role": role,
            "system_id": system_id,
            "course": "Release approval for AI inspection systems",
            "valid_until": valid_until,
            **kw,
        }
        r = await self.client.post("/v1/competence", json=body, headers=self.auth())
        assert r.status_code == 201, r.text
        return r.json()

    async def create_model(self, name: str = MODEL, system_id: str = SYSTEM, **kw: Any) -> Any:
        body = {"name": name, "system_id": system_id, "critical_classes": ["scratch"], **kw}
        r = await self.client.post("/v1/models", json=body, headers=self.auth())
        assert r.status_code == 201, r.text
        return r.json()

    def model_dir(self, version: str, *, bad_class: int | None = None) -> Path:
        return write_model_dir(
            self.tmp / f"src-{version}-{bad_class}", version=version, bad_class=bad_class
        )

    def artefact(self, version: str, *, bad_class: int | None = None) -> dict[str, bytes]:
        folder = self.model_dir(version, bad_class=bad_class)
        return {
            "model": (folder / "model.onnx").read_bytes(),
            "preprocess": (folder / "preprocess.json").read_bytes(),
            "model_card": (folder / "model_card.md").read_bytes(),
        }

    async def push(
        self,
        version: str,
        *,
        files: dict[str, bytes] | None = None,
        metadata: dict[str, Any] | bytes | None = None,
        sub: str = "dana-datasci",
        name: str = MODEL,
        bad_class: int | None = None,
        **meta: Any,
    ) -> Any:
        if metadata is None:
            metadata = {
                "version": version,
                "code_revision": {"repository": "git@example:weld.git", "revision": "abc123"},
                "metrics": {"accuracy": 0.99},
                **meta,
            }
        return await self.client.post(
            f"/v1/models/{name}/versions",
            **multipart(metadata, files or self.artefact(version, bad_class=bad_class)),
            headers=self.auth(sub=sub),
        )

    async def add_golden_set(self, name: str = MODEL, data: bytes | None = None) -> Any:
        return await self.client.post(
            f"/v1/models/{name}/golden-sets",
            content=data if data is not None else golden_npz(),
            headers={**self.auth(), "content-type": "application/octet-stream"},
        )

    async def validate(self, version: str, name: str = MODEL) -> Any:
        return await self.client.post(
            f"/v1/models/{name}/versions/{version}/validate", headers=self.auth()
        )

    async def decide(
        self,
        version: str,
        sub: str,
        decision: str = "approve",
        rationale: str = "Golden set and synthetic defects reviewed; no regression found.",
        name: str = MODEL,
    ) -> Any:
        return await self.client.post(
            f"/v1/models/{name}/versions/{version}/approvals",
            json={"decision": decision, "rationale": rationale},
            headers=self.auth(sub=sub),
        )

    async def release(self, version: str, name: str = MODEL, sub: str = "rel-manager") -> Any:
        return await self.client.post(
            f"/v1/models/{name}/versions/{version}/release",
            json={"note": "night-shift canary first"},
            headers=self.auth(sub=sub),
        )

    async def version(self, version: str, name: str = MODEL) -> Any:
        r = await self.client.get(f"/v1/models/{name}/versions/{version}", headers=self.auth())
        assert r.status_code == 200, r.text
        return r.json()

    async def to_validated(self, version: str, **push: Any) -> None:
        r = await self.push(version, **push)
        assert r.status_code == 201, r.text
        r = await self.validate(version)
        assert r.status_code == 201, r.text
        assert r.json()["passed"], r.json()["report"]["reasons"]

    async def to_released(self, version: str, **push: Any) -> None:
        await self.to_validated(version, **push)
        for approver in ("alex-approver", "bea-approver"):
            r = await self.decide(version, approver)
            assert r.status_code == 201, r.text
        r = await self.release(version)
        assert r.status_code == 200, r.text


@pytest.fixture
def registry_settings(settings_factory: Any) -> Any:
    def make(**overrides: Any) -> RegistrySettings:
        settings: RegistrySettings = settings_factory(RegistrySettings, **overrides)
        return settings

    return make


@pytest.fixture
async def registry(
    registry_settings: Any, service_client: Any, mint_token: Any, tmp_path: Path
) -> Any:
    app = create_app(registry_settings())
    async with service_client(app) as client:
        yield RegistryClient(client=client, app=app, mint=mint_token, tmp=tmp_path)
