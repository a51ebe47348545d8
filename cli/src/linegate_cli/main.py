"""``linegate`` entry point (typer)."""

from __future__ import annotations

from typing import Annotated

import typer

from linegate.roles import Role
from linegate.settings import LinegateSettings
from linegate_cli import attest, inventory, model

app = typer.Typer(
    no_args_is_help=True,
    help="Linegate: compliance as a by-product of running AI on factory lines.",
)
app.add_typer(attest.app, name="attest")
app.add_typer(inventory.app, name="inventory")
app.add_typer(model.app, name="model")


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


if __name__ == "__main__":
    app()
