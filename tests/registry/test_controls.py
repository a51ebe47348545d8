"""The controls matrix: versioned YAML covering EU AI Act Art. 9-73, NIS2 Art. 21(2)(a)-(j) and
NIST AI RMF subcategories, evaluated per model version against its technical file; and the
portfolio risk report of the inventory."""

from typing import Any

import pytest

from linegate.embedded import free_port
from linegate.settings import LinegateSettings
from registry.app import create_app
from registry.techfile import controls
from tests.registry.conftest import RegistryClient, system_body
from tests.registry.demo_stack import MODEL, VERSION, DemoStack, demo_stack  # noqa: F401

#: Subcategory outcomes quoted in the matrix, as NIST AI 100-1 words them (checked by hand).
NIST_WORDING = {
    "GOVERN 2.2": "The organization's personnel and partners receive AI risk management training "
    "to enable them to perform their duties and responsibilities consistent with related "
    "policies, procedures, and agreements.",
    "MAP 3.5": "Processes for human oversight are defined, assessed, and documented in "
    "accordance with organizational policies from the GOVERN function.",
    "GOVERN 1.6": "Mechanisms are in place to inventory AI systems and are resourced according "
    "to organizational risk priorities.",
}


def test_the_matrix_covers_the_articles_items_and_subcategories_it_promises() -> None:
    matrix = controls.load()
    assert matrix["version"]
    by = {c["id"]: c for c in matrix["controls"]}
    assert len(by) == len(matrix["controls"]), "control ids are unique"
    eu = {c["ref"].split(",")[0] for c in matrix["controls"] if c["framework"] == "eu-ai-act"}
    assert eu == {f"Art. {n}" for n in (9, 11, 12, 13, 14, 17, 72, 73)}
    nis2 = sorted(c["ref"] for c in matrix["controls"] if c["framework"] == "nis2")
    assert nis2 == [f"Art. 21(2)({x})" for x in "abcdefghij"]
    nist = {c["ref"]: c["title"] for c in matrix["controls"] if c["framework"] == "nist-ai-rmf"}
    for ref, wording in NIST_WORDING.items():
        assert nist[ref] == wording
    for c in matrix["controls"]:
        assert c["requirements"], c["id"]
        for r in c["requirements"]:
            assert set(r) in ({"item"}, {"outside"}), (c["id"], r)


def _doc(statements: dict[str, int], gaps: list[str]) -> dict[str, Any]:
    return {
        "model": "m",
        "version": "1",
        "sections": [
            {
                "statements": [
                    {"item": item, "evidence": [{"type": "audit-entry", "seq": n}] * bool(n)}
                    for item, n in statements.items()
                ],
                "gaps": [{"item": g, "reason": "because"} for g in gaps],
            }
        ],
    }


def test_met_partially_met_and_open_follow_the_evidence() -> None:
    matrix = {
        "version": "t",
        "sources": {},
        "controls": [
            {
                "id": "A",
                "framework": "f",
                "ref": "r",
                "title": "t",
                "requirements": [{"item": "1(a)"}, {"item": "2"}],
            },
            {
                "id": "B",
                "framework": "f",
                "ref": "r",
                "title": "t",
                "requirements": [{"item": "1(a)"}, {"item": "3 x"}],
            },
            {
                "id": "C",
                "framework": "f",
                "ref": "r",
                "title": "t",
                "requirements": [{"item": "3 x"}, {"item": "4 unsupported"}],
            },
            {
                "id": "D",
                "framework": "f",
                "ref": "r",
                "title": "t",
                "requirements": [{"item": "1(a)"}, {"outside": "not kept in Linegate"}],
            },
            {
                "id": "E",
                "framework": "f",
                "ref": "r",
                "title": "t",
                "requirements": [{"item": "2"}],
            },
        ],
    }
    # "4 unsupported" is stated without evidence: that is no evidence at all.
    doc = _doc({"1(a) purpose": 1, "2(b) design": 2, "4 unsupported": 0}, ["3 x", "2(e) flag"])
    result = controls.evaluate(matrix, doc)
    status = {c["id"]: c["status"] for c in result["controls"]}
    assert status == {
        "A": "partially met",  # 2(b) stated, but 2(e) has a gap
        "B": "partially met",
        "C": "open",
        "D": "partially met",
        "E": "partially met",
    }
    a = result["controls"][0]
    assert a["requirements"][0] == {
        "item": "1(a)",
        "status": "met",
        "statements": ["1(a) purpose"],
        "evidence": [{"type": "audit-entry", "seq": 1}],
        "gaps": [],
    }
    assert result["summary"] == {"partially met": 4, "open": 1}
    clean = _doc({"1(a) purpose": 1, "2(b) design": 2}, [])
    assert {c["id"]: c["status"] for c in controls.evaluate(matrix, clean)["controls"]}["A"] == (
        "met"
    )


async def test_the_demo_release_controls_with_evidence_links(
    demo_stack: DemoStack,  # noqa: F811
) -> None:
    async with demo_stack.registry() as http:
        r = await http.get(f"/v1/models/{MODEL}/versions/{VERSION}/controls")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["matrix_version"] == controls.load()["version"]
    by = {c["id"]: c for c in body["controls"]}
    assert set(by) == {c["id"] for c in controls.load()["controls"]}
    assert {c["status"] for c in body["controls"]} <= {"met", "partially met", "open"}
    # Logging, human oversight by trained approvers and training are evidenced.
    for met in ("EU-AIA-12", "EU-AIA-14", "NIST-GOVERN-2.2", "NIS2-21-2-g", "NIST-MEASURE-2.1"):
        assert by[met]["status"] == "met", by[met]
        assert all(r["evidence"] for r in by[met]["requirements"])
    # The incident service is down: incident reporting is open, with the reason.
    art73 = by["EU-AIA-73"]
    assert art73["status"] == "open"
    assert demo_stack.incident_url in art73["requirements"][0]["gaps"][0]["reason"]
    # What Linegate keeps no evidence of stays open and says why.
    assert by["NIS2-21-2-j"]["status"] == "open"
    assert "OIDC" in by["NIS2-21-2-j"]["requirements"][0]["outside"]
    # The technical file has gaps (e.g. no declaration of conformity): Art. 11 is partial.
    assert by["EU-AIA-11"]["status"] == "partially met"
    links = [x for r in by["EU-AIA-14"]["requirements"] for x in r["evidence"]]
    assert {"audit-entry", "competence-record"} <= {x["type"] for x in links}


@pytest.fixture
async def offline_registry(
    registry_settings: Any, service_client: Any, mint_token: Any, tmp_path: Any
) -> Any:
    """A registry whose attestation and incident services do not answer."""
    closed = f"http://127.0.0.1:{free_port()}"
    # The issuer stays the default, which the mint_token fixture signs for.
    issuer = LinegateSettings().issuer
    app = create_app(
        registry_settings(attestation_url=closed, incident_url=closed, auth_issuer=issuer)
    )
    async with service_client(app) as client:
        yield RegistryClient(client=client, app=app, mint=mint_token, tmp=tmp_path)


async def test_the_portfolio_report(offline_registry: RegistryClient) -> None:
    registry = offline_registry
    await registry.create_system(tier=1, category="high_risk")
    other = system_body("mes-scheduler", tier=3, category="minimal")
    other.pop("owner")
    other.pop("consequence_if_wrong")
    r = await registry.client.post("/v1/inventory/systems", json=other, headers=registry.auth())
    assert r.status_code == 201, r.text
    await registry.create_model()
    assert (await registry.add_golden_set()).status_code == 201
    await registry.to_validated("2.1.0")

    r = await registry.client.get("/v1/inventory/portfolio", headers=registry.auth())
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["total"] == 2
    assert report["by_eu_category_and_nist_tier"] == {
        "high_risk": {"1": ["weld-seam-qa-line3"]},
        "minimal": {"3": ["mes-scheduler"]},
    }
    assert report["without_owner"] == ["mes-scheduler"]
    assert report["with_missing_answers"] == ["mes-scheduler"]
    assert report["open_incidents"] == "unknown"
    assert "did not answer" in report["incident_service"]
    rows = {s["id"]: s for s in report["systems"]}
    assert rows["mes-scheduler"]["missing_answers"] == ["consequence_if_wrong", "owner"]
    assert rows["mes-scheduler"]["open_incidents"] is None
    assert rows["mes-scheduler"]["evidence_completeness"] is None  # no model version
    weld = rows["weld-seam-qa-line3"]
    assert weld["owner"]["name"] == "Maria Keller"
    completeness = weld["evidence_completeness"]
    assert (completeness["model"], completeness["version"]) == ("weld-seam-inspector", "2.1.0")
    assert 0 < completeness["score"] < 1
