"""A readable HTML rendering of the technical file (the JSON stays the record)."""

from __future__ import annotations

from html import escape
from typing import Any

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:62rem;margin:2rem auto;padding:0 1rem;
line-height:1.45;color:#1b1b1b}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ccc}
.score{font-weight:600}.gap{background:#fff4e5;border-left:4px solid #e08a00;padding:.3rem .6rem;
margin:.3rem 0}.st{margin:.5rem 0}.ev{font-family:ui-monospace,monospace;font-size:.8rem;
color:#444}table{border-collapse:collapse}td,th{padding:.2rem .6rem;border:1px solid #ddd}
"""


def link_text(link: dict[str, Any]) -> str:
    """How an evidence link reads in the HTML and PDF renderings."""
    kind = link.get("type", "?")
    if kind == "audit-entry":
        return (
            f"audit {link['service']} #{link['seq']} {link.get('action', '')} {link['hash'][:12]}"
        )
    if kind == "attestation":
        return f"attestation {link['id']} {link['digest'][:19]}"
    if kind == "model-signature":
        return f"model signature {link['digest'][:19]} key {str(link['key_id'])[:12]}"
    if kind == "golden-set-report":
        return f"golden-set report {link['validation_id'][:12]} {link['digest'][:19]}"
    return f"{kind} {link.get('id', '')}"


def _link(link: dict[str, Any]) -> str:
    return f'<span class="ev">[{escape(link_text(link))}]</span>'


def render(document: dict[str, Any]) -> str:
    c = document["completeness"]
    parts = [
        "<!doctype html><html lang=en><meta charset=utf-8>",
        f"<title>Technical file {escape(document['model'])} {escape(document['version'])}</title>",
        f"<style>{_STYLE}</style>",
        f"<h1>Technical file: {escape(document['model'])} {escape(document['version'])}</h1>",
        f"<p>{escape(document['regulation'])}. AI system <b>{escape(document['system'])}</b>, "
        f"artefact <code>{escape(document['artefact_digest'])}</code>, state "
        f"{escape(document['state'])}, generated {escape(document['generated_at'])}.</p>",
        f"<p class=score>Completeness {c['score']:.0%}: {c['statements']} statements with "
        f"evidence, {c['gaps']} gaps.</p>",
        "<table><tr><th>Section</th><th>Statements</th><th>Gaps</th><th>Complete</th></tr>",
    ]
    for s in document["sections"]:
        parts.append(
            f"<tr><td>{escape(s['id'])}. {escape(s['title'])}</td>"
            f"<td>{len(s['statements'])}</td><td>{len(s['gaps'])}</td>"
            f"<td>{s['completeness']:.0%}</td></tr>"
        )
    parts.append("</table>")
    for s in document["sections"]:
        parts.append(
            f"<h2 id=s{escape(s['id'])}>{escape(s['id'])}. {escape(s['title'])} "
            f"<small>({escape(s['annex_iv'])})</small></h2>"
        )
        for st in s["statements"]:
            evidence = " ".join(_link(x) for x in st["evidence"])
            parts.append(
                f"<div class=st><b>{escape(st['item'])}</b>: {escape(st['text'])} {evidence}</div>"
            )
        for g in s["gaps"]:
            parts.append(
                f"<div class=gap><b>Gap, {escape(g['item'])}</b>: {escape(g['reason'])}</div>"
            )
    parts.append("</html>")
    return "\n".join(parts)
