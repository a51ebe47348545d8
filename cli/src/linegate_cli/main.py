"""``linegate`` entry point (typer)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from linegate.roles import Role
from linegate_cli import attest, evidence, inventory, model, techfile

app = typer.Typer(
    no_args_is_help=True,
    help="Linegate: compliance as a by-product of running AI on factory lines.",
)
app.add_typer(attest.app, name="attest")
app.add_typer(inventory.app, name="inventory")
app.add_typer(model.app, name="model")
app.add_typer(evidence.app, name="evidence")
app.command(name="techfile")(techfile.techfile)


@app.command()
def up(
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Do not wait for every service to be ready")
    ] = False,
    no_demo: Annotated[
        bool, typer.Option("--no-demo", help="Do not seed the reference scenario")
    ] = False,
) -> None:
    """Start NATS (JetStream) and the four services on their fixed ports, seed the demo
    scenario (once), print URLs and tokens; Ctrl-C stops all."""
    from linegate.settings import LinegateSettings
    from linegate_cli import stack  # starts services: FastAPI-heavy imports only here

    raise typer.Exit(stack.run(LinegateSettings(), wait=not no_wait, seed_demo=not no_demo))


@app.command()
def token(
    role: Annotated[list[Role], typer.Option("--role", help="Role to grant (repeat for several)")],
    tenant: Annotated[
        str | None, typer.Option(help="Supplier id (required for --role supplier)")
    ] = None,
    device_id: Annotated[
        str | None, typer.Option("--device-id", help="Device id (required for --role device)")
    ] = None,
    sub: Annotated[str | None, typer.Option(help="Subject (who the token names)")] = None,
    ttl: Annotated[int | None, typer.Option(help="Lifetime in seconds")] = None,
) -> None:
    """Print a bearer token from the embedded issuer (development only)."""
    from linegate.auth import TokenIssuer
    from linegate.settings import LinegateSettings

    settings = LinegateSettings()
    try:
        issuer = TokenIssuer.embedded(settings)
        value, _ = issuer.issue(
            sub or f"dev-{role[0].value.replace(':', '-')}",
            role,
            tenant=tenant,
            device_id=device_id,
            ttl_seconds=ttl,
        )
    except (RuntimeError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(value)


@app.command()
def agent(
    device_id: Annotated[str, typer.Option("--device-id", help="This device's id")],
    creds: Annotated[
        Path,
        typer.Option("--creds", exists=True, dir_okay=False, help="The device's nkey seed file"),
    ],
    release_key: Annotated[
        list[Path],
        typer.Option(
            "--release-key",
            exists=True,
            dir_okay=False,
            help="Gateway public key(s) (PEM) release metadata must be signed with",
        ),
    ],
    model_key: Annotated[
        list[Path],
        typer.Option(
            "--model-key",
            exists=True,
            dir_okay=False,
            help="Pinned model-signature trust (PEM): the registry's public key, or with "
            "certificate signing its CA chain (root included)",
        ),
    ],
    nats_url: Annotated[
        str | None, typer.Option("--nats-url", help="Default: LINEGATE_NATS_URL")
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option("--state-dir", help="Slots and state (default: <data dir>/agent/<id>)"),
    ] = None,
    line: Annotated[
        str | None, typer.Option("--line", help="The device's line (telemetry subject)")
    ] = None,
    serve_port: Annotated[
        int | None,
        typer.Option("--serve-port", help="Serve the local inference API on 127.0.0.1:PORT"),
    ] = None,
    model_identity: Annotated[
        str | None,
        typer.Option(
            "--model-identity",
            help="The signer a certificate-signed model must carry (SAN or subject: the "
            "identity GET /v1/signing-keys publishes); without it any certificate the pinned "
            "CA chain issued passes. Does not apply to a pinned public key",
        ),
    ] = None,
) -> None:
    """Run the device agent: install verified releases from the desired state, report each step."""
    import asyncio

    from linegate.settings import LinegateSettings
    from linegate_cli import agent as device_agent

    settings = LinegateSettings()
    try:
        asyncio.run(
            device_agent.main(
                device_id=device_id,
                creds=creds,
                nats_url=nats_url or settings.nats_url,
                state_dir=state_dir or settings.data_dir / "agent" / device_id,
                release_key_paths=release_key,
                model_key_paths=model_key,
                line=line,
                serve_port=serve_port,
                model_identity=model_identity,
            )
        )
    except KeyboardInterrupt:
        pass
    except Exception as e:  # a start-up failure is reported as one line, not a traceback
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e


if __name__ == "__main__":
    app()
