"""App factory: ``uvicorn attestation.app:create_app --factory``."""

import asyncio
import contextlib
import functools
import logging
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Histogram

import attestation
from attestation import api, portal, sla
from attestation.api import fastpath
from attestation.ingest import IngestLimits, Ingestor
from attestation.repository import SlaRepository
from attestation.settings import AttestationSettings
from attestation.sigstore_bundle import SigstoreVerifier, default_trusted_root_paths
from attestation.trust import TrustCache
from attestation.verification import verify_upload
from linegate.auth import TokenIssuer
from linegate.events import Streams
from linegate.service import ServiceContext, create_service_app

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger("attestation")


#: Uploads per group commit: how well concurrent uploads share a transaction (see ingest).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@functools.cache
def _batch_histogram(registry: CollectorRegistry) -> Histogram:
    """The batch-size histogram in ``registry`` (one per registry, however often the app's
    lifespan starts)."""
    return Histogram(
        "linegate_attestation_ingest_batch_uploads",
        "Uploads recorded per group commit",
        buckets=BATCH_BUCKETS,
        registry=registry,
    )


def create_app(settings: AttestationSettings | None = None) -> FastAPI:
    settings = settings or AttestationSettings()
    app: FastAPI

    async def evaluate_slas_forever(ctx: ServiceContext) -> None:
        while True:
            await asyncio.sleep(settings.sla_evaluation_interval_seconds)
            try:
                async with ctx.db.session() as session:
                    await sla.evaluate_breaches(SlaRepository(session), ctx.audit)
                ctx.outbox.wake()
            except Exception:
                log.exception("SLA evaluation failed; will retry")

    async def start_sla_evaluator(ctx: ServiceContext) -> None:
        app.state.sla_task = asyncio.create_task(evaluate_slas_forever(ctx), name="sla-evaluator")

    async def stop_sla_evaluator(ctx: ServiceContext) -> None:
        task = app.state.sla_task
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def start_issuer(ctx: ServiceContext) -> None:
        # The embedded OAuth2 issuer lives here (API.md); with an external issuer configured
        # the token endpoint answers 503 instead of minting tokens nobody would accept.
        app.state.token_issuer = (
            None if settings.external_issuer else TokenIssuer.embedded(settings)
        )
        # Sigstore trust roots are pinned files, loaded once; nothing is fetched at verify time.
        roots = settings.sigstore_trusted_roots or default_trusted_root_paths()
        app.state.sigstore = SigstoreVerifier.from_files(roots)

    async def start_ingest(ctx: ServiceContext) -> None:
        verify = functools.partial(
            verify_upload,
            sigstore=app.state.sigstore,
            max_depth=settings.attestation_max_json_depth,
        )
        app.state.ingestor = Ingestor(
            ctx.db,
            ctx.audit,
            ctx.outbox.wake,
            TrustCache(),
            verify=verify,
            limits=IngestLimits(
                default_max_age=timedelta(days=settings.attestation_default_max_age_days),
                clock_skew=timedelta(seconds=settings.attestation_clock_skew_seconds),
                batch_max=settings.attestation_ingest_batch_max,
                inline_verify_max_bytes=settings.attestation_inline_verify_max_bytes,
                duplicate_precheck_min_bytes=settings.attestation_duplicate_precheck_min_bytes,
            ),
            committed=_batch_histogram(ctx.metrics.registry).observe,
        )
        await app.state.ingestor.start()

    async def stop_ingest(ctx: ServiceContext) -> None:
        # Before the outbox relay stops and the database closes: what is queued gets recorded.
        await app.state.ingestor.stop()

    app = create_service_app(
        settings,
        title="Linegate attestation",
        description=attestation.__doc__ or "",
        routers=[api.router, portal.router],
        migrations=MIGRATIONS,
        streams=(Streams.ATTESTATION,),
        on_startup=[start_issuer, start_ingest, start_sla_evaluator],
        on_shutdown=[stop_sla_evaluator, stop_ingest],
    )
    # Outermost of the whole middleware stack: uploads skip the router, the dependency graph
    # and every layer between; it answers their errors and counts them in the metrics.
    fastpath.install(app)
    return app
