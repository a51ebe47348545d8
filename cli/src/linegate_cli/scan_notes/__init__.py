"""Find AI features in vendor release notes: candidates for the AI inventory (NIST AI RMF MAP 1.1).

MES, ERP, SCADA and SaaS vendors add AI features in ordinary updates, and the plant's inventory
must list them too. This module reads release notes (Markdown, reStructuredText, plain text, HTML,
PDF), splits them into passages that keep their place (file, line or page, enclosing headings) and
scores each passage against a rule set of AI/ML phrases. It decides nothing: each candidate carries
a *suggested* inventory entry for a person to confirm or dismiss::

    from pathlib import Path
    from linegate_cli.scan_notes import scan_files

    for candidate in scan_files([Path("meridian-mes-7.2.md")], vendor="Meridian"):
        print(candidate.location, candidate.score, candidate.terms)
    # meridian-mes-7.2.md:7 9 ('smart', 'AI-powered', 'automatically re-sequences', ...)

Only the standard library is needed, except ``pypdf`` for PDF files (imported when one is read).
"""

from linegate_cli.scan_notes.blocks import MAX_TEXT_CHARS, TextBlock
from linegate_cli.scan_notes.candidates import (
    REVIEW_NOTE,
    Candidate,
    SuggestedEntry,
    scan_file,
    scan_files,
)
from linegate_cli.scan_notes.errors import ScanNotesError
from linegate_cli.scan_notes.extract import MAX_FILE_BYTES, PASSAGE_CHARS, extract_text
from linegate_cli.scan_notes.rules import DEFAULT_MIN_SCORE, Assessment, Kind, assess_passage

__all__ = [
    "DEFAULT_MIN_SCORE",
    "MAX_FILE_BYTES",
    "MAX_TEXT_CHARS",
    "PASSAGE_CHARS",
    "REVIEW_NOTE",
    "Assessment",
    "Candidate",
    "Kind",
    "ScanNotesError",
    "SuggestedEntry",
    "TextBlock",
    "assess_passage",
    "extract_text",
    "scan_file",
    "scan_files",
]
