"""``linegate techfile MODEL VERSION``: the Annex IV technical file of a model version.

Prints (or writes with ``--out``) the JSON record, or the readable HTML or PDF, that the registry
generates (``GET /v1/models/{name}/versions/{version}/technical-file``), and reports its
completeness on stderr so a pipeline can keep stdout clean::

    linegate techfile weld-seam-inspector 2.1.0 --format html --out techfile.html
    linegate techfile weld-seam-inspector 2.1.0 --format pdf --out techfile.pdf
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from linegate_cli.evidence import RegistryUrl, fetch, registry_url


class Format(StrEnum):
    JSON = "json"
    HTML = "html"
    PDF = "pdf"


def techfile(
    model: Annotated[str, typer.Argument(metavar="MODEL")],
    version: Annotated[str, typer.Argument(metavar="VERSION")],
    token: Annotated[
        str, typer.Option(envvar="LINEGATE_TOKEN", help="Bearer token (auditor or registry role)")
    ],
    format_: Annotated[Format, typer.Option("--format", help="json, html or pdf")] = Format.JSON,
    out: Annotated[Path | None, typer.Option("--out", metavar="FILE")] = None,
    registry: RegistryUrl = None,
) -> None:
    """Print or write the Annex IV technical file of a model version."""
    url = f"{registry_url(registry)}/v1/models/{model}/versions/{version}/technical-file"
    data = fetch("GET", f"{url}?format={format_.value}", token)
    if format_ is Format.JSON:
        doc = json.loads(data)
        c = doc["completeness"]
        typer.echo(
            f"technical file {model} {version}: completeness {c['score']:.0%} "
            f"({c['statements']} statements, {c['gaps']} gaps)",
            err=True,
        )
    if out is None and format_ is Format.PDF:
        raise typer.BadParameter("a PDF is written to a file: add --out FILE", param_hint="--out")
    if out is None:
        typer.echo(data.decode())
    else:
        out.write_bytes(data)
        typer.echo(f"written: {out}", err=True)
