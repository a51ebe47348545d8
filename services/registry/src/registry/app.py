"""App factory: ``uvicorn registry.app:create_app --factory``."""

from pathlib import Path

from fastapi import FastAPI

import registry
from linegate.events import Streams
from linegate.service import ServiceContext, create_service_app
from registry import api
from registry.evidence import AttestationClient
from registry.model_signers import check_signing, prepare_signing
from registry.settings import RegistrySettings
from registry.storage import BlobStore
from registry.techfile.sources import Sources
from registry.versions import Registry

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    settings = settings or RegistrySettings()
    # A certificate whose key is missing or another's cannot sign: refuse before anything
    # connects, rather than start a registry whose every push fails.
    check_signing(settings)
    app: FastAPI

    async def start_registry(ctx: ServiceContext) -> None:
        # Key mode makes the registry's key on first start, so its public half can be
        # published (GET /v1/signing-keys) before anything is signed; certificate mode uses
        # the operator's key (checked above) and creates none.
        prepare_signing(settings)
        store = BlobStore(settings.storage_dir)
        store.sweep_staging()
        app.state.registry = Registry(
            settings=settings,
            db=ctx.db,
            audit=ctx.audit,
            store=store,
            attestations=AttestationClient(settings),
            outbox=ctx.outbox,
            report_key_path=settings.keys_dir / f"{settings.service_name}.pem",
        )
        app.state.sources = Sources(settings)

    async def stop_registry(ctx: ServiceContext) -> None:
        await app.state.registry.attestations.close()
        await app.state.sources.close()

    app = create_service_app(
        settings,
        title="Linegate registry",
        description=registry.__doc__ or "",
        routers=[api.router],
        migrations=MIGRATIONS,
        streams=(Streams.REGISTRY,),
        on_startup=[start_registry],
        on_shutdown=[stop_registry],
    )
    return app
