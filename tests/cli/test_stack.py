"""``linegate up`` end to end: real nats-server and four uvicorn processes, then Ctrl-C."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from linegate.auth import TokenValidator
from linegate.embedded import free_port
from linegate.settings import LinegateSettings

LINEGATE = Path(sys.executable).parent / "linegate"
MODEL = "weld-seam-inspector"


def _processes_mentioning(needle: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            pids.append(int(proc.name))
    return pids


@pytest.fixture
def stack_env(tmp_path):
    ports = {
        name: free_port() for name in ("nats", "attestation", "registry", "gateway", "incident")
    }
    env = dict(os.environ)
    env.update(
        {
            "LINEGATE_DATA_DIR": str(tmp_path / "lg"),
            "LINEGATE_NATS_URL": f"nats://127.0.0.1:{ports['nats']}",
            "LINEGATE_ATTESTATION_URL": f"http://127.0.0.1:{ports['attestation']}",
            "LINEGATE_REGISTRY_URL": f"http://127.0.0.1:{ports['registry']}",
            "LINEGATE_GATEWAY_URL": f"http://127.0.0.1:{ports['gateway']}",
            "LINEGATE_INCIDENT_URL": f"http://127.0.0.1:{ports['incident']}",
        }
    )
    return env, ports


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_up_serves_every_service_and_ctrl_c_leaves_no_process(stack_env, tmp_path):
    env, ports = stack_env
    log_path = tmp_path / "up.log"
    with log_path.open("w") as out:
        proc = subprocess.Popen(
            [str(LINEGATE), "up"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "Linegate is up" not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.3)
        log = log_path.read_text()
        assert "Linegate is up" in log, log
        for name in ("attestation", "registry", "gateway", "incident"):
            r = httpx.get(f"http://127.0.0.1:{ports[name]}/readyz", timeout=5)
            assert r.status_code == 200, (name, r.text)
        assert "supplier (optivision):" in log
        assert "demo data: weld-seam-inspector 2.1.0 attested" in log
        assert "demo data: weld-seam-inspector 2.1.0 pushed, signed, validated" in log
        keys = httpx.get(f"http://127.0.0.1:{ports['registry']}/v1/signing-keys", timeout=5)
        assert keys.json()["keys"][0]["public_key_pem"].startswith("-----BEGIN PUBLIC KEY")
        assert (tmp_path / "lg" / "demo" / "weld-seam-inspector-2.1.0" / "model.onnx").is_file()
        # The demo's maintenance team key: tickets are encrypted for it, not withheld.
        team_key = tmp_path / "lg" / "demo" / "maintenance-team.key.pem"
        assert team_key.stat().st_mode & 0o077 == 0
        assert (tmp_path / "lg" / "demo" / "maintenance-team.pub.pem").is_file()
        assert "encrypted (JWE) for the demo maintenance team's key" in log
        assert "maintenance tickets are withheld" not in log
        assert (tmp_path / "lg" / "nats" / "jetstream").is_dir()
        assert len(_processes_mentioning(str(tmp_path / "lg"))) >= 1  # nats-server's store dir
        assert "incident routing rules (QA, OT, data science)" in log
        assert f"{MODEL} 2.1.0 assigned to line 3" in log, log
        # The embedded NATS takes no anonymous clients: services use a password, devices nkeys.
        with socket.create_connection(("127.0.0.1", ports["nats"]), timeout=5) as s:
            info = json.loads(s.recv(4096).decode().removeprefix("INFO ").strip())
        assert info.get("auth_required") is True, info
        # Step 4: the demo device, with the files the demo wrote, installs the release.
        devices = tmp_path / "lg" / "demo" / "devices"
        agent_cmd = [
            *(str(LINEGATE), "agent", "--device-id", "line3-cam1"),
            *("--creds", str(devices / "line3-cam1.nk")),
            *("--release-key", str(devices / "gateway.pub.pem")),
            *("--model-key", str(devices / "registry.pub.pem")),
            *("--state-dir", str(tmp_path / "agent")),
        ]
        with (tmp_path / "agent.log").open("w") as agent_out:
            agent = subprocess.Popen(agent_cmd, env=env, stdout=agent_out, stderr=subprocess.STDOUT)
        try:
            admin = subprocess.run(
                [str(LINEGATE), "token", "--role", "admin"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            device: dict[str, object] = {}
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                device = httpx.get(
                    f"http://127.0.0.1:{ports['gateway']}/v1/devices/line3-cam1",
                    headers={"Authorization": f"Bearer {admin}"},
                    timeout=5,
                ).json()
                if device.get("active_version") == "2.1.0":
                    break
                assert agent.poll() is None, (tmp_path / "agent.log").read_text()
                time.sleep(0.5)
            assert device.get("active_version") == "2.1.0", (
                device,
                (tmp_path / "agent.log").read_text(),
            )
        finally:
            agent.terminate()
            agent.wait(timeout=30)

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "all processes stopped." in log_path.read_text()
    leftovers = _processes_mentioning(str(tmp_path / "lg")) + [
        pid for port in ports.values() for pid in _processes_mentioning(f"--port {port}")
    ]
    assert leftovers == []


def test_token_command_prints_a_token_the_services_accept(tmp_path):
    env = dict(os.environ, LINEGATE_DATA_DIR=str(tmp_path))
    result = subprocess.run(
        [str(LINEGATE), "token", "--role", "supplier", "--tenant", "acme", "--sub", "ci"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    token = result.stdout.strip()
    import asyncio

    principal = asyncio.run(
        TokenValidator.from_settings(LinegateSettings(data_dir=tmp_path)).validate(token)
    )
    assert (principal.subject, principal.tenant) == ("ci", "acme")


def test_token_command_refuses_with_an_external_issuer(tmp_path):
    env = dict(
        os.environ,
        LINEGATE_DATA_DIR=str(tmp_path),
        LINEGATE_AUTH_JWKS_URL="https://idp.example/jwks",
    )
    result = subprocess.run(
        [str(LINEGATE), "token", "--role", "admin"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "external token issuer" in result.stderr


def test_token_command_refuses_a_supplier_without_tenant(tmp_path):
    env = dict(os.environ, LINEGATE_DATA_DIR=str(tmp_path))
    result = subprocess.run(
        [str(LINEGATE), "token", "--role", "supplier"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "tenant" in result.stderr
