"""Attestation ingest and query routes."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status

from attestation.deps import (
    AttestationRepositoryDep,
    IngestorDep,
    ReaderDep,
    SettingsDep,
    SupplierDep,
    tenant_of,
)
from attestation.errors import AttestationNotFound
from attestation.ingest import Ingestor, RecordedAttestation, Upload
from attestation.models import Attestation
from attestation.schemas import (
    AttestationPage,
    AttestationRead,
)
from attestation.settings import AttestationSettings
from attestation.verification import UnsupportedMedia, media_type
from linegate.auth import Principal
from linegate.errors import (
    PROBLEM_BASE,
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
    problem_response,
)

router = APIRouter(tags=["attestations"])


# -------------------------------------------------------------------------- attestations


def _read(a: Attestation | RecordedAttestation) -> AttestationRead:
    return AttestationRead(
        id=a.id,
        status=a.status,
        verified=a.verified,
        supplier=a.supplier_id,
        envelope=a.envelope,
        content_type=a.content_type,
        predicate_type=a.predicate_type,
        predicate_kind=a.predicate_kind,
        recognised=a.recognised,
        signer=a.signer,
        subjects=a.subjects,
        summary=a.summary,
        reasons=a.reasons,
        raw_digest=a.raw_digest,
        raw_size=a.raw_size,
        issued_at=a.issued_at,
        expires_at=a.expires_at,
        created_at=a.created_at,
    )


async def _read_body(request: Request, limit: int) -> bytes:
    # The body is read chunk by chunk and refused as soon as it passes the limit, so memory is
    # bounded by the limit whatever the client sends (JSON needs the whole document to parse).
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the {limit}-byte limit")
    buffer = bytearray()
    async for chunk in request.stream():
        buffer += chunk
        if len(buffer) > limit:
            raise PayloadTooLarge(f"body exceeds the {limit}-byte limit")
    return bytes(buffer)


@router.post(
    "/v1/attestations",
    status_code=status.HTTP_201_CREATED,
    tags=["attestations"],
    responses={
        200: {"description": "The same bytes were uploaded before: the earlier record"},
        400: {"description": "Malformed document (recorded as a rejection)"},
        413: {"description": "Body over the size limit"},
        415: {"description": "Unsupported Content-Type"},
        422: {"description": "Verification failed (recorded as a rejection with every reason)"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/vnd.dsse.envelope.v1+json": {"schema": {"type": "object"}},
                "application/vnd.dev.sigstore.bundle.v0.3+json": {"schema": {"type": "object"}},
                "application/vnd.cyclonedx+json": {"schema": {"type": "object"}},
                "application/spdx+json": {"schema": {"type": "object"}},
            },
        }
    },
)
async def upload_attestation(
    request: Request, principal: SupplierDep, settings: SettingsDep, ingestor: IngestorDep
) -> Response:
    """Upload one attestation or SBOM as the exact bytes; it is verified and recorded."""
    # Served by attestation.api.fastpath in front of the router (same code below); this route
    # gives the OpenAPI description and serves whatever the fast path hands on.
    return await record_upload(request, principal, settings, ingestor)


async def record_upload(
    request: Request, principal: Principal, settings: AttestationSettings, ingestor: Ingestor
) -> Response:
    """The upload once its caller holds the supplier role: raises a LinegateError for a
    request refused before anything is recorded, answers the recorded outcome otherwise."""
    content_type = request.headers.get("content-type")
    try:
        normalised = media_type(content_type)
    except UnsupportedMedia as e:
        raise UnsupportedMediaType(str(e)) from e
    supplier_id = principal.tenant
    if supplier_id is None:
        raise Unprocessable("a supplier token needs a tenant")
    data = await _read_body(request, settings.attestation_max_bytes)
    if not data:
        raise Unprocessable("empty body: send the attestation document as the request body")
    # Returns once the record, its audit entry and its event are committed.
    result = await ingestor.ingest(
        Upload(normalised, data), supplier_id=supplier_id, actor=principal
    )
    record = result.attestation
    if record.status == "rejected":
        # The rejection is already recorded (committed by the service with its audit entry).
        return problem_response(
            400 if result.malformed else 422,
            "Attestation rejected",
            "; ".join(record.reasons),
            type_=PROBLEM_BASE + "attestation-rejected",
            instance=f"/v1/attestations/{record.id}",
            extra={"id": record.id, "reasons": record.reasons, "supplier": record.supplier_id},
        )
    code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
    # Serialised by pydantic in one step (the same JSON as JSONResponse of model_dump).
    return Response(
        _read(record).model_dump_json(),
        status_code=code,
        media_type="application/json",
        headers={"Location": f"/v1/attestations/{record.id}"},
    )


def _parse_digest(value: str) -> tuple[str, str]:
    algorithm, sep, digest = value.partition(":")
    if not sep or not algorithm or not digest:
        raise Unprocessable("subject_digest must look like sha256:<hex>")
    return algorithm.lower(), digest.lower()


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    at, _, last_id = cursor.partition("|")
    try:
        return datetime.fromisoformat(at), last_id
    except ValueError as e:
        raise Unprocessable("invalid cursor") from e


@router.get("/v1/attestations", tags=["attestations"])
async def list_attestations(
    principal: ReaderDep,
    attestations: AttestationRepositoryDep,
    subject_digest: Annotated[
        str | None, Query(description="e.g. sha256:<hex>", max_length=200)
    ] = None,
    supplier: Annotated[str | None, Query(max_length=63)] = None,
    predicate_type: Annotated[str | None, Query(max_length=500)] = None,
    status_: Annotated[
        str | None, Query(alias="status", pattern="^(verified|unsigned|rejected)$")
    ] = None,
    expires_before: datetime | None = None,
    expires_after: datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AttestationPage:
    """Which attestations cover an artefact, by supplier, predicate type, status or expiry."""
    rows = await attestations.query(
        tenant=tenant_of(principal),
        supplier=supplier,
        subject_digest=_parse_digest(subject_digest) if subject_digest else None,
        predicate_type=predicate_type,
        status=status_,
        expires_before=expires_before,
        expires_after=expires_after,
        created_before=_parse_cursor(cursor) if cursor else None,
        limit=limit,
    )
    items = [_read(a) for a in rows]
    next_cursor = f"{rows[-1].created_at.isoformat()}|{rows[-1].id}" if len(rows) == limit else None
    return AttestationPage(items=items, next_cursor=next_cursor)


async def _get_visible(attestation_id: str, principal: Principal, attestations: Any) -> Attestation:
    record: Attestation | None = await attestations.get(attestation_id, tenant=tenant_of(principal))
    if record is None:
        raise AttestationNotFound(f"no attestation {attestation_id!r}")
    return record


@router.get("/v1/attestations/{attestation_id}", tags=["attestations"])
async def get_attestation(
    attestation_id: str, principal: ReaderDep, attestations: AttestationRepositoryDep
) -> AttestationRead:
    return _read(await _get_visible(attestation_id, principal, attestations))


@router.get("/v1/attestations/{attestation_id}/raw", tags=["attestations"])
async def get_attestation_raw(
    attestation_id: str, principal: ReaderDep, attestations: AttestationRepositoryDep
) -> Response:
    """The exact bytes uploaded, with their original Content-Type and digest."""
    record = await _get_visible(attestation_id, principal, attestations)
    blob = await attestations.blob(record.raw_digest)
    assert blob is not None  # written in the same transaction as the record
    return Response(
        blob.data,
        media_type=record.content_type,
        headers={"ETag": f'"{record.raw_digest}"'},
    )
