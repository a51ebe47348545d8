"""``linegate model push|validate|approve|release`` against a registry served over real HTTP."""

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from linegate.auth import Role
from linegate.testing.onnx_models import write_model_dir
from linegate_cli.main import app
from registry.app import create_app
from registry.settings import RegistrySettings
from tests.registry.conftest import golden_npz, system_body

MODEL = "weld-seam-inspector"


def cli(*args: Any, token: str) -> Any:
    return CliRunner().invoke(app, ["model", *map(str, args)], env={"LINEGATE_TOKEN": token})


@pytest.fixture
def registry_url(settings_factory: Any, serve_http: Any, mint_token: Any) -> str:
    url: str = serve_http(create_app(settings_factory(RegistrySettings)))
    qa = {"Authorization": "Bearer " + mint_token(Role.REGISTRY_APPROVE, sub="qa-lead")}
    with httpx.Client(base_url=url, headers=qa) as http:
        http.post("/v1/inventory/systems", json=system_body(tier=1)).raise_for_status()
        body = {"name": MODEL, "system_id": "weld-seam-qa-line3", "critical_classes": ["scratch"]}
        http.post("/v1/models", json=body).raise_for_status()
        for approver in ("alex-approver", "bea-approver"):  # tier 1: training is required
            training = {
                "person": approver,
                "role": "approver",
                "system_id": "weld-seam-qa-line3",
                "course": "Release approval",
                "valid_until": "2099-12-31T00:00:00Z",
            }
            http.post("/v1/competence", json=training).raise_for_status()
        http.post(
            f"/v1/models/{MODEL}/golden-sets",
            content=golden_npz(),
            headers={"content-type": "application/octet-stream"},
        ).raise_for_status()
    return url


def test_push_validate_approve_release(registry_url: str, mint_token: Any, tmp_path: Path) -> None:
    folder = write_model_dir(tmp_path / MODEL, version="2.1.0")
    metadata = tmp_path / "meta.json"
    metadata.write_text('{"limitations": "dome lighting only", "metrics": {"recall_crack": 0.97}}')
    uploader = mint_token(Role.REGISTRY_APPROVE, sub="dana-datasci")
    r = cli(
        "push",
        folder,
        "--model",
        MODEL,
        "--version",
        "2.1.0",
        "--security-version",
        2,
        "--metadata",
        metadata,
        "--registry",
        registry_url,
        token=uploader,
    )
    assert r.exit_code == 0, r.output
    assert re.search(
        r"pushed: weld-seam-inspector 2.1.0 \(draft\), sha256:[0-9a-f]{64}, security_version 2",
        r.output,
    )

    r = cli("validate", MODEL, "2.1.0", "--registry", registry_url, token=uploader)
    assert r.exit_code == 0, r.output
    assert "passed: weld-seam-inspector 2.1.0 on 60 golden samples, accuracy 1.000" in r.output

    r = cli(
        "approve",
        MODEL,
        "2.1.0",
        "--rationale",
        "I trained it and it is great",
        "--registry",
        registry_url,
        token=uploader,
    )
    assert r.exit_code == 1
    assert "may not approve" in r.output

    for sub in ("alex-approver", "bea-approver"):
        r = cli(
            "approve",
            MODEL,
            "2.1.0",
            "--rationale",
            "Golden set and defect probes reviewed",
            "--registry",
            registry_url,
            token=mint_token(Role.REGISTRY_APPROVE, sub=sub),
        )
        assert r.exit_code == 0, r.output
    assert "approved: weld-seam-inspector 2.1.0 is approved (2 of 2 approvals)" in r.output

    r = cli(
        "release",
        MODEL,
        "2.1.0",
        "--registry",
        registry_url,
        token=mint_token(Role.REGISTRY_APPROVE, sub="rel-manager"),
    )
    assert r.exit_code == 0, r.output
    assert r.output.startswith("released: weld-seam-inspector 2.1.0, sha256:")


def test_push_reports_the_registrys_reason(
    registry_url: str, mint_token: Any, tmp_path: Path
) -> None:
    folder = write_model_dir(tmp_path / MODEL)
    (folder / "model.onnx").write_bytes(b"definitely not onnx" * 10)
    token = mint_token(Role.REGISTRY_APPROVE, sub="dana-datasci")
    r = cli(
        "push",
        folder,
        "--model",
        MODEL,
        "--version",
        "9.9.9",
        "--registry",
        registry_url,
        "--quiet",
        token=token,
    )
    assert r.exit_code == 1
    assert "HTTP 422" in r.output
    assert "not a valid ONNX model" in r.output
    r = cli("validate", MODEL, "9.9.9", "--registry", registry_url, token=token)
    assert r.exit_code == 1
    assert "HTTP 404" in r.output
