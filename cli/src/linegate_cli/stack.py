"""The embedded stack behind ``linegate up`` / ``make run``.

Starts nats-server with JetStream in ``<data_dir>/nats`` and the four services as uvicorn
subprocesses, waits until every ``/readyz`` answers 200, prints the URLs and a token per role,
and on Ctrl-C (or SIGTERM, or any child dying) stops the services first, then NATS, and waits
for every process, so nothing is left behind.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlparse

import httpx

from linegate.auth import Role, TokenIssuer
from linegate.embedded import NatsServer
from linegate.nats_auth import render_server_config, write_server_config
from linegate.settings import LinegateSettings
from linegate.signing import load_or_create_private_key, public_key_pem
from linegate_cli import demo


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    app: str
    url: str


def services(settings: LinegateSettings) -> list[ServiceSpec]:
    return [
        ServiceSpec("attestation", "attestation.app:create_app", settings.attestation_url),
        ServiceSpec("registry", "registry.app:create_app", settings.registry_url),
        ServiceSpec("edge-gateway", "edge_gateway.app:create_app", settings.gateway_url),
        ServiceSpec("incident", "incident.app:create_app", settings.incident_url),
    ]


#: (label, role, tenant, device id) of the tokens printed at start-up.
DEMO_TOKENS: list[tuple[str, Role, str | None, str | None]] = [
    ("procurement", Role.PROCUREMENT, None, None),
    ("supplier (optivision)", Role.SUPPLIER, "optivision", None),
    ("registry:approve", Role.REGISTRY_APPROVE, None, None),
    ("device (line3-cam1)", Role.DEVICE, None, "line3-cam1"),
    ("responder", Role.RESPONDER, None, None),
    ("auditor", Role.AUDITOR, None, None),
    ("admin", Role.ADMIN, None, None),
]


class _StopRequestedError(Exception):
    pass


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise _StopRequestedError(signal.Signals(signum).name)


@dataclass(frozen=True)
class NatsAuth:
    """The embedded nats-server's authorisation: the services' user and the files the edge
    gateway keeps in step with its device inventory (``edge_gateway.nats_config``)."""

    user: str
    password: str
    config_file: Path
    pid_file: Path

    def env(self) -> dict[str, str]:
        return {
            "LINEGATE_NATS_USER": self.user,
            "LINEGATE_NATS_PASSWORD": self.password,
            "LINEGATE_NATS_AUTH_CONFIG": str(self.config_file),
            "LINEGATE_NATS_SERVER_PID_FILE": str(self.pid_file),
        }


def nats_auth(settings: LinegateSettings) -> NatsAuth:
    """Secure the embedded NATS: no anonymous access, services log in with a password made on
    first start (kept 0600 in the data dir), devices with their nkeys once registered."""
    directory = settings.data_dir / "nats-auth"
    password_file = directory / "service-password"
    if settings.nats_password:
        password = settings.nats_password
    elif password_file.exists():
        password = password_file.read_text().strip()
    else:
        password = secrets.token_urlsafe(24)
        write_server_config(password_file, password + "\n")
    auth = NatsAuth(
        user=settings.nats_user or "linegate",
        password=password,
        config_file=directory / "nats-server.conf",
        pid_file=directory / "nats-server.pid",
    )
    if not auth.config_file.exists():
        # Services only until the gateway renders its devices into it at start-up.
        text = render_server_config(devices=[], service_user=auth.user, service_password=password)
        write_server_config(auth.config_file, text)
    return auth


MAINTENANCE_KEY_SETTINGS = (
    "LINEGATE_MAINTENANCE_PUBLIC_KEY",
    "LINEGATE_MAINTENANCE_PUBLIC_KEY_FILE",
)


def demo_maintenance_key(settings: LinegateSettings) -> Path | None:
    """For the demo, a maintenance team key pair in ``<data_dir>/demo``, so the predictive
    maintenance chain's tickets are encrypted (JWE) rather than withheld; ``None`` when the
    operator configured the team's own public key. The private key stays with the demo's
    "maintenance team" (that directory), never with a service."""
    if any(os.environ.get(name) for name in MAINTENANCE_KEY_SETTINGS):
        return None
    directory = settings.data_dir / "demo"
    directory.mkdir(parents=True, exist_ok=True)
    private = load_or_create_private_key(directory / "maintenance-team.key.pem")
    public = directory / "maintenance-team.pub.pem"
    public.write_bytes(public_key_pem(private.public_key()))
    return public


def _spawn(
    spec: ServiceSpec,
    settings: LinegateSettings,
    auth: NatsAuth,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    url = urlparse(spec.url)
    env = dict(os.environ)
    env.setdefault("LINEGATE_DATA_DIR", str(settings.data_dir))
    env.setdefault("LINEGATE_NATS_URL", settings.nats_url)
    env.update(auth.env())
    env.update(extra_env or {})
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        spec.app,
        "--factory",
        "--host",
        url.hostname or "127.0.0.1",
        "--port",
        str(url.port),
        "--no-access-log",
        "--timeout-graceful-shutdown",
        "10",
    ]
    # Own process group: Ctrl-C goes to us, and we stop the children in order.
    return subprocess.Popen(cmd, env=env, start_new_session=True)


def _wait_ready(
    specs: list[ServiceSpec], procs: dict[str, subprocess.Popen[bytes]], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    pending = {s.name: s for s in specs}
    with httpx.Client(timeout=2.0) as client:
        while pending and time.monotonic() < deadline:
            for name, spec in list(pending.items()):
                if procs[name].poll() is not None:
                    raise RuntimeError(f"{name} exited with code {procs[name].returncode}")
                try:
                    if client.get(spec.url + "/readyz").status_code == 200:
                        del pending[name]
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
    if pending:
        raise TimeoutError("not ready in time: " + ", ".join(pending))


def _stop_all(procs: dict[str, subprocess.Popen[bytes]], nats: NatsServer) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for name, proc in procs.items():
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop in time; killing it", file=sys.stderr)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    nats.stop()


def _announce(
    settings: LinegateSettings, specs: list[ServiceSpec], issuer: TokenIssuer, *, seed: bool
) -> None:
    """Seed the demo (once), then print the URLs and a token per role."""
    if seed:
        for line in demo.seed(settings, issuer):
            print(f"demo data: {line}")
    print()
    for spec in specs:
        print(f"{spec.name:<13} {spec.url}   (docs {spec.url}/docs)")
    print(f"\ndata directory: {settings.data_dir.resolve()}")
    print(
        "\nDevelopment tokens (valid",
        settings.token_ttl_seconds // 60,
        "min; `linegate token --role ROLE` for more):",
    )
    for label, role, tenant, device_id in DEMO_TOKENS:
        sub = f"demo-{role.value.replace(':', '-')}"
        value, _ = issuer.issue(sub, [role], tenant=tenant, device_id=device_id)
        print(f"\n  {label}:\n  {value}")


def run(settings: LinegateSettings, *, wait: bool = True, seed_demo: bool = True) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    issuer = TokenIssuer.embedded(settings)  # creates the issuer key before services race for it
    nats_port = urlparse(settings.nats_url).port or 4222
    auth = nats_auth(settings)
    nats = NatsServer(
        settings.data_dir / "nats",
        port=nats_port,
        log_file=settings.data_dir / "nats.log",
        config_file=auth.config_file,
        pid_file=auth.pid_file,
    )
    specs = services(settings)
    extra_env: dict[str, str] = {}
    maintenance_key = demo_maintenance_key(settings) if seed_demo else None
    if maintenance_key is not None:
        extra_env["LINEGATE_MAINTENANCE_PUBLIC_KEY_FILE"] = str(maintenance_key)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        nats.start()
        print(f"nats-server (JetStream)  {settings.nats_url}   store {settings.data_dir / 'nats'}")
        for spec in specs:
            procs[spec.name] = _spawn(spec, settings, auth, extra_env)
        if wait:
            _wait_ready(specs, procs, timeout=90)
        _announce(settings, specs, issuer, seed=wait and seed_demo)
        if maintenance_key is not None:
            print(
                "demo data: maintenance tickets are encrypted (JWE) for the demo maintenance"
                f" team's key {maintenance_key}; its private key:"
                f" {maintenance_key.with_name('maintenance-team.key.pem')}"
            )
        print("\nLinegate is up. Press Ctrl-C to stop.", flush=True)
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(
                        f"{name} exited with code {proc.returncode}; stopping the stack",
                        file=sys.stderr,
                    )
                    return 1
            time.sleep(0.5)
    except _StopRequestedError as s:
        print(f"\n{s}: stopping Linegate...", flush=True)
    except (RuntimeError, TimeoutError, httpx.HTTPError) as e:
        print(f"error: {e}", file=sys.stderr)
        code = 1
    finally:
        _stop_all(procs, nats)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("all processes stopped.", flush=True)
    return code
