"""The portal's pages: attestations, upload, SLA and scorecard, notices (suppliers) and every
supplier's scorecard and detail (procurement, auditors, registry approvers).

Every query goes through the repositories and domain functions the API uses, with the
caller's tenant (:func:`attestation.deps.tenant_of`), so a supplier's pages are confined in
the SQL exactly as its API calls are.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse
from starlette.datastructures import UploadFile

from attestation import sla
from attestation.deps import SettingsDep, confine_to_tenant, tenant_of
from attestation.errors import AttestationNotFound
from attestation.models import Attestation
from attestation.portal.rendering import PortalRoute, error_page, render
from attestation.portal.security import CSRF_FIELD, STAFF_ROLES, PortalSession, SessionCookieDep
from attestation.portal.upload import DOCUMENT_TYPES, chosen_type, parse_form, post_to_api
from attestation.repository import AttestationRepository, SlaRepository, SupplierRepository
from attestation.schemas_sla import NoticeResponse
from attestation.service import require_supplier
from linegate.auth import Role
from linegate.errors import Forbidden, NotFound, Unprocessable
from linegate.service import ContextDep, SessionDep

router = APIRouter(prefix="/portal", route_class=PortalRoute, include_in_schema=False)

STATUSES = ("verified", "unsigned", "rejected")
PAGE_SIZE = 25


def _blank(value: str | None) -> str | None:
    # An HTML filter form submits empty fields as "", which means "any".
    if value is None:
        return None
    return value.strip() or None


def _digest(value: str) -> tuple[str, str]:
    algorithm, sep, digest = value.partition(":")
    if not sep or not algorithm or not digest:
        raise Unprocessable("subject digest must look like sha256:<hex>")
    return algorithm.lower(), digest.lower()


def _cursor(value: str) -> tuple[datetime, str]:
    at, _, last_id = value.partition("|")
    try:
        return datetime.fromisoformat(at), last_id
    except ValueError as e:
        raise Unprocessable("invalid page cursor") from e


# ------------------------------------------------------------------------- attestations


@router.get("/attestations")
async def list_attestations(
    session: SessionCookieDep,
    db: SessionDep,
    status: Annotated[str | None, Query(max_length=20)] = None,
    predicate_type: Annotated[str | None, Query(max_length=500)] = None,
    subject_digest: Annotated[str | None, Query(max_length=200)] = None,
    supplier: Annotated[str | None, Query(max_length=63)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = PAGE_SIZE,
) -> Response:
    filters = {
        "status": _blank(status),
        "predicate_type": _blank(predicate_type),
        "subject_digest": _blank(subject_digest),
        "supplier": _blank(supplier) if session.is_staff else None,
    }
    if filters["status"] is not None and filters["status"] not in STATUSES:
        raise Unprocessable(f"status must be one of {', '.join(STATUSES)}")
    rows = await AttestationRepository(db).query(
        tenant=tenant_of(session.principal),
        supplier=filters["supplier"],
        subject_digest=_digest(filters["subject_digest"]) if filters["subject_digest"] else None,
        predicate_type=filters["predicate_type"],
        status=filters["status"],
        created_before=_cursor(cursor) if cursor else None,
        limit=limit,
    )
    next_url = None
    if len(rows) == limit:
        query = {k: v for k, v in filters.items() if v} | {
            "cursor": f"{rows[-1].created_at.isoformat()}|{rows[-1].id}",
            "limit": str(limit),
        }
        next_url = "/portal/attestations?" + urlencode(query)
    return render(
        "attestations.html",
        session=session,
        rows=rows,
        filters=filters,
        statuses=STATUSES,
        next_url=next_url,
        first_page=cursor is None,
    )


async def _visible(db: Any, attestation_id: str, session: PortalSession) -> Attestation:
    record = await AttestationRepository(db).get(
        attestation_id, tenant=tenant_of(session.principal)
    )
    if record is None:
        raise AttestationNotFound(f"no attestation {attestation_id!r}")
    return record


@router.get("/attestations/{attestation_id}")
async def show_attestation(
    attestation_id: str, session: SessionCookieDep, db: SessionDep
) -> Response:
    record = await _visible(db, attestation_id, session)
    return render("attestation.html", session=session, record=record, outcome=None)


@router.get("/attestations/{attestation_id}/raw")
async def download_raw(attestation_id: str, session: SessionCookieDep, db: SessionDep) -> Response:
    record = await _visible(db, attestation_id, session)
    blob = await AttestationRepository(db).blob(record.raw_digest)
    if blob is None:  # written with the record; absent only if the database was edited
        raise NotFound(f"the bytes of attestation {attestation_id!r} are missing")
    return Response(
        blob.data,
        media_type=record.content_type,
        headers={
            "Content-Disposition": f'attachment; filename="{record.id}.json"',
            "ETag": f'"{record.raw_digest}"',
        },
    )


# ------------------------------------------------------------------------------- upload


@router.get("/upload")
async def upload_form(session: SessionCookieDep, settings: SettingsDep) -> Response:
    session.require(Role.SUPPLIER)
    return render(
        "upload.html",
        session=session,
        types=DOCUMENT_TYPES,
        max_bytes=settings.attestation_max_bytes,
    )


OUTCOMES = {
    201: "Recorded.",
    200: "These exact bytes were uploaded before: this is the earlier record.",
    400: "Rejected: the document is malformed. The rejection is recorded.",
    422: "Rejected: verification failed. The rejection is recorded.",
}


@router.post("/upload")
async def upload(
    request: Request, session: SessionCookieDep, settings: SettingsDep, ctx: ContextDep
) -> Response:
    # No database session is held here: the API call below records the upload in its own
    # (SQLite has a single writer).
    session.require(Role.SUPPLIER)
    form = await parse_form(request, settings.attestation_max_bytes)
    try:
        session.check_csrf(form.get(CSRF_FIELD))
        document = form.get("document")
        if not isinstance(document, UploadFile) or not document.filename:
            raise Unprocessable("choose a file to upload")
        content_type = await chosen_type(document, str(form.get("type") or "auto"))
        answer = await post_to_api(request, session.token, content_type, document)
    finally:
        await form.close()
    record_id = answer.body.get("id")
    if answer.status not in OUTCOMES or not isinstance(record_id, str):
        reasons = [
            str(r.get("message", r)) if isinstance(r, dict) else str(r)
            for r in answer.body.get("reasons", [])
        ]
        detail = str(answer.body.get("detail") or answer.body.get("title") or "upload refused")
        return error_page(answer.status, detail, session=session, reasons=reasons)
    async with ctx.db.session() as db:
        record = await _visible(db, record_id, session)
    return render(
        "attestation.html",
        status=answer.status,
        session=session,
        record=record,
        outcome=OUTCOMES[answer.status],
    )


# --------------------------------------------------------------------- SLA and suppliers


async def _supplier_page(
    supplier_id: str, session: PortalSession, db: Any, expiring_within_days: int
) -> Response:
    confine_to_tenant(session.principal, supplier_id)
    suppliers, slas = SupplierRepository(db), SlaRepository(db)
    supplier = await require_supplier(suppliers, supplier_id)
    card = await sla.scorecard(
        supplier_id, slas, expiring_within=timedelta(days=expiring_within_days)
    )
    recent = await AttestationRepository(db).query(
        tenant=tenant_of(session.principal), supplier=supplier_id, limit=10
    )
    return render(
        "supplier.html",
        session=session,
        supplier=supplier,
        terms=await slas.sla(supplier_id),
        card=card,
        notices=await slas.notices(supplier_id),
        keys=await suppliers.keys(supplier_id),
        identities=await suppliers.identities(supplier_id),
        recent=recent,
        expiring_within_days=expiring_within_days,
    )


DaysQuery = Annotated[int, Query(ge=0, le=3650)]


@router.get("/sla")
async def my_sla(
    session: SessionCookieDep, db: SessionDep, expiring_within_days: DaysQuery = 30
) -> Response:
    session.require(Role.SUPPLIER)
    if session.principal.tenant is None:
        raise Forbidden("this token names no supplier")
    return await _supplier_page(session.principal.tenant, session, db, expiring_within_days)


@router.post("/notices/{notice_id}/response")
async def respond_notice(
    notice_id: str, request: Request, session: SessionCookieDep, db: SessionDep, ctx: ContextDep
) -> Response:
    form = await request.form(max_files=0, max_fields=4)
    session.check_csrf(form.get(CSRF_FIELD))
    session.require(Role.SUPPLIER)
    tenant = session.principal.tenant
    if tenant is None:
        raise Forbidden("this token names no supplier")
    body = NoticeResponse(response=str(form.get("response") or "").strip())
    await sla.respond_notice(
        tenant, notice_id, body, actor=session.principal, slas=SlaRepository(db), audit=ctx.audit
    )
    return RedirectResponse("/portal/sla#notices", status_code=303)


@router.get("/suppliers")
async def scorecards(
    session: SessionCookieDep, db: SessionDep, expiring_within_days: DaysQuery = 30
) -> Response:
    if not session.is_staff:
        raise Forbidden(
            "this page needs the " + " or ".join(r.value for r in STAFF_ROLES) + " role"
        )
    slas = SlaRepository(db)
    rows = []
    for supplier in await SupplierRepository(db).all():
        card = await sla.scorecard(
            supplier.id, slas, expiring_within=timedelta(days=expiring_within_days)
        )
        rows.append((supplier, card))
    # The API's order (GET /v1/scorecards): most breaches, then lowest coverage, first.
    rows.sort(key=lambda r: (-len(r[1].breaches), r[1].coverage, r[0].id))
    return render(
        "scorecards.html", session=session, rows=rows, expiring_within_days=expiring_within_days
    )


@router.get("/suppliers/{supplier_id}")
async def supplier_detail(
    supplier_id: str,
    session: SessionCookieDep,
    db: SessionDep,
    expiring_within_days: DaysQuery = 30,
) -> Response:
    return await _supplier_page(supplier_id, session, db, expiring_within_days)


@router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def not_found(rest: str) -> Response:
    raise NotFound("there is no such page in the portal")
