"""Parsers that turn Markdown, reStructuredText, plain text, PDF text and HTML into blocks."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser

from linegate_cli.scan_notes.blocks import BlockCollector
from linegate_cli.scan_notes.text import VERSION, word_set

# ------------------------------------------------------------------ Markdown, RST, plain text

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:\s+(.*?))?(?:\s+#+)?\s*$")
_UNDERLINE = re.compile(r"^ {0,3}([=\-~^\"'`#*+:._])\1{2,}\s*$")
_TABLE_SEP = re.compile(r"^\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?$")
_REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*\S+")
_QUOTE = re.compile(r"^\s*(?:>\s?)+")
_BULLET = re.compile(r"^\s*(?:[-*+\u2022\u25aa\u25e6\u2023\u2013]|\(?\d{1,3}[.)])\s+")
_RST_DIRECTIVE = re.compile(r"^\.\.\s+[\w-]+::\s*(.*)$")
_VERSION_WORDS = re.compile(
    r"^(?:release|version|v|build|update|patch|hotfix|sp|service\s+pack)\b", re.IGNORECASE
)

_MD_INLINE: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"<!--.*?-->"), ""),
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),
    (re.compile(r"\[([^\]]+)\]\[[^\]]*\]"), r"\1"),
    (re.compile(r"<((?:https?|mailto):[^>\s]+)>"), r"\1"),
    (re.compile(r"</?[A-Za-z][^>]*>"), ""),
    (re.compile(r"(\*\*|__|~~)(?=\S)(.+?)(?<=\S)\1"), r"\2"),
    (re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])"), r"\1"),
    (re.compile(r"(?<!\w)_(?=\S)(.+?)(?<=\S)_(?!\w)"), r"\1"),
    (re.compile(r"(`+)(.+?)\1"), r"\2"),
    (re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>])"), r"\1"),
)
_RST_INLINE: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r":[\w:+-]+:`([^`<]*?)\s*(?:<[^>]*>)?`"), r"\1"),
    (re.compile(r"`([^`<]+?)\s*<[^>]*>`_{1,2}"), r"\1"),
    (re.compile(r"``(.+?)``"), r"\1"),
    (re.compile(r"(\*\*|\*)(?=\S)(.+?)(?<=\S)\1"), r"\2"),
    (re.compile(r"`([^`]+)`_{0,2}"), r"\1"),
)


@dataclass(frozen=True)
class Dialect:
    """Which syntax a :class:`LineParser` recognises."""

    markdown: bool = False  # ATX headings, tables, inline markup
    rst: bool = False
    fences: bool = True
    guess_headings: bool = False  # short standalone lines that look like headings
    loose: bool = False  # PDF text: paragraphs are rarely separated by blank lines


def _clean(text: str, rules: Sequence[tuple[re.Pattern[str], str]]) -> str:
    for pattern, repl in rules:
        text = pattern.sub(repl, text)
    return text


class LineParser:
    """Turns lines of Markdown, RST, plain text or extracted PDF text into blocks."""

    def __init__(self, out: BlockCollector, dialect: Dialect) -> None:
        self.out = out
        self.dialect = dialect
        self._fence: str | None = None
        self._item = False  # the open block is a list item
        self._count = 0  # lines in the open block
        self._first: tuple[int, str] = (0, "")  # first line of the open block (setext headings)
        self._ended = True  # the previous line ended a sentence, or there was none
        self._adornments: list[str] = []  # RST underline characters, in order of first use

    def feed(self, lines: Iterable[tuple[int, str]]) -> None:
        for number, raw in lines:
            self._line(number, raw.expandtabs(4).rstrip())
        self._close()

    def _close(self) -> None:
        self.out.flush()
        self._count, self._item, self._ended = 0, False, True

    def _heading(self, level: int, text: str, line: int) -> None:
        self.out.heading(level, self._inline(text), line)
        self._count, self._item, self._ended = 0, False, True

    def _inline(self, text: str) -> str:
        if self.dialect.markdown:
            return _clean(text, _MD_INLINE)
        if self.dialect.rst:
            return _clean(text, _RST_INLINE)
        return text

    def _append(self, number: int, text: str, *, clean: bool = True) -> None:
        text = self._inline(text).strip() if clean else text
        if self._count == 0:
            self._first = (number, text)
        self.out.add(text, number, sep="\n" if self.out.open else "")
        self._count += 1
        self._ended = text.endswith((".", "!", "?", ":"))

    def _line(self, number: int, line: str) -> None:  # noqa: PLR0911, PLR0912 - one case per syntax
        dialect = self.dialect
        if dialect.fences:
            fence = _FENCE.match(line)
            if self._fence is not None:
                if fence and fence.group(1)[0] == self._fence[0]:
                    self._fence = None
                    self._close()
                elif line.strip():
                    # Code is kept verbatim: a configuration key can name a model, too.
                    self._append(number, line.strip(), clean=False)
                return
            if fence:
                self._close()
                self._fence = fence.group(1)
                return
        if dialect.markdown:
            line = _QUOTE.sub("", line)
        stripped = line.strip()
        if not stripped:
            self._close()
            return
        if dialect.markdown or not dialect.loose:
            atx = _ATX.match(line)
            if atx and (dialect.markdown or atx.group(2)):
                self._heading(len(atx.group(1)), atx.group(2) or "", number)
                return
        if _UNDERLINE.match(line) and not dialect.loose:
            if self._count == 1 and not self._item:
                self.out.discard()
                self._heading(self._underline_level(stripped[0]), self._first[1], self._first[0])
            else:  # an overline, or a thematic break
                self._close()
            return
        if dialect.markdown:
            if "|" in stripped and _TABLE_SEP.match(stripped):
                return
            if stripped.startswith("|"):
                self._close()
                cells = [cell.strip() for cell in stripped.strip("|").split("|")]
                self._append(number, " | ".join(cell for cell in cells if cell))
                self._close()
                return
            if _REF_DEF.match(line):
                return
        if dialect.rst and stripped.startswith(".."):
            directive = _RST_DIRECTIVE.match(stripped)
            if directive is None or not directive.group(1):
                return  # a comment, or a directive without inline text
            line = stripped = directive.group(1)
        bullet = _BULLET.match(line)
        if bullet:
            self._close()
            self._item = True
            self._append(number, line[bullet.end() :])
            return
        if dialect.guess_headings:
            level = self._guess_heading(stripped)
            if level:
                self._heading(level, stripped, number)
                return
        self._append(number, stripped)

    def _underline_level(self, char: str) -> int:
        if self.dialect.markdown:
            return 1 if char == "=" else 2
        if char not in self._adornments:
            self._adornments.append(char)
        return self._adornments.index(char) + 1

    def _guess_heading(self, line: str) -> int:
        """1 for a release/version line, 2 for another heading-like line, 0 for running text."""
        words = line.split()
        standalone = self._count == 0 or (self.dialect.loose and self._ended)
        if not standalone or len(line) > 80 or len(words) > 10 or line[-1] in ".,;!?":
            return 0
        version = VERSION.search(line)
        if version and len(words) <= 8:
            before = line[: version.start()].split()
            if _VERSION_WORDS.match(line) or all(w[0].isupper() or w[0].isdigit() for w in before):
                return 1
        if line.endswith(":") and len(words) <= 6:
            return 2
        letters = [c for c in line if c.isalpha()]
        if len(letters) >= 3 and all(c.isupper() for c in letters):
            return 2
        long_words = [w for w in words if len(w) > 3 and w[0].isalpha()]
        if len(words) <= 8 and line[0].isupper() and all(w[0].isupper() for w in long_words):
            return 2
        return 0


# ---------------------------------------------------------------------------------- HTML

_HTML_BLOCKS = word_set(
    "address article aside blockquote body caption dd details dialog div dl dt fieldset "
    "figcaption figure footer form header hr html li main nav ol p pre section summary table "
    "tbody tfoot thead tr ul"
)
_HTML_SKIP = word_set("script style noscript template svg math title iframe object")
_HTML_HEADINGS = frozenset(f"h{n}" for n in range(1, 7))


class HtmlBlocks(HTMLParser):
    """Block elements end passages; headings become context; scripts and styles are dropped."""

    def __init__(self, out: BlockCollector) -> None:
        super().__init__(convert_charrefs=True)
        self.out = out
        self._skip = 0
        self._heading: tuple[int, int, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HTML_SKIP:
            self._skip += 1
        elif self._skip:
            return
        elif tag in _HTML_HEADINGS:
            self.out.flush()
            self._heading = (int(tag[1]), self.getpos()[0], [])
        elif tag in _HTML_BLOCKS:
            self.out.flush()
        elif tag in ("td", "th") and self.out.open:
            self.out.add(" | ", None)
        elif tag == "br":
            self.out.add("\n", None)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _HTML_SKIP:  # <svg/> and the like have no content to skip
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HTML_SKIP:
            self._skip = max(0, self._skip - 1)
        elif self._skip:
            return
        elif tag in _HTML_HEADINGS and self._heading is not None:
            level, line, parts = self._heading
            self._heading = None
            self.out.heading(level, "".join(parts), line)
        elif tag in _HTML_BLOCKS:
            self.out.flush()

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._heading is not None:
            self._heading[2].append(data)
        else:
            self.out.add(data, self.getpos()[0])
