"""Model lines and versions: streamed push, ONNX inspection, OpenSSF model signing, verification.

A push is one ``multipart/form-data`` request (parts ``metadata``, ``model``, optional
``preprocess`` and ``model_card``) streamed into staging files. Nothing is stored until every
check passed: metadata, declared digest, duplicate version, security_version, a valid ONNX
model, then the registry signs the artefact folder (``model.onnx``, ``preprocess.json``,
``model_card.md``) with OpenSSF model-signing. Only then are the files linked into
content-addressed storage and the version row, its blobs and its audit entry committed in one
transaction; if that transaction fails, the files it added are removed again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from linegate.audit import AuditLog
from linegate.auth import Principal
from linegate.db import Database
from linegate.errors import Unprocessable
from linegate.modelsig import (
    KnownDigest,
    ModelSignatureError,
    read_signature,
)
from linegate.outbox import OutboxRelay
from linegate.signing import public_key_pem
from registry.errors import (
    AlreadyExists,
    DigestMismatch,
    InvalidArtefact,
    ModelNotFound,
    SecurityVersionRollback,
    SystemNotFound,
    VersionNotFound,
)
from registry.evidence import AttestationClient
from registry.model_signers import (
    ModelSigner,
    model_signer,
    signing_public_key,
    verify_stored_signature,
)
from registry.models import Blob, ModelLine, ModelVersion, VersionState
from registry.multipart import receive_multipart
from registry.onnx_inspect import InvalidOnnx, inspect_onnx
from registry.repository import RegistryRepository
from registry.schemas import ModelLineCreate, ModelLineRead, VerifyResult, VersionMetadata
from registry.settings import RegistrySettings
from registry.storage import BlobStore, Received
from registry.timing import StageTimes

#: Multipart part name -> file name in the signed artefact folder.
ARTEFACT_FILES = {
    "model": "model.onnx",
    "preprocess": "preprocess.json",
    "model_card": "model_card.md",
}
MODEL_FILE = "model.onnx"


@dataclass
class Registry:
    """What the registry's domain code needs at run time (``app.state.registry``)."""

    settings: RegistrySettings
    db: Database
    audit: AuditLog
    store: BlobStore
    attestations: AttestationClient
    outbox: OutboxRelay
    #: The service key: signs validation reports (DSSE) and audit checkpoints.
    report_key_path: Path

    def wake_outbox(self) -> None:
        self.outbox.wake()

    @property
    def signing_key_path(self) -> Path:
        return self.settings.signing_key_path

    def public_key_pem(self) -> bytes:
        return public_key_pem(signing_public_key(self.settings))

    def signing_key_id(self) -> str:
        return self.model_signer().key_id()

    def model_signer(self) -> ModelSigner:
        """The signer LINEGATE_MODEL_SIGNING_METHOD selects (key, certificate or sigstore)."""
        return model_signer(self.settings)


# ------------------------------------------------------------------------------ model lines


async def require_line(repo: RegistryRepository, name: str) -> ModelLine:
    line = await repo.model_line(name)
    if line is None:
        raise ModelNotFound(f"no model {name!r} in the registry")
    return line


async def require_version(repo: RegistryRepository, name: str, version: str) -> ModelVersion:
    row = await repo.version(name, version)
    if row is None:
        raise VersionNotFound(f"model {name!r} has no version {version!r}")
    return row


async def line_read(repo: RegistryRepository, line: ModelLine) -> ModelLineRead:
    return ModelLineRead(
        **line.model_dump(), security_version=await repo.max_security_version(line.name)
    )


async def create_line(
    repo: RegistryRepository, audit: AuditLog, actor: Principal, body: ModelLineCreate
) -> ModelLine:
    if await repo.system(body.system_id) is None:
        raise SystemNotFound(
            f"no AI system {body.system_id!r}: register the system in the inventory first"
        )
    if await repo.model_line(body.name) is not None:
        raise AlreadyExists(f"model {body.name!r} already exists")
    line = ModelLine(**body.model_dump(), created_at=datetime.now(UTC), created_by=actor.subject)
    await repo.add(line)
    await audit.append(
        repo.session,
        actor=actor.actor,
        action="model.created",
        subject=f"model:{line.name}",
        payload=body.model_dump(mode="json"),
    )
    return line


# ------------------------------------------------------------------------------------- push


def _metadata(part: Received) -> VersionMetadata:
    try:
        return VersionMetadata.model_validate_json(part.path.read_bytes())
    except ValidationError as e:
        raise Unprocessable(
            "the metadata part is not valid version metadata",
            extra={"reasons": [f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()]},
        ) from e


def _check_sidecars(parts: dict[str, Received]) -> None:
    if "preprocess" in parts:
        try:
            config = json.loads(parts["preprocess"].path.read_bytes())
        except ValueError as e:
            raise InvalidArtefact(f"preprocess is not JSON: {e}") from e
        if not isinstance(config, dict):
            raise InvalidArtefact("preprocess must be a JSON object")
    if "model_card" in parts:
        try:
            parts["model_card"].path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidArtefact(f"model_card is not UTF-8 text: {e}") from e


async def _check_version_is_new(repo: RegistryRepository, name: str, meta: VersionMetadata) -> int:
    """The security_version the new version gets; refuses duplicates and rollbacks."""
    await require_line(repo, name)
    if await repo.version(name, meta.version) is not None:
        raise AlreadyExists(f"model {name!r} already has version {meta.version!r}")
    current = await repo.max_security_version(name)
    wanted = meta.security_version if meta.security_version is not None else max(current, 1)
    if wanted < current:
        raise SecurityVersionRollback(
            f"security_version {wanted} is lower than {current}, the highest of model {name!r}: "
            "devices refuse to roll back to it"
        )
    return wanted


def _hash_file(name: str, source: Path) -> Received:
    h = hashlib.sha256()
    size = 0
    with source.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
            size += len(chunk)
    return Received(name, source, h.hexdigest(), size)


def _sign_folder(
    stage_dir: Path, model_name: str, parts: dict[str, Received], signer: ModelSigner
) -> tuple[Received, str, list[dict[str, Any]]]:
    """Hard-link the parts into an artefact folder and sign it; returns the signature file,
    the manifest digest and the signed file list.

    The parts were hashed as they were written to staging (the same buffers went to the hash
    and to the file) and nothing writes to staging after that, so their digests are given to
    the signer instead of reading a gigabyte back; the folder is still walked by model_signing,
    and verification (at release, and ``POST .../verify``) re-hashes the stored files.
    """
    folder = stage_dir / "artefact" / model_name
    folder.mkdir(parents=True)
    known: dict[str, KnownDigest] = {}
    for part, received in parts.items():
        if part in ARTEFACT_FILES:
            os.link(received.path, folder / ARTEFACT_FILES[part])
            known[ARTEFACT_FILES[part]] = KnownDigest(received.sha256, received.size)
    signature = stage_dir / "model.sig"
    signer.sign(folder, signature, known)
    statement = read_signature(signature)
    sizes = {ARTEFACT_FILES[p]: r.size for p, r in parts.items() if p in ARTEFACT_FILES}
    files = [{"path": f.path, "sha256": f.sha256, "size": sizes[f.path]} for f in statement.files]
    return _hash_file("signature", signature), statement.manifest_sha256, files


async def push_version(
    registry: Registry,
    actor: Principal,
    model_name: str,
    content_type: str | None,
    chunks: AsyncIterator[bytes],
    times: StageTimes | None = None,
    defer: Callable[[Callable[[], None]], object] | None = None,
) -> ModelVersion:
    """Receive, check, sign and record a version; ``times`` (if given) gets each stage's
    wall time: the receive stages of :func:`receive_multipart`, then ``check`` (metadata,
    declared digest, duplicate version), ``inspect``, ``sign``, ``store`` (the fsyncs and
    links) and ``record``. With ``defer`` (say, a response's background tasks), removing the
    staging after a stored push is handed to it instead of done before returning."""
    times = times if times is not None else StageTimes()
    settings = registry.settings
    sidecar = settings.model_sidecar_max_bytes
    limits = {"metadata": sidecar, "model": settings.model_max_bytes}
    limits.update(preprocess=sidecar, model_card=sidecar)
    with registry.store.staging() as stage:
        parts = await receive_multipart(
            content_type,
            chunks,
            stage,
            limits,
            max_total=settings.model_max_bytes + 3 * sidecar + 64 * 1024,
            times=times,
        )
        for required in ("metadata", "model"):
            if required not in parts:
                raise Unprocessable(f"the push has no {required!r} part")
        meta = _metadata(parts["metadata"])
        model = parts["model"]
        declared = (meta.artefact_sha256 or "").removeprefix("sha256:")
        if declared and declared != model.sha256:
            raise DigestMismatch(
                f"model.onnx has sha256 {model.sha256}, not the declared {declared}: the upload "
                "was corrupted or the wrong file was sent"
            )
        async with registry.db.session() as session:
            await _check_version_is_new(RegistryRepository(session), model_name, meta)
        times.mark("check")
        try:
            info = await asyncio.to_thread(
                inspect_onnx, model.path, ort_max_bytes=settings.onnx_runtime_check_max_bytes
            )
        except InvalidOnnx as e:
            raise InvalidArtefact(f"model.onnx is not a valid ONNX model: {e}") from e
        _check_sidecars(parts)
        times.mark("inspect")
        try:
            signature, manifest, files = await asyncio.to_thread(
                _sign_folder, stage.directory, model_name, parts, registry.model_signer()
            )
        except ModelSignatureError as e:
            raise InvalidArtefact(f"the registry could not sign the artefact: {e}") from e
        times.mark("sign")
        stored = [p for n, p in parts.items() if n in ARTEFACT_FILES] + [signature]
        added = [r.sha256 for r in stored if registry.store.commit(r)]
        times.mark("store")
        try:
            version = await _record(
                registry, actor, model_name, meta, stored, info.to_dict(), manifest, files
            )
        except BaseException:
            await _remove_unreferenced(registry, added)
            raise
        times.mark("record")
        if defer is not None:
            defer(stage.detach())
        return version


async def _record(
    registry: Registry,
    actor: Principal,
    model_name: str,
    meta: VersionMetadata,
    stored: list[Received],
    onnx: dict[str, Any],
    manifest: str,
    files: list[dict[str, Any]],
) -> ModelVersion:
    now = datetime.now(UTC)
    async with registry.db.session() as session:
        repo = RegistryRepository(session)
        # Re-checked inside the writing transaction: a concurrent push may have won.
        security_version = await _check_version_is_new(repo, model_name, meta)
        for r in stored:
            if await repo.blob(r.sha256) is None:
                session.add(Blob(digest=r.sha256, size=r.size, created_at=now))
        model = next(r for r in stored if r.name == "model")
        version = ModelVersion(
            id=uuid.uuid4().hex,
            model_name=model_name,
            version=meta.version,
            security_version=security_version,
            state=VersionState.DRAFT,
            files=files,
            artefact_digest=model.sha256,
            manifest_digest=manifest,
            size_bytes=sum(f["size"] for f in files),
            onnx=onnx,
            meta=meta.model_dump(
                mode="json", exclude={"version", "security_version", "artefact_sha256"}
            ),
            signature_digest=stored[-1].sha256,
            signing_key_id=registry.signing_key_id(),
            uploader=actor.subject,
            created_at=now,
        )
        await repo.add(version)
        await registry.audit.append(
            session,
            actor=actor.actor,
            action="model.version.pushed",
            subject=f"model:{model_name}@{meta.version}",
            payload={
                "artefact_digest": model.sha256,
                "manifest_digest": manifest,
                "security_version": security_version,
                "signing_key_id": version.signing_key_id,
                "files": files,
            },
        )
        return version


async def _remove_unreferenced(registry: Registry, digests: list[str]) -> None:
    if not digests:
        return
    async with registry.db.session() as session:
        keep = await RegistryRepository(session).referenced(digests)
    for digest in digests:
        if digest not in keep:
            registry.store.remove(digest)


# ----------------------------------------------------------------------------------- verify


def verify_stored(registry: Registry, version: ModelVersion) -> VerifyResult:
    """Re-hash the stored files of ``version`` and check its signature with the registry's
    pinned trust for how it was signed (its key, certificate chain or Sigstore identity)."""
    store = registry.store
    with tempfile.TemporaryDirectory(dir=store.root / ".staging") as tmp:
        try:
            folder = store.materialise(
                {f["path"]: f["sha256"] for f in version.files},
                Path(tmp) / version.model_name,
            )
        except FileNotFoundError as e:
            return VerifyResult(verified=False, reason=f"a stored file is missing: {e.filename}")
        key = Path(tmp) / "key.pub.pem"
        key.write_bytes(registry.public_key_pem())
        try:
            verified = verify_stored_signature(
                registry.settings, folder, store.path(version.signature_digest), key
            )
        except ModelSignatureError as e:
            return VerifyResult(verified=False, reason=str(e).replace(tmp, "<stored>"))
    return VerifyResult(
        verified=True,
        manifest_digest=verified.manifest_sha256,
        key_id=verified.key_id,
        files=[{"path": f.path, "sha256": f.sha256} for f in verified.files],
        certificate=verified.certificate,
    )
