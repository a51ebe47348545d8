"""Model registry routes: model lines, versions (push, verify, evidence), golden sets,
validation, approvals, release and revocation, and the registry's public signing keys."""

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Query, Request, status
from fastapi.responses import FileResponse, JSONResponse

from linegate.auth import Principal, Role
from linegate.service import ContextDep
from registry import gate, versions
from registry.deps import (
    ApproverDep,
    ArtefactReaderDep,
    ReaderDep,
    RegistryDep,
    RepositoryDep,
    RevokerDep,
    WriterDep,
)
from registry.errors import VersionNotFound
from registry.model_signers import published_signing_keys
from registry.models import ModelVersion, VersionState
from registry.repository import RegistryRepository
from registry.schemas import (
    ApprovalCreate,
    ApprovalRead,
    GoldenSetRead,
    ModelLineCreate,
    ModelLineRead,
    ReleaseRequest,
    RevokeRequest,
    SigningKeys,
    ValidationRead,
    VerifyResult,
    VersionRead,
)
from registry.timing import StageTimes

router = APIRouter(tags=["models"])
SIGSTORE_BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
VersionPath = "/v1/models/{name}/versions/{version}"


async def _version_read(repo: RegistryRepository, version: ModelVersion) -> VersionRead:
    line = await versions.require_line(repo, version.model_name)
    system = await repo.system(line.system_id)
    approvals = await repo.approvals(version.id)
    return VersionRead(
        **version.model_dump(exclude={"model_name", "meta", "signature_digest"}),
        model=version.model_name,
        metadata=version.meta,
        approvals=[ApprovalRead.model_validate(a, from_attributes=True) for a in approvals],
        approvals_required=gate.approvals_required(system) if system else 1,
    )


def _device_only(principal: Principal) -> bool:
    return Role.DEVICE in principal.roles and not principal.has_any(
        [Role.REGISTRY_APPROVE, Role.AUDITOR, Role.RESPONDER, Role.PROCUREMENT]
    )


async def _visible_version(
    repo: RegistryRepository, principal: Principal, name: str, version: str
) -> ModelVersion:
    row = await versions.require_version(repo, name, version)
    # A device sees released versions only; anything else does not exist for it.
    if _device_only(principal) and row.state != VersionState.RELEASED:
        raise VersionNotFound(f"model {name!r} has no released version {version!r}")
    return row


# ------------------------------------------------------------------------------ model lines


@router.post("/v1/models", status_code=status.HTTP_201_CREATED)
async def create_model(
    body: ModelLineCreate, principal: WriterDep, repo: RepositoryDep, ctx: ContextDep
) -> ModelLineRead:
    """Create a model line for an inventory system, with its golden-set policy."""
    line = await versions.create_line(repo, ctx.audit, principal, body)
    return await versions.line_read(repo, line)


@router.get("/v1/models")
async def list_models(_: ReaderDep, repo: RepositoryDep) -> list[ModelLineRead]:
    return [await versions.line_read(repo, m) for m in await repo.model_lines()]


@router.get("/v1/models/{name}")
async def get_model(name: str, _: ReaderDep, repo: RepositoryDep) -> ModelLineRead:
    return await versions.line_read(repo, await versions.require_line(repo, name))


# --------------------------------------------------------------------------------- versions


@router.post(
    "/v1/models/{name}/versions",
    status_code=status.HTTP_201_CREATED,
    responses={
        409: {"description": "Duplicate version or lower security_version"},
        413: {"description": "A part over its size limit"},
        415: {"description": "Not multipart/form-data"},
        422: {"description": "Bad metadata, digest mismatch, or not a valid ONNX model"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["metadata", "model"],
                        "properties": {
                            "metadata": {
                                "type": "string",
                                "description": "JSON: VersionMetadata (version, "
                                "security_version, artefact_sha256, training, datasets, ...)",
                            },
                            "model": {"type": "string", "format": "binary"},
                            "preprocess": {"type": "string", "format": "binary"},
                            "model_card": {"type": "string", "format": "binary"},
                        },
                    }
                }
            },
        }
    },
)
async def push_version(
    name: str,
    request: Request,
    principal: WriterDep,
    registry: RegistryDep,
    background: BackgroundTasks,
) -> JSONResponse:
    """Upload a version (streamed): it is inspected with onnxruntime, signed with OpenSSF
    model-signing and stored content-addressed, as a draft. The 201 carries a
    ``Server-Timing`` header with the wall time of each stage (body, drain, check,
    inspect, sign, store, record, read)."""
    times = StageTimes()
    version = await versions.push_version(
        registry,
        principal,
        name,
        request.headers.get("content-type"),
        request.stream(),
        times,
        # The staging goes after the answer is sent (FastAPI runs these once it is).
        defer=background.add_task,
    )
    async with registry.db.session() as session:
        body = await _version_read(RegistryRepository(session), version)
    times.mark("read")
    return JSONResponse(
        body.model_dump(mode="json"),
        status_code=status.HTTP_201_CREATED,
        headers={
            "Location": f"/v1/models/{name}/versions/{version.version}",
            "Server-Timing": times.header(),
        },
    )


@router.get("/v1/models/{name}/versions")
async def list_versions(
    name: str,
    principal: ArtefactReaderDep,
    repo: RepositoryDep,
    state: Annotated[VersionState | None, Query()] = None,
) -> list[VersionRead]:
    await versions.require_line(repo, name)
    if _device_only(principal):
        state = VersionState.RELEASED
    return [await _version_read(repo, v) for v in await repo.versions(name, state)]


@router.get(VersionPath)
async def get_version(
    name: str, version: str, principal: ArtefactReaderDep, repo: RepositoryDep
) -> VersionRead:
    return await _version_read(repo, await _visible_version(repo, principal, name, version))


@router.get(
    VersionPath + "/signature",
    response_class=FileResponse,
    responses={200: {"content": {SIGSTORE_BUNDLE: {}}}},
)
async def get_signature(
    name: str,
    version: str,
    principal: ArtefactReaderDep,
    repo: RepositoryDep,
    registry: RegistryDep,
) -> FileResponse:
    """The OpenSSF model-signing bundle (Sigstore bundle v0.3) over the artefact folder."""
    row = await _visible_version(repo, principal, name, version)
    return FileResponse(
        registry.store.path(row.signature_digest),
        media_type=SIGSTORE_BUNDLE,
        filename=f"{name}-{version}.sig",
    )


@router.get(VersionPath + "/files/{path}", response_class=FileResponse)
async def get_file(
    name: str,
    version: str,
    path: str,
    principal: ArtefactReaderDep,
    repo: RepositoryDep,
    registry: RegistryDep,
) -> FileResponse:
    """One file of the artefact folder (streamed), e.g. ``model.onnx``."""
    row = await _visible_version(repo, principal, name, version)
    entry = next((f for f in row.files if f["path"] == path), None)
    if entry is None:
        raise VersionNotFound(f"{name} {version} has no file {path!r}")
    return FileResponse(
        registry.store.path(entry["sha256"]),
        media_type="application/octet-stream",
        filename=path,
        headers={"Digest": f"sha-256={entry['sha256']}"},
    )


@router.post(VersionPath + "/verify")
async def verify_version(
    name: str, version: str, _: ReaderDep, repo: RepositoryDep, registry: RegistryDep
) -> VerifyResult:
    """Re-hash the stored files and check the signature with the registry's key, now."""
    import asyncio

    row = await versions.require_version(repo, name, version)
    return await asyncio.to_thread(versions.verify_stored, registry, row)


@router.get(VersionPath + "/evidence")
async def get_evidence(
    name: str, version: str, _: ReaderDep, registry: RegistryDep
) -> dict[str, Any]:
    """Which evidence the system's risk class requires, and whether each is present, missing
    or expired (asked of the attestation service by the artefact's digest)."""
    report = await gate.version_evidence(registry, name, version)
    return report.to_dict()


# ------------------------------------------------------------------------------ golden sets


@router.post(
    "/v1/models/{name}/golden-sets",
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def add_golden_set(
    name: str,
    request: Request,
    principal: WriterDep,
    registry: RegistryDep,
    description: Annotated[str, Query(max_length=2000)] = "",
) -> GoldenSetRead:
    """Upload a golden dataset (.npz with ``inputs``, ``labels``, ``label_names``), streamed."""
    row = await gate.add_golden_set(registry, principal, name, request.stream(), description)
    return GoldenSetRead(**row.model_dump(exclude={"model_name"}), model=row.model_name)


@router.get("/v1/models/{name}/golden-sets")
async def list_golden_sets(name: str, _: ReaderDep, repo: RepositoryDep) -> list[GoldenSetRead]:
    await versions.require_line(repo, name)
    return [
        GoldenSetRead(**g.model_dump(exclude={"model_name"}), model=g.model_name)
        for g in await repo.golden_sets(name)
    ]


# ------------------------------------------------------------------------------- the gate


@router.post(VersionPath + "/validate", status_code=status.HTTP_201_CREATED)
async def validate_version(
    name: str, version: str, principal: WriterDep, registry: RegistryDep
) -> ValidationRead:
    """Run the golden set (and synthetic defects) on the version with onnxruntime, compare
    with the released version, and record the signed result."""
    run = await gate.validate(registry, principal, name, version)
    return ValidationRead.model_validate(run, from_attributes=True)


@router.get(VersionPath + "/validations")
async def list_validations(
    name: str, version: str, _: ReaderDep, repo: RepositoryDep
) -> list[ValidationRead]:
    row = await versions.require_version(repo, name, version)
    return [
        ValidationRead.model_validate(r, from_attributes=True)
        for r in await repo.validations(row.id)
    ]


@router.post(VersionPath + "/approvals", status_code=status.HTTP_201_CREATED)
async def decide_version(
    name: str, version: str, body: ApprovalCreate, principal: ApproverDep, registry: RegistryDep
) -> VersionRead:
    """Approve or reject a validated version, with a written rationale (never your own)."""
    row = await gate.decide(registry, principal, name, version, body)
    async with registry.db.session() as session:
        return await _version_read(RegistryRepository(session), row)


@router.post(VersionPath + "/release")
async def release_version(
    name: str,
    version: str,
    principal: ApproverDep,
    registry: RegistryDep,
    body: ReleaseRequest | None = None,
) -> VersionRead:
    """Release an approved version if its signature, golden set and evidence all hold."""
    row = await gate.release(registry, principal, name, version, body.note if body else "")
    async with registry.db.session() as session:
        return await _version_read(RegistryRepository(session), row)


@router.post(VersionPath + "/revoke")
async def revoke_version(
    name: str, version: str, body: RevokeRequest, principal: RevokerDep, registry: RegistryDep
) -> VersionRead:
    """Kill switch: revoke the version; the edge gateway removes it from devices."""
    row = await gate.revoke(registry, principal, name, version, body.reason)
    async with registry.db.session() as session:
        return await _version_read(RegistryRepository(session), row)


# ----------------------------------------------------------------------------- public keys


@router.get("/v1/signing-keys", tags=["keys"])
async def signing_keys(registry: RegistryDep) -> SigningKeys:
    """The public keys (PEM) model release signatures verify against (no token needed).

    `verify_method` says which `model_signing verify` subcommand applies. With certificate
    signing an entry also carries the signing certificate and the pinned chain (PEM), the
    certificate described (subject, SANs, issuer, validity window, SHA-256 fingerprint) and
    the `identity` to pin: verify with `linegate model verify DIR --signature SIG
    --certificate-chain CHAIN.pem --identity IDENTITY`, or `model_signing verify certificate
    --certificate_chain CHAIN.pem --log_fingerprints` and compare the fingerprint. With
    Sigstore signing it names the `identity` and `oidc_issuer` signatures are bound to."""
    return SigningKeys(keys=published_signing_keys(registry.settings))
