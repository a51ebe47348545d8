"""The upload form: parse the multipart body within the API's size limit, tell the document's
type, and hand the file to ``POST /v1/attestations`` itself.

The form goes through the API route in-process (an ASGI call on this same app, with the
session's own token) rather than around it: the size limit, Content-Type rules, verification,
idempotency, audit entry and event are then the API's by construction, whatever the ingest
path inside it becomes.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from attestation.verification import (
    MEDIA_CYCLONEDX,
    MEDIA_DSSE,
    MEDIA_SPDX,
    UnsupportedMedia,
    media_type,
)
from linegate.errors import LinegateError, PayloadTooLarge, UnsupportedMediaType

#: Room for the multipart boundaries, part headers and the small form fields around the file.
FORM_OVERHEAD_BYTES = 64 * 1024
CHUNK = 64 * 1024
SNIFF_BYTES = 64 * 1024

#: The form's choices: label -> Content-Type ("auto" sniffs the document).
DOCUMENT_TYPES = {
    "auto": "Detect from the document",
    MEDIA_DSSE: "DSSE envelope (in-toto Statement)",
    "application/vnd.dev.sigstore.bundle.v0.3+json": "Sigstore bundle v0.3",
    MEDIA_CYCLONEDX: "CycloneDX SBOM (unsigned)",
    MEDIA_SPDX: "SPDX SBOM (unsigned)",
}

_SIGSTORE = re.compile(rb'"mediaType"\s*:\s*"(application/vnd\.dev\.sigstore\.bundle[^"]{0,40})"')
_CYCLONEDX = re.compile(rb'"bomFormat"\s*:\s*"CycloneDX"')
_SPDX = re.compile(rb'"spdxVersion"\s*:|spdx\.org/rdf/3')
_DSSE = re.compile(rb'"payloadType"\s*:')


class UndetectedType(LinegateError):
    status = 422
    title = "Unknown document type"


async def parse_form(request: Request, max_bytes: int) -> FormData:
    """The multipart form, refused with 413 as soon as it passes the upload limit."""
    limit = max_bytes + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the upload exceeds the {max_bytes}-byte limit")

    async def bounded() -> AsyncGenerator[bytes, None]:
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit:
                raise PayloadTooLarge(f"the upload exceeds the {max_bytes}-byte limit")
            yield chunk

    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise UnsupportedMediaType("the upload form is sent as multipart/form-data")
    parser = MultiPartParser(request.headers, bounded(), max_files=1, max_fields=8)
    try:
        return await parser.parse()
    except MultiPartException as e:
        raise LinegateError(f"malformed form: {e.message}") from e


def detect_type(head: bytes, declared: str | None) -> str:
    """The Content-Type to upload as: the file part's own when it is one the API takes, else
    sniffed from the document's opening (verification, not this guess, decides the outcome)."""
    if declared:
        try:
            return media_type(declared)
        except UnsupportedMedia:
            pass  # browsers send application/json or octet-stream for these files
    if m := _SIGSTORE.search(head):
        return media_type(m.group(1).decode())
    if _CYCLONEDX.search(head):
        return MEDIA_CYCLONEDX
    if _SPDX.search(head):
        return MEDIA_SPDX
    if _DSSE.search(head):
        return MEDIA_DSSE
    raise UndetectedType(
        "could not tell what this document is; choose its type in the form and upload again"
    )


async def chosen_type(file: UploadFile, choice: str) -> str:
    if choice != "auto":
        try:
            return media_type(choice)
        except UnsupportedMedia as e:
            raise UnsupportedMediaType(str(e)) from e
    head = await file.read(SNIFF_BYTES)
    await file.seek(0)
    return detect_type(head, file.content_type)


@dataclass(frozen=True)
class ApiAnswer:
    status: int
    body: dict[str, Any]


async def post_to_api(
    request: Request, token: str, content_type: str, file: UploadFile
) -> ApiAnswer:
    """``POST /v1/attestations`` on this app, streaming the file from its spool."""

    async def chunks() -> AsyncIterator[bytes]:
        while chunk := await file.read(CHUNK):
            yield chunk

    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    if file.size is not None:  # lets the API refuse an oversized file before reading it
        headers["Content-Length"] = str(file.size)
    transport = httpx.ASGITransport(app=request.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://portal.internal") as api:
        response = await api.post(
            "/v1/attestations",
            content=chunks(),
            headers=headers,
        )
    try:
        body = response.json()
    except ValueError:
        body = {}
    return ApiAnswer(response.status_code, body if isinstance(body, dict) else {})
