"""Release-notes files to blocks (:func:`extract_text`), and blocks to passages."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from pathlib import Path

from linegate_cli.scan_notes.blocks import BlockCollector, TextBlock
from linegate_cli.scan_notes.errors import ScanNotesError
from linegate_cli.scan_notes.parsers import Dialect, HtmlBlocks, LineParser
from linegate_cli.scan_notes.text import squash

MAX_FILE_BYTES = 20 * 1024 * 1024
PASSAGE_CHARS = 500  # longer paragraphs (typical of PDF pages) are cut at sentence ends


# ------------------------------------------------------------------------------- reading

_BINARY_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a ZIP archive or Office document (.docx/.xlsx): export it as PDF or HTML"),
    (b"\xd0\xcf\x11\xe0", "a legacy Office document (.doc/.xls): export it as PDF or HTML"),
    (b"{\\rtf", "an RTF document: export it as PDF or plain text"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x7fELF", "an executable"),
    (b"\x1f\x8b", "a gzip archive"),
)
_MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdown", ".mkd"})
_HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([\w.:-]+)""", re.IGNORECASE)


def _read(path: Path) -> bytes:
    try:
        if path.is_dir():
            raise ScanNotesError(f"{path}: is a directory")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ScanNotesError(
                f"{path}: {size / 2**20:.1f} MiB is over the "
                f"{MAX_FILE_BYTES / 2**20:.0f} MiB limit for release notes"
            )
        return path.read_bytes()
    except FileNotFoundError as e:
        raise ScanNotesError(f"{path}: no such file") from e
    except OSError as e:
        raise ScanNotesError(f"{path}: cannot read: {e.strerror or e}") from e


def _decode(path: Path, data: bytes, encoding: str = "utf-8-sig") -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    for magic, what in _BINARY_MAGIC:
        if data.startswith(magic):
            raise ScanNotesError(f"{path}: unsupported format: looks like {what}")
    if b"\x00" in data[:65536]:
        raise ScanNotesError(f"{path}: binary data, not text, HTML or PDF release notes")
    text = data.decode(encoding, errors="replace")
    sample = text[:65536]
    junk = sum(1 for c in sample if c == "\ufffd" or (c < " " and c not in "\t\n\r\f\v"))
    if sample and junk / len(sample) > 0.05:
        raise ScanNotesError(f"{path}: binary data, not text, HTML or PDF release notes")
    return text


def _html_encoding(data: bytes) -> str:
    match = _CHARSET.search(data[:4096])
    if match:
        try:
            return codecs.lookup(match.group(1).decode("ascii")).name
        except (LookupError, UnicodeDecodeError):
            pass
    return "utf-8-sig"


def _pdf_pages(path: Path, data: bytes) -> list[str]:
    """The text of each page, extracted by pypdf."""
    import io

    from pypdf import PdfReader

    # pypdf raises assorted exceptions (ValueError, KeyError, its own PdfReadError...) on
    # malformed files; every one of them means "this PDF cannot be read".
    try:
        reader = PdfReader(io.BytesIO(data))
        locked = reader.is_encrypted and not reader.decrypt("")
    except Exception as e:
        raise ScanNotesError(f"{path}: cannot read the PDF: {e}") from e
    if locked:
        raise ScanNotesError(f"{path}: the PDF is password-protected")
    try:
        pages = [page.extract_text() or "" for page in reader.pages]
    except Exception as e:
        raise ScanNotesError(f"{path}: cannot read the PDF: {e}") from e
    if not any(text.strip() for text in pages):
        raise ScanNotesError(
            f"{path}: the PDF has no extractable text (a scanned image?); run OCR on it first"
        )
    return pages


def _pdf_blocks(path: Path, data: bytes, out: BlockCollector) -> None:
    # Headings carry over from page to page; paragraphs end with their page.
    parser = LineParser(out, Dialect(fences=False, guess_headings=True, loose=True))
    for number, text in enumerate(_pdf_pages(path, data), start=1):
        out.page = number
        parser.feed(enumerate(text.splitlines(), start=1))


def extract_text(path: Path) -> list[TextBlock]:
    """The blocks of a release-notes file, in document order.

    The format is taken from the content (``%PDF-``, an HTML doctype) and the suffix: ``.pdf``,
    ``.html``/``.htm``, ``.md``/``.markdown``, ``.rst``; anything else is read as UTF-8 text.
    Raises :class:`ScanNotesError` for missing, oversized, binary or unreadable files.
    """
    data = _read(path)
    out = BlockCollector(path)
    suffix = path.suffix.lower()
    if data[:1024].lstrip().startswith(b"%PDF-"):
        _pdf_blocks(path, data, out)
        return out.blocks
    if suffix == ".pdf":
        raise ScanNotesError(f"{path}: not a PDF file (no %PDF- header)")
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if suffix in _HTML_SUFFIXES or head.startswith((b"<!doctype html", b"<html")):
        html = HtmlBlocks(out)
        html.feed(_decode(path, data, _html_encoding(data)))
        html.close()
        out.flush()
        return out.blocks
    text = _decode(path, data)
    if suffix in _MARKDOWN_SUFFIXES:
        dialect = Dialect(markdown=True)
    elif suffix == ".rst":
        dialect = Dialect(rst=True, guess_headings=True)
    else:
        dialect = Dialect(guess_headings=True)
    LineParser(out, dialect).feed(enumerate(text.splitlines(), start=1))
    return out.blocks


# -------------------------------------------------------------------------------- passages

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def passages(block: TextBlock) -> Iterator[tuple[int, int]]:
    """(start, end) in ``block.text`` of each passage: the whole block, or sentence windows."""
    text = block.text
    if len(squash(text)) <= PASSAGE_CHARS:
        yield from _bounded(text, 0, len(text))
        return
    cuts = [0, *(m.end() for m in _SENTENCE_END.finditer(text)), len(text)]
    start = 0
    for end, following in zip(cuts[1:], [*cuts[2:], None], strict=True):
        if following is not None and len(squash(text[start:following])) <= PASSAGE_CHARS:
            continue  # the next sentence still fits in this window
        if text[start:end].strip():
            yield from _bounded(text, start, end)
        start = end


def _bounded(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    # A "sentence" with no end in sight (minified HTML, a dumped table) is cut at spaces.
    while end - start > 2 * PASSAGE_CHARS:
        cut = text.rfind(" ", start + 1, start + PASSAGE_CHARS)
        cut = cut if cut > start else start + PASSAGE_CHARS
        yield start, cut
        start = cut
    yield start, end
