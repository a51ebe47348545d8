"""The AI/ML term rules, the false-positive masks, passage scoring and tier wording."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from linegate_cli.scan_notes.text import squash

DEFAULT_MIN_SCORE = 3  # one strong term, or a weaker term backed by a decision verb and more

Kind = Literal["strong", "weak", "decision"]


@dataclass(frozen=True)
class Rule:
    """One AI/ML term: its kind, how much it weighs, and the phrases that match it."""

    kind: Kind
    weight: int
    label: str  # "{x}" is replaced by the lower-cased group "x"
    pattern: re.Pattern[str]


def _rule(kind: Kind, weight: int, label: str, pattern: str, *, case: bool = False) -> Rule:
    flags = 0 if case else re.IGNORECASE
    return Rule(kind, weight, label, re.compile(rf"(?<!\w)(?:{pattern})(?!\w)", flags))


_SUFFIX = r"(?P<x>powered|driven|based|enabled|assisted|supported|generated)"
# Stronger and longer rules come first: a span matched by one rule is not matched again.
_RULES: tuple[Rule, ...] = (
    _rule("strong", 3, "generative AI", r"generative[\s-]+(?:AI|models?)|Gen[\s-]?AI"),
    _rule("strong", 3, "artificial intelligence", r"artificial[\s-]+intelligence"),
    _rule("strong", 3, "large language model", r"large[\s-]+language[\s-]+models?"),
    _rule("strong", 3, "LLM", r"LLMs?", case=True),
    _rule("strong", 3, "GPT/OpenAI", r"(?:Chat)?GPT(?:-?\d[\w.]*)?|(?:Azure\s+)?OpenAI", case=True),
    _rule("strong", 3, "AI-{x}", rf"(?:AI|A\.I\.)[\s-]+{_SUFFIX}"),
    _rule("strong", 3, "ML-{x}", rf"ML[\s-]+{_SUFFIX}", case=True),
    _rule(
        "strong",
        3,
        "AI {x}",
        r"AI[\s-]+(?P<x>models?|assistants?|agents?|engines?|features?|functions?|copilots?"
        r"|chatbots?|algorithms?|insights?|recommendations?|capabilit(?:y|ies))",
        case=True,
    ),
    _rule(
        "strong", 3, "ML model", r"ML[\s-]+(?:models?|algorithms?|engines?|pipelines?)", case=True
    ),
    _rule("strong", 3, "machine learning", r"machine[\s-]+learn(?:ing|ed|s)"),
    _rule("strong", 3, "deep learning", r"deep[\s-]+learning"),
    _rule(
        "strong",
        3,
        "{x} learning",
        r"(?P<x>reinforcement|supervised|unsupervised|federated)"
        r"[\s-]+learning",
    ),
    _rule("strong", 3, "neural network", r"neural[\s-]+net(?:work)?s?"),
    _rule("strong", 3, "predictive model", r"predictive[\s-]+(?:models?|modell?ing|analytics|AI)"),
    _rule("strong", 3, "forecasting model", r"forecast(?:ing)?[\s-]+(?:models?|engines?)"),
    _rule(
        "strong",
        3,
        "recommendation engine",
        r"recommend(?:ation|er)[\s-]+(?:engines?|systems?|models?)|recommenders?",
    ),
    _rule(
        "strong",
        3,
        "anomaly detection",
        r"anomal(?:y|ies)[\s-]+detect(?:ion|ors?|s)?|detects?\s+anomal(?:y|ies)",
    ),
    _rule("strong", 3, "computer vision", r"computer[\s-]+vision|vision[\s-]+AI"),
    _rule("strong", 3, "object detection", r"object[\s-]+detection|image[\s-]+recognition"),
    _rule("strong", 3, "classifier", r"classifiers?|classification[\s-]+models?"),
    _rule("strong", 3, "copilot", r"co-?pilots?"),
    _rule("strong", 3, "assistant powered by", r"assistants?\b[^.;\n]{0,60}?\bpowered\s+by"),
    _rule("strong", 3, "chatbot", r"chat-?bots?"),
    _rule("strong", 3, "trained on", r"(?:re-?)?trained\s+(?:on|with|using)|training\s+data"),
    _rule("strong", 3, "self-learning", r"self[\s-]+learn(?:ing|s)"),
    _rule(
        "strong",
        3,
        "automatically learns",
        r"(?:automatically|continuously|continually)\s+learns?|learns?\s+(?:automatically|from)",
    ),
    _rule("strong", 3, "inference", r"inferenc(?:e|ing)"),
    _rule("strong", 3, "AI", r"(?<!\.)(?:AI|A\.I\.)", case=True),
    _rule("strong", 2, "ML", r"ML", case=True),
    _rule("strong", 2, "predictive {x}", r"predictive[\s-]+(?P<x>maintenance|quality|scheduling)"),
    _rule("strong", 2, "natural language", r"natural[\s-]+language(?:[\s-]+\w+)?"),
    _rule("strong", 2, "pattern recognition", r"pattern[\s-]+recognition"),
    _rule(
        "decision",
        1,
        "automatically {x}",
        r"(?:automatically|autonomously)\s+(?P<x>adjusts?|optimi[sz]es?|recommends?|decides?"
        r"|rejects?|schedules?|re-?sequences?|re-?orders?|approves?|releases?|routes?|assigns?"
        r"|stops?|sorts?|flags?|blocks?|quarantines?|holds?|changes?|sets?|corrects?|tunes?"
        r"|prioriti[sz]es?|dispatches|controls?)",
    ),
    _rule("decision", 1, "auto-{x}", r"auto-(?P<x>adjust|reject|schedul|tun|correct)\w*"),
    _rule(
        "decision",
        1,
        "without human review",
        r"without\s+(?:operator|human|manual|user)\s+(?:confirmation|approval|intervention"
        r"|review|input)",
    ),
    _rule(
        "decision",
        1,
        "{x}",
        r"(?P<x>rejects?|rejected|decides|approves|re-?sequences|predicts|recommends"
        r"|prioriti[sz]es|scoring|scores|stops|halts|adjusts|overrides|dispatches|quarantines)",
    ),
    _rule("weak", 1, "{x}", r"(?P<x>intelligent|smart|autonomous(?:ly)?|cognitive|adaptive)"),
    _rule("weak", 1, "prediction", r"predict(?:ions?|ed|ive)"),
    _rule("weak", 1, "forecast", r"forecast(?:s|ed|ing)?"),
    _rule("weak", 1, "algorithm", r"algorithms?"),
    _rule(
        "weak",
        1,
        "confidence score",
        r"confidence[\s-]+(?:scores?|levels?|thresholds?|values?)|probabilit(?:y|ies)",
    ),
    _rule("weak", 1, "machine vision", r"machine[\s-]+vision"),
)

# Phrases that look like AI/ML terms but are not: blanked out before the rules run.
_MASKS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\bdata[\s-]+models?\b", re.IGNORECASE),
    re.compile(r"\bmodel[\s-]+(?:numbers?|no\b\.?|names?|years?|codes?|series|types?)", re.I),
    re.compile(r"\.ai\b", re.IGNORECASE),  # Adobe Illustrator files
    re.compile(r"\bAdobe\s+Illustrator(?:\s*\(\s*\.?ai\s*\))?", re.IGNORECASE),
    re.compile(r"\bAI[\s-]+(?:files?|format|exports?|imports?)\b", re.IGNORECASE),
    # Analog input (AI/AO/DI/DO) in PLC and SCADA notes.
    re.compile(r"\b(?:AI|AO|DI|DO)(?:\s*/\s*(?:AI|AO|DI|DO))+\b"),
    re.compile(
        r"\bAI[\s-]+(?:channels?|cards?|modules?|points?|tags?|signals?|inputs?|blocks?"
        r"|registers?|terminals?|scaling|ranges?)\b",
        re.IGNORECASE,
    ),
    re.compile(r"\banalog(?:ue)?[\s-]+inputs?\s*\(\s*AI\s*\)", re.IGNORECASE),
    re.compile(r"\b(?:type|schema|format)[\s-]+inferenc\w*", re.IGNORECASE),
    # People being trained, not models.
    re.compile(
        r"\b(?:operators?|users?|staff|personnel|employees|technicians|engineers|teams?"
        r"|administrators?|admins?|customers?|you)\s+(?:\w+\s+){0,3}?(?:re-?)?trained\s+"
        r"(?:on|with|using)\b",
        re.IGNORECASE,
    ),
    re.compile(r"\b\d+(?:[.,]\d+)?\s*ml\b", re.IGNORECASE),  # millilitres
)

_TIER_1 = re.compile(
    r"\b(?:safety(?:[\s-]+(?:related|critical|functions?))?|interlocks?|emergency[\s-]+stops?"
    r"|e-?stops?|machine[\s-]+stops?|line[\s-]+stops?|stops?\s+the\s+(?:machine|line|press|robot"
    r"|conveyor|spindle|process|cell)|trips?\s+the|lock-?out|autonomous(?:ly)?[\s-]+(?:control"
    r"|controls|operation|mode|driving)|closed[\s-]+loop|collisions?|SIL\s?[1-4]|hazard\w*)\b",
    re.IGNORECASE,
)
_TIER_2 = re.compile(
    r"\b(?:quality|inspect\w*|defects?|defective|reject(?:s|ed|ing|ion)?|scrap|non-?conform\w*"
    r"|deviations?|CAPA|SPC|(?:batch|lot|product|final|quality)[\s-]+releases?|releases?\s+"
    r"(?:the\s+)?(?:batch(?:es)?|lots?|products?)|regulat\w*|compliance|GMP|GxP|FDA|21\s*CFR"
    r"|certificates?\s+of\s+(?:analysis|conformance)|traceability|recalls?)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Hit:
    """Where a rule matched in a passage, with the label it counts under."""

    rule: Rule
    label: str
    start: int
    end: int


@dataclass(frozen=True)
class Assessment:
    """How strongly one passage reads as describing AI/ML behaviour."""

    score: int
    terms: tuple[str, ...]  # every counted term, in order of first appearance
    decision_terms: tuple[str, ...]
    hits: tuple[Hit, ...] = ()


def _mask(text: str) -> str:
    for pattern in _MASKS:
        text = pattern.sub(lambda m: " " * len(m.group()), text)
    return text


def _hits(text: str) -> list[Hit]:
    masked = _mask(text)
    hits: list[Hit] = []
    taken = bytearray(len(masked))  # 1 where an earlier (stronger) rule matched
    for rule in _RULES:
        for match in rule.pattern.finditer(masked):
            if any(taken[match.start() : match.end()]):
                continue
            taken[match.start() : match.end()] = b"\x01" * (match.end() - match.start())
            x = match.groupdict().get("x")
            label = rule.label.format(x=squash(x).lower()) if x else rule.label
            hits.append(Hit(rule, label, match.start(), match.end()))
    return sorted(hits, key=lambda h: h.start)


def assess_passage(text: str) -> Assessment:
    """Score a passage: strong terms count alone; weaker and decision terms need company.

    Each distinct term counts once. A weaker context term ("smart", "forecast") counts only next
    to a strong term or a decision verb; a decision verb ("automatically rejects") only next to
    an AI term of either kind.
    """
    hits = _hits(text)
    kinds = {h.rule.kind for h in hits}
    counted = [
        h
        for h in hits
        if h.rule.kind == "strong"
        or (h.rule.kind == "weak" and kinds & {"strong", "decision"})
        or (h.rule.kind == "decision" and kinds & {"strong", "weak"})
    ]
    weights: dict[str, int] = {}
    for hit in counted:
        weights[hit.label] = max(weights.get(hit.label, 0), hit.rule.weight)
    decisions = dict.fromkeys(h.label for h in counted if h.rule.kind == "decision")
    return Assessment(sum(weights.values()), tuple(weights), tuple(decisions), tuple(counted))


def suggest_tier(text: str) -> tuple[int, str]:
    """1 for safety or control wording, 2 for quality wording, 3 otherwise; and why."""
    for tier, pattern, why in ((1, _TIER_1, "safety or control"), (2, _TIER_2, "quality")):
        words = dict.fromkeys(squash(m.group()).lower() for m in pattern.finditer(text))
        if words:
            return tier, f"{why} wording: {', '.join(words)}"
    return 3, "no safety, control or quality wording found"
