"""The Annex IV technical file of the demo release: nine sections, every statement linked to
evidence that exists and matches, gaps with reasons, a completeness score."""

import hashlib
import io
import json
from typing import Any

from pypdf import PdfReader

from linegate.signing import canonical_json
from registry.techfile import pdf
from tests.registry.demo_stack import MODEL, VERSION, DemoStack, demo_stack  # noqa: F401

PATH = f"/v1/models/{MODEL}/versions/{VERSION}"


async def _techfile(stack: DemoStack, **params: Any) -> Any:
    async with stack.registry() as http:
        r = await http.get(f"{PATH}/technical-file", params=params)
    assert r.status_code == 200, r.text
    return r


async def test_the_demo_release_has_every_annex_iv_section_present_or_as_a_gap(
    demo_stack: DemoStack,  # noqa: F811
) -> None:
    doc = (await _techfile(demo_stack)).json()
    assert (doc["model"], doc["version"], doc["state"]) == (MODEL, VERSION, "released")
    sections = doc["sections"]
    assert [s["id"] for s in sections] == [str(i) for i in range(1, 10)]
    for s in sections:
        assert s["statements"] or s["gaps"], s["id"]
        for st in s["statements"]:
            assert st["evidence"], f"statement without evidence: {st['item']}"
        for g in s["gaps"]:
            assert g["reason"].strip(), g
    c = doc["completeness"]
    assert c["statements"] == sum(len(s["statements"]) for s in sections)
    assert c["gaps"] == len(doc["gaps"]) == sum(len(s["gaps"]) for s in sections)
    assert c["score"] == round(c["statements"] / (c["statements"] + c["gaps"]), 4)
    assert 0 < c["score"] < 1

    items = {st["item"] for s in sections for st in s["statements"]}
    gap_items = {g["item"]: g["reason"] for g in doc["gaps"]}
    # The demo's supplier evidence, approvals by trained people and the signed test report.
    for expected in (
        "2(a) build provenance (third party)",
        "2(d) data provenance",
        "2(d) ML-BOM",
        "2(e) human oversight (Art. 14)",
        "2(e) approver competence",
        "2(e) competence register",
        "2(g) validation and test report",
        "5 release gate",
        "6 version",
    ):
        assert expected in items, expected
    # What nobody recorded is a gap, with the reason, not boilerplate.
    assert "declaration of conformity" in gap_items["8 declaration of conformity (Art. 47)"]
    assert "no harmonised standard" in gap_items["7 harmonised standards"]
    # The incident service is not running: incident and post-market items say so.
    for item in ("5 incidents", "9 configured monitors", "9 serious incident reporting (Art. 73)"):
        assert demo_stack.incident_url in gap_items[item], gap_items[item]
        assert "did not answer" in gap_items[item]


async def test_every_evidence_link_resolves_to_the_record_it_names(
    demo_stack: DemoStack,  # noqa: F811
) -> None:
    doc = (await _techfile(demo_stack)).json()
    links = [x for s in doc["sections"] for st in s["statements"] for x in st["evidence"]]
    kinds = {x["type"] for x in links}
    assert {
        "audit-entry",
        "attestation",
        "model-signature",
        "golden-set-report",
        "competence-record",
    } <= kinds
    async with demo_stack.registry() as reg, demo_stack.attestation() as att:
        entries = {
            e["seq"]: e for e in (await reg.get("/v1/audit/entries", params={"limit": 1000})).json()
        }
        for link in (x for x in links if x["type"] == "audit-entry"):
            assert entries[link["seq"]]["hash"] == link["hash"]
            assert entries[link["seq"]]["action"] == link["action"]
        attestations = {x["id"]: x for x in links if x["type"] == "attestation"}
        assert len(attestations) == 3  # SLSA, ML-BOM, dataset provenance
        for attestation_id, link in attestations.items():
            raw = (await att.get(f"/v1/attestations/{attestation_id}/raw")).content
            assert link["digest"] == "sha256:" + hashlib.sha256(raw).hexdigest()
        signature = (await reg.get(f"{PATH}/signature")).content
        (sig,) = {json.dumps(x, sort_keys=True) for x in links if x["type"] == "model-signature"}
        assert json.loads(sig)["digest"] == "sha256:" + hashlib.sha256(signature).hexdigest()
        (run,) = (await reg.get(f"{PATH}/validations")).json()
        (report,) = {x["digest"] for x in links if x["type"] == "golden-set-report"}
        assert report == "sha256:" + hashlib.sha256(canonical_json(run["envelope"])).hexdigest()
        register = {r["id"] for r in (await reg.get("/v1/competence")).json()}
        assert {x["id"] for x in links if x["type"] == "competence-record"} <= register


async def test_the_pdf_rendering_holds_the_same_sections_and_gaps(
    demo_stack: DemoStack,  # noqa: F811
) -> None:
    doc = (await _techfile(demo_stack)).json()
    r = await _techfile(demo_stack, format="pdf")
    assert r.headers["content-type"] == "application/pdf"
    assert "attachment" in r.headers["content-disposition"]
    reader = PdfReader(io.BytesIO(r.content))
    assert reader.metadata is not None
    assert reader.metadata.title == f"Technical file: {MODEL} {VERSION}"
    text = " ".join((page.extract_text() or "") for page in reader.pages)
    text = " ".join(text.split())  # line breaks fall where the layout puts them
    for section in doc["sections"]:
        assert f"{section['id']}. {section['title']}" in text
    assert f"Completeness {doc['completeness']['score']:.0%}" in text
    assert "Gap, 8 declaration of conformity (Art. 47)" in text
    # Rendered from the document alone: the same technical file gives the same bytes.
    assert pdf.render(doc) == pdf.render(doc)


async def test_the_html_rendering_and_access(demo_stack: DemoStack) -> None:  # noqa: F811
    r = await _techfile(demo_stack, format="html")
    assert r.headers["content-type"].startswith("text/html")
    page = r.text
    assert f"Technical file: {MODEL} {VERSION}" in page
    assert page.count("<h2") == 9
    assert "Gap, 8 declaration of conformity (Art. 47)" in page
    async with demo_stack.registry() as http:
        r = await http.get(f"{PATH}/technical-file", headers={"Authorization": "Bearer x"})
        assert r.status_code == 401
        r = await http.get(f"/v1/models/{MODEL}/versions/9.9.9/technical-file")
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"
