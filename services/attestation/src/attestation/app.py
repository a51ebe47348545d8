"""App factory: ``uvicorn attestation.app:create_app --factory``."""

from pathlib import Path

from fastapi import FastAPI

import attestation
from attestation import api
from attestation.settings import AttestationSettings
from linegate.auth import TokenIssuer
from linegate.events import Streams
from linegate.service import ServiceContext, create_service_app

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: AttestationSettings | None = None) -> FastAPI:
    settings = settings or AttestationSettings()
    app: FastAPI

    async def start_issuer(ctx: ServiceContext) -> None:
        # The embedded OAuth2 issuer lives here (API.md); with an external issuer configured
        # the token endpoint answers 503 instead of minting tokens nobody would accept.
        app.state.token_issuer = (
            None if settings.external_issuer else TokenIssuer.embedded(settings)
        )

    app = create_service_app(
        settings,
        title="Linegate attestation",
        description=attestation.__doc__ or "",
        routers=[api.router],
        migrations=MIGRATIONS,
        streams=(Streams.ATTESTATION,),
        on_startup=[start_issuer],
    )
    return app
