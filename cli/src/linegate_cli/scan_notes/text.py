"""Small text helpers shared by extraction, scoring and suggestions."""

from __future__ import annotations

import re

# A release or version number in a heading: "7.2.0", "v3.1", "2024 R2".
VERSION = re.compile(
    r"(?<![\w.])v?(\d+(?:\.\d+){1,3}(?:-[0-9A-Za-z.]+)?|\d{4}\s?R\d+)(?![\w.]*\d)", re.IGNORECASE
)


def word_set(text: str) -> frozenset[str]:
    """The whitespace-separated words of ``text``."""
    return frozenset(text.split())


def squash(text: str) -> str:
    """``text`` with runs of whitespace made one space, and no space at either end."""
    return " ".join(text.split())


def squash_map(raw: str) -> tuple[str, list[int]]:
    """``raw`` with runs of whitespace made one space, and the index in ``raw`` of each char."""
    chars: list[str] = []
    where: list[int] = []
    for word in re.finditer(r"\S+", raw):
        if chars:
            chars.append(" ")
            where.append(word.start())
        chars.extend(word.group())
        where.extend(range(word.start(), word.end()))
    return "".join(chars), where
