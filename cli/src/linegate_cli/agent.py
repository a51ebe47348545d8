"""``linegate agent``: the device agent that installs verified models on a line device.

The agent watches its desired state (signed TUF release metadata in the KV bucket ``desired``,
under its own device id), and for each new release:

1. verifies the metadata with the gateway's pinned key: signature, expiry, and anti-rollback
   against the security_version it runs (a lower one only with a signed rollback instruction);
2. downloads every file from the object store into a staging slot, streamed and resumable, never
   accepting more bytes than signed, and checks each length and SHA-256;
3. verifies the OpenSSF model-signing bundle with the registry's pinned key (or CA chain, and then
   optionally the signer identity it must carry), and that its manifest is the one the release
   metadata names (no mix-and-match);
4. loads the model with onnxruntime and runs a self-test;
5. swaps atomically: the ``current`` symlink is replaced in one rename; the previous release
   stays on disk (N-1) with the last known good one, so a rollback needs no network.

Every step is reported on ``linegate.device.<id>.status`` (downloaded, verified, self_test,
active, refused with the reason, rolled_back). A refusal leaves the running model untouched.

The gateway binds each desired-state document to the device (its id and a revision that only
grows: an older or unbound document is a replay and refused). The binding also carries:

- ``control``: an approved incident's order, applied before anything is installed (it is
  safety-relevant even if the install fails) and written to ``control.json``, which the local
  inference API obeys (every part to manual inspection; a confidence threshold);
- ``shadow``: a candidate's own signed metadata. The agent verifies, stages and self-tests it
  like a release and points the ``shadow`` link at it; the inference API runs it on the same
  inputs as the active model and reports where they disagree, but only the active one decides.

The document may also carry the override roster of the model's AI system (who holds
``override`` training until when, and the system's NIST tier; see
:mod:`linegate.release_metadata`). The agent writes it to ``competence.json`` before anything
is installed (a revoked training must stop counting at once) and the inference API checks every
operator override against it at the moment of the override, offline: refused on a tier 1 (or
unclassified) system without current training, accepted and flagged on tiers 2 and 3. A
document without a roster removes the file, and then no override is accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from linegate.events import DeviceStatusV1, Subjects
from linegate.modelsig import ModelSignatureError, verify_model_pinned
from linegate.objstore import ObjectTransferError, download
from linegate.release_metadata import (
    Release,
    ReleaseMetadataError,
    check_file,
    verify_release,
)

log = logging.getLogger("linegate.agent")
MODELS_BUCKET = "models"
SIGNATURE_FILE = "model.sig"
MODEL_FILE = "model.onnx"
#: What an incident ordered the device to do (written atomically; read by the inference API).
CONTROL_FILE = "control.json"
#: The override roster of the signed desired state (written atomically; read by the inference
#: API's competence check).
COMPETENCE_FILE = "competence.json"

Report = Callable[[DeviceStatusV1], Awaitable[None]]


@dataclass
class Installed:
    model: str
    version: str
    security_version: int
    slot: str
    installed_at: str


@dataclass
class AgentState:
    """What the device runs, kept in ``<state_dir>/state.json`` (written atomically)."""

    active: Installed | None = None
    previous: Installed | None = None
    last_known_good: Installed | None = None
    security_version: int = 0
    #: After a rollback away from security_version N, releases up to N stay refused unless they
    #: carry their own rollback instruction: a replay of the revoked release cannot return.
    blocked_up_to: int = 0
    #: The candidate running in shadow (never deciding), if any.
    shadow: Installed | None = None
    #: Revision of the newest device-bound desired state applied; older ones are replays.
    revision: int = 0
    #: The incident order in force (the device binding's ``control``), if any.
    control: dict[str, Any] | None = None
    history: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> AgentState:
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())

        def installed(value: Any) -> Installed | None:
            return Installed(**value) if value else None

        return cls(
            active=installed(raw.get("active")),
            previous=installed(raw.get("previous")),
            last_known_good=installed(raw.get("last_known_good")),
            security_version=int(raw.get("security_version", 0)),
            blocked_up_to=int(raw.get("blocked_up_to", 0)),
            shadow=installed(raw.get("shadow")),
            revision=int(raw.get("revision", 0)),
            control=raw.get("control"),
            history=list(raw.get("history", [])),
        )

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w") as f:
            json.dump(asdict(self), f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)


class Refused(Exception):
    """A release the device will not install; the message is reported as the reason."""


class DeviceAgent:
    def __init__(
        self,
        device_id: str,
        state_dir: Path,
        *,
        js: Any,
        release_keys: Sequence[ec.EllipticCurvePublicKey],
        model_key_paths: Sequence[Path],
        report: Report,
        download_timeout: float = 30.0,
        model_identity: str | None = None,
    ) -> None:
        self.device_id = device_id
        self.state_dir = state_dir
        self.js = js
        self.release_keys = list(release_keys)
        self.model_key_paths = list(model_key_paths)
        #: The signer a certificate-signed model must name (SAN or subject, the ``identity``
        #: ``GET /v1/signing-keys`` publishes): a pinned CA chain alone would also pass a model
        #: signed by any other certificate that CA issued. A pinned bare key is its own
        #: identity, so this does not apply to key signatures.
        self.model_identity = model_identity
        self._report = report
        self.download_timeout = download_timeout
        (state_dir / "slots").mkdir(parents=True, exist_ok=True)
        (state_dir / "staging").mkdir(parents=True, exist_ok=True)
        self.state = AgentState.load(self.state_path)

    @property
    def state_path(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def current(self) -> Path:
        """The active model folder (a symlink swapped atomically)."""
        return self.state_dir / "current"

    @property
    def shadow(self) -> Path:
        """The shadow candidate's model folder (a symlink), while there is one."""
        return self.state_dir / "shadow"

    async def report(self, state: str, release: Release | None = None, detail: str = "") -> None:
        await self._report(
            DeviceStatusV1(
                device_id=self.device_id,
                state=state,
                model=release.model if release else None,
                version=release.version if release else None,
                detail=detail or None,
                # What it holds, so a gateway that lost its records issues above it.
                revision=self.state.revision,
            )
        )

    # -------------------------------------------------------------------------- install

    async def apply(self, raw: bytes) -> bool:
        """Install the release ``raw`` describes; False (and a refused report) if refused."""
        try:
            release = verify_release(
                raw, self.release_keys, installed_security_version=self.state.security_version
            )
        except ReleaseMetadataError as e:
            await self.report("refused", None, f"release metadata: {e}")
            return False
        if (why := self._binding_refusal(release)) is not None:
            await self.report("refused", release, f"release metadata: {why}")
            return False
        device = release.device
        if device is not None and device["revision"] > self.state.revision:
            # Held from here on (an equal revision is the same document again), so every
            # report below tells the gateway, even if the install is refused.
            self.state.revision = device["revision"]
            self.state.save(self.state_path)
        if device is not None:
            # The order holds even if the release below is refused: apply it first.
            await self._apply_control(device.get("control"))
        # So does the roster: a training revoked must stop counting before a long download.
        self._apply_competence(release)
        installed = await self._install(release)
        if installed and device is not None:
            await self._apply_shadow(device.get("shadow"))
        return installed

    def _binding_refusal(self, release: Release) -> str | None:
        device = release.device
        if device is None:
            if self.state.revision > 0:
                return (
                    "the document is not bound to this device, but the device already applied "
                    f"revision {self.state.revision} of its own desired state (a replay)"
                )
            return None
        if device["id"] != self.device_id:
            return f"the document is bound to device {device['id']!r}, not {self.device_id!r}"
        if device["revision"] < self.state.revision:
            return (
                f"desired-state revision {device['revision']} is older than the applied "
                f"{self.state.revision} (a replay)"
            )
        return None

    async def _install(self, release: Release) -> bool:
        if release.rollback is None and release.security_version <= self.state.blocked_up_to:
            await self.report(
                "refused",
                release,
                f"security_version {release.security_version} was rolled back from; only a "
                f"release above {self.state.blocked_up_to} or a signed rollback installs",
            )
            return False
        active = self.state.active
        if active and (active.model, active.version) == (release.model, release.version):
            await self.report("active", release, "already running")
            return True
        try:
            slot = await self._stage(release)
            await self._self_test(slot / release.model)
        except Refused as e:
            await self.report("refused", release, str(e))
            return False
        await self.report("self_test", release, "passed")
        rolled_back = release.security_version < self.state.security_version
        self._swap(release, slot)
        await self.report("rolled_back" if rolled_back else "active", release)
        return True

    async def _stage(self, release: Release) -> Path:
        name = f"{release.model}@{release.version}"
        slot = self.state_dir / "slots" / name
        if slot.exists():  # N-1 kept on disk: verify it again, no download needed
            await self._verify_slot(release, slot)
            return slot
        staging = self.state_dir / "staging" / name
        model_dir = staging / release.model
        model_dir.mkdir(parents=True, exist_ok=True)
        for f in release.files:
            target = staging / f.path if f.path == SIGNATURE_FILE else model_dir / f.path
            if target.exists():
                # A completed file from an interrupted staging counts only if it is this one.
                if await asyncio.to_thread(_sha256, target) == f.sha256:
                    continue
                target.unlink()
            try:
                await download(
                    self.js,
                    MODELS_BUCKET,
                    f.sha256,
                    target,
                    expected_size=f.length,
                    expected_sha256=f.sha256,
                    timeout=self.download_timeout,
                )
            except ObjectTransferError as e:
                raise Refused(f"download of {f.path}: {e}") from e
            try:
                check_file(release, f.path, target.stat().st_size, f.sha256)
            except ReleaseMetadataError as e:
                raise Refused(str(e)) from e
        await self.report("downloaded", release)
        await asyncio.to_thread(release_freed_memory)  # before verification hashes it again
        try:
            # download() checked every length and SHA-256 as the bytes arrived: no second pass.
            await self._verify_slot(release, staging, rehash=False)
        except Refused:
            shutil.rmtree(staging, ignore_errors=True)  # never reuse files that failed
            raise
        staging.replace(slot)
        return slot

    async def _verify_slot(self, release: Release, slot: Path, *, rehash: bool = True) -> None:
        folder, signature = slot / release.model, slot / SIGNATURE_FILE
        for f in release.files:
            path = signature if f.path == SIGNATURE_FILE else folder / f.path
            if not path.exists():
                digest = ""
            elif rehash:
                digest = await asyncio.to_thread(_sha256, path)
            else:
                digest = f.sha256
            try:
                check_file(release, f.path, path.stat().st_size if path.exists() else -1, digest)
            except ReleaseMetadataError as e:
                raise Refused(str(e)) from e
        errors = []
        for key in self.model_key_paths:
            try:
                verified = await asyncio.to_thread(
                    functools.partial(verify_model_pinned, identity=self.model_identity),
                    folder,
                    key,
                    signature,
                )
            except ModelSignatureError as e:
                errors.append(str(e))
                continue
            if verified.manifest_sha256 != release.manifest_sha256:
                raise Refused(
                    "the model signature is for another artefact than the release metadata "
                    f"names (manifest {verified.manifest_sha256[:16]} != "
                    f"{release.manifest_sha256[:16]})"
                )
            await self.report("verified", release)
            return
        raise Refused("model signature: " + "; ".join(errors))

    async def _self_test(self, folder: Path) -> None:
        # The download's freed buffers stay in the heap unless handed back: without this the
        # self-test's onnxruntime session would stack on top of them (the device's peak).
        await asyncio.to_thread(release_freed_memory)
        try:
            await asyncio.to_thread(self_test, folder)
        except Exception as e:  # any failure to load or run the model fails the self-test
            raise Refused(f"self-test failed: {e}") from e

    def _swap(self, release: Release, slot: Path) -> None:
        link_tmp = self.state_dir / "current.tmp"
        with contextlib.suppress(FileNotFoundError):
            link_tmp.unlink()
        link_tmp.symlink_to(slot / release.model, target_is_directory=True)
        link_tmp.replace(self.current)  # rename(2): readers see the old or the new, never none
        installed = Installed(
            model=release.model,
            version=release.version,
            security_version=release.security_version,
            slot=slot.name,
            installed_at=datetime.now(UTC).isoformat(),
        )
        state = self.state
        if state.active is not None:
            state.previous = state.active
            state.last_known_good = state.active
        state.active = installed
        # A rollback lowers what is installed but not the floor's history; the floor follows
        # what runs, so the next update must be at least this (or carry an instruction).
        state.security_version = release.security_version
        if release.rollback is not None:
            frm = int(release.rollback["from_security_version"])
            state.blocked_up_to = max(state.blocked_up_to, frm)
        state.history.append(f"{installed.installed_at} {release.model} {release.version}")
        state.save(self.state_path)
        self._prune()

    def _prune(self) -> None:
        state = self.state
        keep = {i.slot for i in (state.active, state.previous, state.shadow) if i is not None}
        for slot in (self.state_dir / "slots").iterdir():
            if slot.name not in keep:
                shutil.rmtree(slot, ignore_errors=True)

    # --------------------------------------------------------------------- control, shadow

    async def _apply_control(self, control: dict[str, Any] | None) -> None:
        if control == self.state.control:
            return
        path = self.state_dir / CONTROL_FILE
        if control is None:
            path.unlink(missing_ok=True)
        else:
            _write_atomic(path, json.dumps(control, indent=2).encode())
        self.state.control = control
        self.state.save(self.state_path)
        if control is None:
            detail = "incident orders lifted"
        else:
            detail = f"{control['mode']} ordered by incident {control['incident_id']}"
            if control.get("threshold") is not None:
                detail += f", confidence threshold {control['threshold']}"
        await self.report("control", None, detail)

    def _apply_competence(self, release: Release) -> None:
        path = self.state_dir / COMPETENCE_FILE
        roster = release.competence
        if roster is None:
            path.unlink(missing_ok=True)
            return
        document = {
            # The roster is the system of this model line: it does not vouch for operators of
            # another model the device may still run (an install that was refused).
            "model": release.model,
            "revision": release.device["revision"] if release.device else None,
            "system_id": roster["system_id"],
            "nist_tier": roster["nist_tier"],
            "as_of": roster["as_of"].isoformat(),
            "override": [
                {
                    "person": e["person"],
                    "trained_at": e["trained_at"].isoformat(),
                    "valid_until": e["valid_until"].isoformat(),
                }
                for e in roster["override"]
            ],
        }
        raw = json.dumps(document, indent=2).encode()
        with contextlib.suppress(FileNotFoundError):
            if path.read_bytes() == raw:
                return
        _write_atomic(path, raw)

    async def _apply_shadow(self, raw: str | None) -> None:
        shadow = self.state.shadow
        if raw is None:
            if shadow is None:
                return
            with contextlib.suppress(FileNotFoundError):
                self.shadow.unlink()
            self.state.shadow = None
            self.state.save(self.state_path)
            self._prune()
            await self.report("shadow_stopped", None, f"{shadow.model} {shadow.version}")
            return
        try:
            # No anti-rollback: a shadow never decides a part. Everything else holds.
            candidate = verify_release(raw.encode(), self.release_keys)
        except ReleaseMetadataError as e:
            await self.report("refused", None, f"shadow release metadata: {e}")
            return
        if shadow is not None and (shadow.model, shadow.version) == (
            candidate.model,
            candidate.version,
        ):
            return
        try:
            slot = await self._stage(candidate)
            await self._self_test(slot / candidate.model)
        except Refused as e:
            await self.report("refused", candidate, f"shadow: {e}")
            return
        link_tmp = self.state_dir / "shadow.tmp"
        with contextlib.suppress(FileNotFoundError):
            link_tmp.unlink()
        link_tmp.symlink_to(slot / candidate.model, target_is_directory=True)
        link_tmp.replace(self.shadow)
        self.state.shadow = Installed(
            model=candidate.model,
            version=candidate.version,
            security_version=candidate.security_version,
            slot=slot.name,
            installed_at=datetime.now(UTC).isoformat(),
        )
        self.state.save(self.state_path)
        self._prune()
        await self.report("shadow", candidate, "running beside the active model, not deciding")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def release_freed_memory() -> None:
    """Return the heap's free pages to the kernel (glibc ``malloc_trim``; a no-op where the C
    library has none).

    Chunk buffers of a download are freed, but glibc keeps the pages for reuse (freed 128 KiB
    blocks raise its mmap threshold, so later ones come from the heap), and the resident set
    stays at its high-water mark. Trimming between phases keeps the device's peak at the
    largest phase instead of the sum of them.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    import ctypes

    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def self_test(folder: Path) -> None:
    """Load ``model.onnx`` with onnxruntime and run it on a neutral input of its declared shape
    (symbolic dimensions as 1): outputs must exist and be finite."""
    import numpy as np
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # One run on one input: an arena and memory patterns would only raise the device's peak.
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"]
    )
    feeds = {}
    for spec in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
        dtype = np.float32 if "float" in spec.type else np.int64
        feeds[spec.name] = np.full(shape, 0.5, dtype=dtype)
    outputs = session.run(None, feeds)
    if not outputs or not all(np.all(np.isfinite(np.asarray(o, dtype=float))) for o in outputs):
        raise ValueError("the model produced no output or non-finite values")


# ----------------------------------------------------------------------------------- loop


async def run(agent: DeviceAgent, nc: Any, *, retry_seconds: float = 5.0) -> None:
    """Apply every desired-state value of this device, now and on each change, forever.

    Until the gateway has created the desired-state bucket (or while the server refuses the
    watch), the agent keeps running what it has and retries."""
    from linegate.nats_auth import NatsAuthError, watch_desired

    while True:
        try:
            async for entry in watch_desired(nc, agent.device_id):
                if not entry.value:
                    continue  # desired state cleared: keep running what is installed
                try:
                    await agent.apply(entry.value)
                except Exception:  # never let one bad release stop the agent
                    log.exception("applying the desired state failed")
        except NatsAuthError as e:
            log.warning("cannot watch the desired state yet (%s); retrying", e)
            await asyncio.sleep(retry_seconds)


def status_publisher(js: Any, device_id: str) -> Report:
    """Publish reports to the device's status subject (JetStream, deduplicated by event id).

    A report that cannot be stored (NATS down, stream missing) is logged and dropped: reporting
    must never stop the device from installing or serving; the next report carries the state.
    """

    async def publish(status: DeviceStatusV1) -> None:
        try:
            await js.publish(
                Subjects.device_status(device_id),
                status.model_dump_json().encode(),
                headers={"Nats-Msg-Id": status.event_id},
            )
        except Exception as e:  # noqa: BLE001  (any NATS failure: log, keep going)
            log.warning("status report %s not stored: %r", status.state, e)

    return publish


def bound_threads(workers: int = 2) -> None:
    """Give the running loop a small default executor. Hashing, file writes and the self-test
    run in worker threads (``asyncio.to_thread``); each new thread costs a stack and a malloc
    arena, and the default pool grows to cpu + 4 threads under load, so the device's peak
    memory would depend on timing."""
    from concurrent.futures import ThreadPoolExecutor

    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agent")
    )


async def main(
    *,
    device_id: str,
    creds: Path,
    nats_url: str,
    state_dir: Path,
    release_key_paths: Sequence[Path],
    model_key_paths: Sequence[Path],
    line: str | None = None,
    serve_port: int | None = None,
    model_identity: str | None = None,
) -> None:
    """Connect as the device and run until cancelled; with ``serve_port``, also serve the
    local inference API on 127.0.0.1 (:mod:`linegate_cli.edge.inference`), publishing its
    telemetry for ``line``. ``model_identity`` pins the signer of certificate-signed models
    (:class:`DeviceAgent`)."""
    from linegate.nats_auth import connect_device
    from linegate.signing import load_public_key

    bound_threads()
    keys = []
    for path in release_key_paths:
        key = load_public_key(path.read_bytes())
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise TypeError(f"{path} is not an EC public key (release metadata is ECDSA)")
        keys.append(key)
    nc = await connect_device(nats_url, creds, device_id=device_id, max_reconnect_attempts=-1)
    try:
        js = nc.jetstream(timeout=10)
        agent = DeviceAgent(
            device_id,
            state_dir,
            js=js,
            release_keys=keys,
            model_key_paths=model_key_paths,
            report=status_publisher(js, device_id),
            model_identity=model_identity,
        )
        await agent.report("online", None, "agent started")
        # A TaskGroup: if either job fails, the other is cancelled (and cleans up) too.
        async with asyncio.TaskGroup() as jobs:
            jobs.create_task(run(agent, nc), name="agent-desired-state")
            if serve_port is not None:
                jobs.create_task(
                    _serve_inference(nc, device_id, line or "unknown", state_dir, serve_port),
                    name="agent-inference-api",
                )
    finally:
        try:
            await nc.drain()
        except Exception:  # noqa: BLE001  (a drain that times out must not mask the exit)
            await nc.close()


async def _serve_inference(nc: Any, device_id: str, line: str, state_dir: Path, port: int) -> None:
    import uvicorn

    from linegate_cli.edge.inference import (
        DEFAULT_REASON_CODES,
        CompetenceFile,
        ControlFile,
        ModelRunner,
        TelemetryBuffer,
        create_inference_app,
        jetstream_publisher,
    )

    telemetry = TelemetryBuffer(jetstream_publisher(nc), line=line, device_id=device_id)
    app = create_inference_app(
        ModelRunner(state_dir),
        telemetry,
        device_id=device_id,
        line=line,
        threshold=None,
        reason_codes=DEFAULT_REASON_CODES,
        shadow=ModelRunner(state_dir, link="shadow"),
        control=ControlFile(state_dir),
        competence=CompetenceFile(state_dir),
    )
    # Loopback only: the line's controller is on the device; the API has no authentication.
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = _embedded_server(config)
    serving = asyncio.create_task(server.serve(), name="uvicorn")
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        # Cancelling serve() would abandon its listening socket and skip the lifespan
        # shutdown (the last telemetry flush): ask it to exit and wait until it has.
        server.should_exit = True
        await serving
        raise


def _embedded_server(config: Any) -> Any:
    """uvicorn's server without its signal handlers: the agent's process owns SIGINT/SIGTERM
    (the CLI turns them into cancellation, which stops the server gracefully). uvicorn is
    imported here, not at module level, so ``linegate`` starts fast."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server(config)
