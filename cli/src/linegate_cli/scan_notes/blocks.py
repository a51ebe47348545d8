"""Blocks of a document (paragraphs, list items, headings) with where each came from."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

from linegate_cli.scan_notes.errors import ScanNotesError
from linegate_cli.scan_notes.text import squash

MAX_TEXT_CHARS = 10_000_000  # PDF streams inflate: cap what extraction may produce as well


@dataclass(frozen=True)
class TextBlock:
    """A paragraph, list item, table row or heading of a document, with where it came from."""

    text: str
    lines: tuple[tuple[int, int], ...] = ()  # (offset in text, source line) where each line starts
    page: int | None = None
    headings: tuple[str, ...] = ()  # enclosing headings, outermost first
    is_heading: bool = False

    def line_at(self, offset: int) -> int | None:
        """The source line of the character at ``offset`` (None for PDF pages)."""
        if not self.lines:
            return None
        i = bisect_right([start for start, _ in self.lines], offset) - 1
        return self.lines[max(i, 0)][1]


class BlockCollector:
    """Collects blocks; text arrives in pieces, each with the source line it starts on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.blocks: list[TextBlock] = []
        self.page: int | None = None
        self._headings: list[tuple[int, str]] = []
        self._parts: list[str] = []
        self._lines: list[tuple[int, int]] = []
        self._size = 0
        self._total = 0

    def add(self, text: str, line: int | None, *, sep: str = "") -> None:
        if self._parts and sep:
            self._append(sep, None)
        for k, segment in enumerate(text.split("\n")):
            if k:
                self._append("\n", None)
            self._append(segment, None if line is None else line + k)

    def _append(self, text: str, line: int | None) -> None:
        if line is not None and text.strip():
            self._lines.append((self._size, line))
        self._parts.append(text)
        self._size += len(text)
        self._total += len(text)
        if self._total > MAX_TEXT_CHARS:
            raise ScanNotesError(f"{self.path}: more than {MAX_TEXT_CHARS:,} characters of text")

    @property
    def open(self) -> bool:
        """Whether the open block has any text yet."""
        return bool(self._lines)

    def discard(self) -> None:
        self._parts, self._lines, self._size = [], [], 0

    def flush(self) -> None:
        text = "".join(self._parts)
        if text.strip():
            path = tuple(h for _, h in self._headings)
            self.blocks.append(TextBlock(text, tuple(self._lines), self.page, path))
        self.discard()

    def heading(self, level: int, text: str, line: int | None) -> None:
        self.flush()
        text = squash(text).rstrip(":").strip()
        if not text:
            return
        while self._headings and self._headings[-1][0] >= level:
            self._headings.pop()
        self._headings.append((level, text))
        lines = ((0, line),) if line is not None else ()
        path = tuple(h for _, h in self._headings)
        self.blocks.append(TextBlock(text, lines, self.page, path, is_heading=True))
