"""``linegate inventory``: keep the AI inventory (NIST AI RMF MAP 1.1) complete.

Vendors add AI features to MES, ERP, SCADA and SaaS platforms in ordinary updates. Point
``scan-notes`` at their release notes and review what it finds::

    linegate inventory scan-notes meridian-mes-7.2.md orbis-erp-2024.2.html --vendor Meridian
    meridian-mes-7.2.md:7  [9]  smart, AI-powered, automatically re-sequences, ...
        Smart Sequencer: AI-powered scheduling that automatically re-sequences orders ...
    ...
    2 candidate(s) in 2 file(s): confirm or dismiss each before adding it to the inventory

``--json`` prints the same candidates as a JSON array for other tools. Exit status 0 means
every file was read (with or without candidates); 2 means a file was missing, unreadable or of
an unsupported kind, with ``error: <file>: <reason>`` on stderr and nothing on stdout.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Annotated

import typer

from linegate_cli import scan_notes

app = typer.Typer(
    no_args_is_help=True,
    help="Keep the AI inventory complete: find AI features that vendors add in updates.",
)

_WIDTH = 96  # fixed, so that output is the same on every terminal and in CI logs
_PASSAGE_CHARS = 400


def _trim(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rsplit(" ", 1)[0] + "..."


def _render(candidate: scan_notes.Candidate) -> str:
    entry = candidate.suggestion
    indent = " " * 4
    lines = [f"{candidate.location}  [{candidate.score}]  {', '.join(candidate.terms)}"]
    lines += textwrap.wrap(
        _trim(candidate.passage, _PASSAGE_CHARS),
        _WIDTH,
        initial_indent=indent,
        subsequent_indent=indent,
    )
    if candidate.headings:
        lines.append(f"{indent}section: {' > '.join(candidate.headings)}")
    suggestion = (
        f"suggested entry (unconfirmed): name {json.dumps(entry.name)}, "
        f"vendor {json.dumps(entry.vendor)}, version {entry.version or 'unknown'}, "
        f"influences decisions: {'yes' if entry.influences_decision else 'no'}, "
        f"tier hint: {entry.suggested_tier} ({entry.tier_reason})"
    )
    lines += textwrap.wrap(suggestion, _WIDTH, initial_indent=indent, subsequent_indent=indent * 2)
    return "\n".join(lines)


@app.command(
    "scan-notes",
    help="List passages of vendor release notes that describe AI/ML behaviour, each with a "
    "suggested inventory entry (name, vendor, version, influences decisions, tier hint) for a "
    "person to confirm or dismiss. Nothing is added to the inventory.",
)
def scan_notes_command(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE",
            help="Release notes: Markdown, reStructuredText, plain text, HTML or PDF",
            show_default=False,
        ),
    ],
    vendor: Annotated[
        str | None,
        typer.Option(help="Vendor name for the suggested entries (default: each file's name)"),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON array of candidates instead")
    ] = False,
    min_score: Annotated[
        int,
        typer.Option(
            "--min-score",
            min=1,
            help="Lowest score to report (a strong AI term scores 3; weaker terms 1 or 2)",
        ),
    ] = scan_notes.DEFAULT_MIN_SCORE,
) -> None:
    """Print AI inventory candidates found in release notes (see ``help=`` above)."""
    try:
        candidates = scan_notes.scan_files(files, vendor=vendor, min_score=min_score)
    except scan_notes.ScanNotesError as e:
        for problem in e.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2) from e
    if as_json:
        typer.echo(json.dumps([c.to_dict() for c in candidates], indent=2, ensure_ascii=False))
        return
    for candidate in candidates:
        typer.echo(_render(candidate) + "\n")
    scanned = len(dict.fromkeys(files))
    typer.echo(
        f"{len(candidates)} candidate(s) in {scanned} file(s): "
        "confirm or dismiss each before adding it to the inventory"
    )
