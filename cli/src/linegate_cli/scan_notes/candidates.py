"""Candidates for the AI inventory: passages that score high enough, with a suggested entry."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from linegate_cli.scan_notes.blocks import TextBlock
from linegate_cli.scan_notes.errors import ScanNotesError
from linegate_cli.scan_notes.extract import extract_text, passages
from linegate_cli.scan_notes.rules import (
    DEFAULT_MIN_SCORE,
    Assessment,
    Hit,
    assess_passage,
    suggest_tier,
)
from linegate_cli.scan_notes.text import VERSION, squash_map, word_set

REVIEW_NOTE = (
    "suggestion from vendor release notes: a person must confirm or dismiss it "
    "before it is added to the AI inventory"
)


@dataclass(frozen=True)
class SuggestedEntry:
    """An inventory entry guessed from a passage; a person confirms, edits or dismisses it."""

    name: str
    vendor: str
    version: str | None
    description: str
    influences_decision: bool
    suggested_tier: int  # 1 safety / control, 2 quality / release / regulatory, 3 other
    tier_reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"status": "unconfirmed", **asdict(self), "review": REVIEW_NOTE}


@dataclass(frozen=True)
class Candidate:
    """A passage of release notes that reads as describing AI/ML behaviour."""

    file: str
    line: int | None
    page: int | None
    headings: tuple[str, ...]
    passage: str
    score: int
    terms: tuple[str, ...]
    decision_terms: tuple[str, ...]
    suggestion: SuggestedEntry

    @property
    def heading(self) -> str | None:
        return self.headings[-1] if self.headings else None

    @property
    def location(self) -> str:
        if self.page is not None:
            return f"{self.file}:p.{self.page}"
        return f"{self.file}:{self.line}" if self.line is not None else self.file

    def to_dict(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "file": self.file,
            "line": self.line,
            "page": self.page,
            "heading": self.heading,
            "section": list(self.headings),
            "score": self.score,
            "terms": list(self.terms),
            "decision_terms": list(self.decision_terms),
            "passage": self.passage,
            "suggested_entry": self.suggestion.to_dict(),
        }


_GENERIC = re.compile(
    r"^(?:(?:new|other|minor|major|general|key|notable)\s+)?(?:features?|what'?s\s+new"
    r"|enhancements?|improvements?|changes?|change\s*log|bug\s*fix(?:es)?|fix(?:es|ed)?"
    r"|resolved(?:\s+issues)?|known\s+issues?|issues?|highlights|overview|summary|notes?|added"
    r"|changed|removed|deprecated|security|updates?|misc(?:ellaneous)?|important|breaking"
    r"(?:\s+changes?)?|[A-Z]+-\d+|#\d+)$",
    re.IGNORECASE,
)
# "Smart Sequencer: ...", "Invoice guard - ...", "Collision guard | ..." (a table row)
_LEAD_IN = re.compile(
    r"^(?P<lead>[^\s:.!?|\u2013\u2014][^:.!?|\u2013\u2014]{1,58}?)\s*"
    r"(?::|\||\s[-\u2013\u2014]\s)\s*\S"
)
_ADJECTIVAL = frozenset(
    {
        "AI",
        "ML",
        "machine learning",
        "deep learning",
        "neural network",
        "computer vision",
        "generative AI",
        "LLM",
        "predictive model",
    }
)
_MODIFIERS = word_set(
    "intelligent smart automatic automated adaptive real-time built-in integrated embedded "
    "on-device edge cloud new"
)
_STOP_WORDS = word_set(
    "that which to for with and or of in on by from the a an is are now will can using uses use "
    "when where so as at into this it its based"
)


def _generic(heading: str) -> bool:
    """Headings that name no feature: "New features", "Fixed", a bare version, a doc title."""
    if _GENERIC.match(heading) or re.search(r"release\s+notes?", heading, re.IGNORECASE):
        return True
    rest = VERSION.sub(" ", heading)
    rest = re.sub(r"\(?\d{4}-\d{2}-\d{2}\)?|[()\[\],:\u2013\u2014-]", " ", rest)
    rest = re.sub(r"\b(?:release|version|v|build|update|patch|hotfix|r)\b", " ", rest, flags=re.I)
    return not rest.strip()


def _feature_phrase(text: str, hit: Hit) -> str:
    """The phrase around the strongest term: "AI-powered scheduling", "anomaly detection"."""
    words = []
    before = text[: hit.start].split()
    if before and before[-1].lower() in _MODIFIERS:
        words.append(before[-1])
    term = text[hit.start : hit.end]
    rest = text[hit.end :]
    suffix = re.match(r"-(?:based|powered|driven|enabled|assisted)\b", rest)
    if suffix:
        term += suffix.group()
        rest = rest[suffix.end() :]
    words.append(term)
    if suffix or hit.rule.label in _ADJECTIVAL or hit.label.startswith(("AI-", "ML-")):
        for word in re.findall(r"\S+", rest)[:3]:
            bare = word.rstrip(".,;:!?)")
            if not re.fullmatch(r"[A-Za-z][\w-]*", bare) or bare.lower() in _STOP_WORDS:
                break
            words.append(bare)
            if bare != word:
                break
    return " ".join(words)


def _suggest_name(passage: str, headings: tuple[str, ...], assessment: Assessment) -> str:
    lead = _LEAD_IN.match(passage)
    if lead and len(lead.group("lead").split()) <= 8 and not _generic(lead.group("lead")):
        name = lead.group("lead").strip()
    elif headings and not _generic(headings[-1]):
        name = headings[-1]
    elif assessment.hits:
        strong = [h for h in assessment.hits if h.rule.kind == "strong"] or list(assessment.hits)
        best = max(strong, key=lambda h: (h.rule.weight, -h.start))
        name = _feature_phrase(passage, best)
    else:  # only with min_score=0
        name = passage[:60]
    name = name[:80]
    return name[:1].upper() + name[1:]


def _version(headings: tuple[str, ...]) -> str | None:
    for heading in reversed(headings):
        match = VERSION.search(heading)
        if match:
            return match.group(1)
    return None


def _candidate(
    path: Path, block: TextBlock, offset: int, passage: str, found: Assessment, vendor: str
) -> Candidate:
    tier, reason = suggest_tier(" ".join((*block.headings[-1:], passage)))
    description = passage if len(passage) <= 240 else passage[:237].rsplit(" ", 1)[0] + "..."
    suggestion = SuggestedEntry(
        name=passage if block.is_heading else _suggest_name(passage, block.headings, found),
        vendor=vendor,
        version=_version(block.headings),
        description=description,
        influences_decision=bool(found.decision_terms),
        suggested_tier=tier,
        tier_reason=reason,
    )
    return Candidate(
        file=str(path),
        line=None if block.page is not None else block.line_at(offset),
        page=block.page,
        headings=block.headings,
        passage=passage,
        score=found.score,
        terms=found.terms,
        decision_terms=found.decision_terms,
        suggestion=suggestion,
    )


def scan_file(
    path: Path, *, vendor: str | None = None, min_score: int = DEFAULT_MIN_SCORE
) -> list[Candidate]:
    """Candidates in one file, in document order. Raises :class:`ScanNotesError`."""
    candidates = []
    for block in extract_text(path):
        for start, end in passages(block):
            passage, where = squash_map(block.text[start:end])
            found = assess_passage(passage)
            if found.score < min_score:
                continue
            # The location is the line of the evidence: the first strong term, if any.
            strong = [h for h in found.hits if h.rule.kind == "strong"] or list(found.hits)
            offset = start + where[strong[0].start if strong else 0]
            candidates.append(_candidate(path, block, offset, passage, found, vendor or path.stem))
    return candidates


def scan_files(
    paths: Iterable[Path], *, vendor: str | None = None, min_score: int = DEFAULT_MIN_SCORE
) -> list[Candidate]:
    """Candidates in every file, sorted by file then location.

    Every file is read before any result is returned; a :class:`ScanNotesError` lists the
    problem of each file that could not be read.
    """
    candidates: list[Candidate] = []
    problems: list[str] = []
    for path in dict.fromkeys(paths):
        try:
            candidates.extend(scan_file(path, vendor=vendor, min_score=min_score))
        except ScanNotesError as e:
            problems.extend(e.problems)
    if problems:
        raise ScanNotesError(*problems)
    # sorted() is stable: passages on the same line or page keep their document order.
    return sorted(candidates, key=lambda c: (c.file, c.page or 0, c.line or 0))
