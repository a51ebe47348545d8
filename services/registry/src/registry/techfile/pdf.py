"""A PDF rendering of the technical file, with ReportLab (the JSON stays the record).

The same content as the HTML rendering: the header, the completeness table, then every section
with its statements (each with its evidence links) and its gaps. Built with ReportLab's
platypus layout engine from the document itself, not by converting the HTML, so nothing depends
on a browser or system libraries. ``invariant=True`` keeps the bytes a function of the document
(no creation timestamp or random id), so the same technical file renders to the same PDF.
"""

from __future__ import annotations

import io
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, PropertySet, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from registry.techfile.html import link_text


def _styles() -> dict[str, PropertySet]:
    base = getSampleStyleSheet()
    return {
        "title": base["Title"],
        "h2": base["Heading2"],
        "body": base["BodyText"],
        "evidence": ParagraphStyle(
            "evidence", parent=base["BodyText"], fontName="Courier", fontSize=7, leading=9
        ),
        "gap": ParagraphStyle(
            "gap",
            parent=base["BodyText"],
            backColor=colors.HexColor("#fff4e5"),
            borderColor=colors.HexColor("#e08a00"),
            borderWidth=0.5,
            borderPadding=3,
            spaceBefore=4,
            spaceAfter=4,
        ),
    }


def render(document: dict[str, Any]) -> bytes:
    st = _styles()
    c = document["completeness"]
    title = f"Technical file: {document['model']} {document['version']}"
    story: list[Any] = [
        Paragraph(escape(title), st["title"]),
        Paragraph(
            f"{escape(document['regulation'])}. AI system <b>{escape(document['system'])}</b>, "
            f"artefact <font face='Courier'>{escape(document['artefact_digest'])}</font>, state "
            f"{escape(document['state'])}, generated {escape(document['generated_at'])}.",
            st["body"],
        ),
        Paragraph(
            f"<b>Completeness {c['score']:.0%}: {c['statements']} statements with evidence, "
            f"{c['gaps']} gaps.</b>",
            st["body"],
        ),
        Spacer(1, 4 * mm),
    ]
    rows: list[list[Any]] = [["Section", "Statements", "Gaps", "Complete"]]
    for s in document["sections"]:
        rows.append(
            [
                Paragraph(escape(f"{s['id']}. {s['title']}"), st["body"]),
                len(s["statements"]),
                len(s["gaps"]),
                f"{s['completeness']:.0%}",
            ]
        )
    table = Table(rows, colWidths=[110 * mm, 22 * mm, 16 * mm, 20 * mm], repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    story.append(table)
    for s in document["sections"]:
        story.append(Paragraph(escape(f"{s['id']}. {s['title']} ({s['annex_iv']})"), st["h2"]))
        for statement in s["statements"]:
            story.append(
                Paragraph(
                    f"<b>{escape(statement['item'])}</b>: {escape(statement['text'])}",
                    st["body"],
                )
            )
            for link in statement["evidence"]:
                story.append(Paragraph(escape(f"[{link_text(link)}]"), st["evidence"]))
        for gap in s["gaps"]:
            story.append(
                Paragraph(f"<b>Gap, {escape(gap['item'])}</b>: {escape(gap['reason'])}", st["gap"])
            )
    buffer = io.BytesIO()
    SimpleDocTemplate(
        buffer,
        pagesize=A4,
        title=title,
        author="Linegate registry",
        subject=document["regulation"],
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        invariant=True,
    ).build(story)
    return buffer.getvalue()
