"""Compliance routes: the Annex IV technical file, the signed evidence bundle, the controls
matrix of a version, and the portfolio risk report of the inventory."""

import contextlib
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.background import BackgroundTask

from linegate.auth import Principal, Role, require
from registry.deps import ReaderDep, RegistryDep
from registry.techfile import bundle, controls, document, html, pdf, portfolio
from registry.techfile.facts import gather
from registry.techfile.sources import Sources

router = APIRouter(tags=["compliance"])
VersionPath = "/v1/models/{name}/versions/{version}"
AuditorDep = Annotated[Principal, Depends(require(Role.AUDITOR))]


def get_sources(request: Request) -> Sources:
    sources: Sources = request.app.state.sources
    return sources


SourcesDep = Annotated[Sources, Depends(get_sources)]


@router.get(
    VersionPath + "/technical-file",
    responses={200: {"content": {"application/json": {}, "text/html": {}, "application/pdf": {}}}},
)
async def technical_file(
    name: str,
    version: str,
    _: ReaderDep,
    registry: RegistryDep,
    sources: SourcesDep,
    format_: Annotated[Literal["json", "html", "pdf"], Query(alias="format")] = "json",
) -> Response:
    """The Annex IV technical file: nine sections, each statement with its evidence, every
    missing item a gap with the reason, and a completeness score."""
    doc = document.build(await gather(registry, sources, name, version))
    if format_ == "html":
        return HTMLResponse(html.render(doc))
    if format_ == "pdf":
        filename = f"technical-file-{name}-{version}.pdf"
        return Response(
            pdf.render(doc),
            media_type="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
    return JSONResponse(doc)


@router.post(
    VersionPath + "/evidence-bundle",
    response_class=Response,
    responses={200: {"content": {"application/gzip": {}}}},
)
async def export_evidence_bundle(
    name: str, version: str, principal: AuditorDep, registry: RegistryDep, sources: SourcesDep
) -> Response:
    """The signed auditor bundle (tar.gz): technical file, raw attestations, signatures,
    golden-set reports, audit proofs, keys and a DSSE-signed in-toto manifest. Audited."""
    # Built on disk in a staging directory of the blob store and sent from there; the
    # directory goes once the response is sent, or at once if the export fails (a crash leaves
    # it to the store's staging sweep).
    stack = contextlib.ExitStack()
    stage = stack.enter_context(registry.store.staging())
    try:
        filename, path = await bundle.export(
            registry, sources, principal, name, version, stage.directory
        )
    except BaseException:
        stack.close()
        raise
    return FileResponse(
        path,
        media_type="application/gzip",
        filename=filename,
        background=BackgroundTask(stack.close),
    )


@router.get(VersionPath + "/controls")
async def version_controls(
    name: str, version: str, _: ReaderDep, registry: RegistryDep, sources: SourcesDep
) -> dict[str, Any]:
    """Each control of the matrix (EU AI Act, NIS2 Art. 21(2), NIST AI RMF): met, partially
    met or open for this version, with the evidence links."""
    facts = await gather(registry, sources, name, version)
    return controls.evaluate(controls.load(), document.build(facts))


@router.get("/v1/inventory/portfolio", tags=["inventory"])
async def inventory_portfolio(
    _: ReaderDep, registry: RegistryDep, sources: SourcesDep
) -> dict[str, Any]:
    """Every system by EU AI Act category and NIST tier: owners, missing answers, open
    incidents (unknown when the incident service does not answer), evidence completeness."""
    return await portfolio.report(registry, sources)
