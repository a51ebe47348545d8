"""The controls matrix (``controls.yaml``, versioned) evaluated against a technical file.

A requirement is *met* when the technical file states it with evidence and lists no gap for it,
*partially met* when it does both, and *open* when only a gap (or nothing) is there; an
``outside`` requirement is always open with its reason. A control is met when all its
requirements are, partially met when some are, open when none are.
"""

from __future__ import annotations

from collections import Counter
from importlib import resources
from typing import Any

import yaml

MET, PARTIAL, OPEN = "met", "partially met", "open"


def load() -> dict[str, Any]:
    """The matrix shipped with the registry (read when asked, never at import)."""
    text = resources.files("registry.techfile").joinpath("controls.yaml").read_text("utf-8")
    matrix: dict[str, Any] = yaml.safe_load(text)
    return matrix


def _requirement(req: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    if "outside" in req:
        return {"outside": req["outside"], "status": OPEN, "evidence": [], "gaps": []}
    prefix = str(req["item"])
    statements = [
        st
        for section in document["sections"]
        for st in section["statements"]
        if st["item"].startswith(prefix) and st["evidence"]
    ]
    gaps = [
        g
        for section in document["sections"]
        for g in section["gaps"]
        if g["item"].startswith(prefix)
    ]
    status = (MET if not gaps else PARTIAL) if statements else OPEN
    evidence = [link for st in statements for link in st["evidence"]]
    return {
        "item": prefix,
        "status": status,
        "statements": [st["item"] for st in statements],
        "evidence": evidence,
        "gaps": gaps,
    }


def evaluate(matrix: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    controls = []
    for control in matrix["controls"]:
        reqs = [_requirement(r, document) for r in control["requirements"]]
        states = {r["status"] for r in reqs}
        if states == {MET}:
            status = MET
        elif states & {MET, PARTIAL}:
            status = PARTIAL
        else:
            status = OPEN
        controls.append(
            {
                "id": control["id"],
                "framework": control["framework"],
                "ref": control["ref"],
                "title": control["title"],
                "status": status,
                "requirements": reqs,
            }
        )
    return {
        "matrix_version": matrix["version"],
        "sources": matrix["sources"],
        "model": document["model"],
        "version": document["version"],
        "summary": dict(Counter(c["status"] for c in controls)),
        "controls": controls,
    }
