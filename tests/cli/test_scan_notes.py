"""``linegate inventory scan-notes`` on realistic vendor release notes (Markdown, HTML, PDF...)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from linegate_cli import scan_notes
from linegate_cli.main import app
from linegate_cli.scan_notes import ScanNotesError, assess_passage, extract_text, scan_files
from linegate_cli.scan_notes import extract as scan_notes_extract

SUMMARY = "candidate(s) in {} file(s): confirm or dismiss each before adding it to the inventory"

MES_MARKDOWN = """\
# Meridian MES release notes

## 7.2.0 (2024-05-14)

### New features

- **Smart Sequencer**: AI-powered scheduling that automatically re-sequences orders
  based on a machine-learning forecast of changeover times.
- Shift reports can be exported to Excel from the [report viewer](https://example.com/help).

## 7.1.4 (2024-03-02)

### Fixed

- Email notifications for failed login attempts reach the plant administrator again (MAIL-2211).
- Blockchain-based lot genealogy export no longer FAILS on the `CHAIN_ID` column.
- The data model migration for the OEE tables completes without timeouts.
- The model number field of a work centre accepts 40 characters.
- Artwork uploads accept Adobe Illustrator (.ai) files.
- Operators trained on the new HMI layout can switch back to the classic layout.
- Dosing presets of 250 ml are rounded correctly; HTML and XML exports keep their encoding.
"""

ERP_HTML = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Orbis ERP 2024.2 AI-powered release notes</title>
<script>
  // analytics: machine learning neural network AI-powered recommendation engine
  window.dataLayer = window.dataLayer || [];
</script>
<style>.ai-badge { color: red } /* deep learning */</style>
</head>
<body>
<h1>Orbis ERP release notes</h1>
<h2>Release 2024.2</h2>
<h3>Finance</h3>
<ul>
  <li>Faster month-end close for multi-currency ledgers.</li>
  <li>
    <strong>Invoice guard</strong>: intelligent anomaly detection in goods receipt
    automatically flags suspicious supplier invoices and blocks payment until reviewed.
  </li>
</ul>
<h3>Logistics</h3>
<table>
  <tr><th>Area</th><th>Change</th></tr>
  <tr><td>Picking</td><td>Pick lists print the supplier&rsquo;s model number.</td></tr>
</table>
<p>E-mail <b>notifications</b> no longer fail when the MAIL relay is slow.</p>
</body>
</html>
"""

SCADA_TEXT = """\
Helix SCADA 12.3 Release Notes
==============================

New Features
------------

* Collision guard: an AI model watches the robot cell camera and stops the robot
  when a person enters the cell.
* AI/AO channel scaling can be edited in bulk; AI channels accept 4-20 mA ranges.

Fixes
-----

* Alarm e-mails no longer FAIL when the MAIL server is slow.
"""


def minimal_pdf(pages: list[list[str]]) -> bytes:
    """A real PDF, built by hand: one Helvetica text line per string, correct xref offsets."""
    n = len(pages)
    font = 3 + 2 * n
    kids = b" ".join(b"%d 0 R" % (3 + 2 * i) for i in range(n))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, n),
    ]
    for i, lines in enumerate(pages):
        shown = [
            line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for line in lines
        ]
        ops = "BT /F1 11 Tf 14 TL 72 760 Td " + " ".join(f"({s}) Tj T*" for s in shown) + " ET"
        stream = ops.encode("latin-1")
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>" % (font, 4 + 2 * i)
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


VISION_PDF_PAGES = [
    [
        "Optica Vision Suite 4.0 Release Notes",
        "Version 4.0.0",
        "Improved export of inspection reports to CSV.",
        "The model number of each camera is shown in the device list.",
    ],
    [
        "Inspection Station",
        "Neural network-based visual inspection that rejects parts",
        "with surface defects before they reach the press.",
    ],
]


@pytest.fixture
def notes(tmp_path, monkeypatch) -> Path:
    """A folder of vendor release notes; the current directory, so locations are short."""
    (tmp_path / "meridian-mes.md").write_text(MES_MARKDOWN)
    (tmp_path / "orbis-erp.html").write_text(ERP_HTML)
    (tmp_path / "helix-scada.txt").write_text(SCADA_TEXT)
    (tmp_path / "optica-vision.pdf").write_bytes(minimal_pdf(VISION_PDF_PAGES))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str | Path):
    return CliRunner().invoke(app, ["inventory", "scan-notes", *map(str, args)])


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


# ----------------------------------------------------------------------------- by format


def test_markdown_release_note_yields_the_ai_feature_with_its_version_section(notes):
    (candidate,) = scan_files([Path("meridian-mes.md")])

    assert candidate.location == f"meridian-mes.md:{line_of(MES_MARKDOWN, 'Smart Sequencer')}"
    assert candidate.heading == "New features"
    assert candidate.headings == (
        "Meridian MES release notes",
        "7.2.0 (2024-05-14)",
        "New features",
    )
    assert candidate.passage.startswith("Smart Sequencer: AI-powered scheduling that automatically")
    assert "**" not in candidate.passage
    assert {"AI-powered", "machine learning", "automatically re-sequences"} <= set(candidate.terms)
    entry = candidate.suggestion
    assert (entry.name, entry.vendor, entry.version) == ("Smart Sequencer", "meridian-mes", "7.2.0")
    assert entry.influences_decision is True
    assert entry.suggested_tier == 3


def test_html_release_note_ignores_scripts_and_keeps_the_list_item_line(notes):
    (candidate,) = scan_files([Path("orbis-erp.html")], vendor="Orbis")

    assert candidate.line == line_of(ERP_HTML, "<strong>Invoice guard</strong>")
    assert candidate.page is None
    assert candidate.headings == ("Orbis ERP release notes", "Release 2024.2", "Finance")
    assert candidate.passage == (
        "Invoice guard: intelligent anomaly detection in goods receipt automatically flags "
        "suspicious supplier invoices and blocks payment until reviewed."
    )
    assert candidate.terms[:3] == ("intelligent", "anomaly detection", "automatically flags")
    entry = candidate.suggestion
    assert (entry.name, entry.vendor, entry.version) == ("Invoice guard", "Orbis", "2024.2")
    assert entry.influences_decision is True
    text = " ".join(block.text for block in extract_text(Path("orbis-erp.html")))
    assert "dataLayer" not in text
    assert "deep learning" not in text
    assert "Pick lists print the supplier\u2019s model number." in text


def test_pdf_release_note_reports_the_page_and_a_quality_tier(notes):
    (candidate,) = scan_files([Path("optica-vision.pdf")])

    assert candidate.location == "optica-vision.pdf:p.2"
    assert (candidate.page, candidate.line) == (2, None)
    assert candidate.heading == "Inspection Station"
    assert "Version 4.0.0" in candidate.headings  # the section started on page 1
    assert candidate.passage == (
        "Neural network-based visual inspection that rejects parts with surface defects "
        "before they reach the press."
    )
    assert "neural network" in candidate.terms
    entry = candidate.suggestion
    assert entry.version == "4.0.0"
    assert entry.influences_decision is True
    assert entry.suggested_tier == 2
    assert "inspection" in entry.tier_reason


def test_plain_text_safety_feature_gets_tier_one_and_analog_inputs_are_not_ai(notes):
    (candidate,) = scan_files([Path("helix-scada.txt")])

    assert candidate.line == line_of(SCADA_TEXT, "Collision guard")
    assert candidate.headings == ("Helix SCADA 12.3 Release Notes", "New Features")
    assert candidate.suggestion.name == "Collision guard"
    assert candidate.suggestion.version == "12.3"
    assert candidate.suggestion.suggested_tier == 1
    assert candidate.suggestion.influences_decision is True


def test_a_long_paragraph_is_cut_into_sentence_windows_with_their_own_lines(tmp_path):
    filler = [
        f"Line {i} improves the layout of report number {i} for shift leads." for i in range(30)
    ]
    filler[20] = "The planner now uses a neural network to predict changeover times."
    path = tmp_path / "notes.txt"
    path.write_text("Release notes body\n\n" + "\n".join(filler) + "\n")

    (candidate,) = scan_files([path])

    assert candidate.line == 3 + 20  # the filler starts on line 3
    assert len(candidate.passage) <= scan_notes.PASSAGE_CHARS
    assert "neural network" in candidate.passage


def test_text_without_sentence_ends_is_cut_into_bounded_passages(tmp_path):
    path = tmp_path / "minified.html"
    path.write_text("<p>" + "AI " * 20_000 + "</p>")

    candidates = scan_files([path])

    assert len(candidates) > 100
    assert all(len(c.passage) <= 2 * scan_notes.PASSAGE_CHARS for c in candidates)
    assert {c.line for c in candidates} == {1}


def test_results_are_sorted_by_file_then_location_and_repeatable(notes):
    paths = [Path(p) for p in ("orbis-erp.html", "optica-vision.pdf", "meridian-mes.md")]
    first = scan_files(paths)
    assert [c.file for c in first] == ["meridian-mes.md", "optica-vision.pdf", "orbis-erp.html"]
    assert [c.to_dict() for c in scan_files(list(reversed(paths)))] == [c.to_dict() for c in first]


# ------------------------------------------------------------------------------- scoring


@pytest.mark.parametrize(
    "text",
    [
        "Email notifications for failed login attempts are sent again (MAIL-2211).",
        "Blockchain export no longer FAILS on the CHAIN_ID column.",
        "The data model migration completes; the model number field accepts 40 characters.",
        "Artwork uploads accept Adobe Illustrator (.ai) files and AI files from partners.",
        "AI/AO cards and AI channels support 4-20 mA; analog input (AI) scaling is editable.",
        "Operators trained on the new HMI can switch layouts. Doses of 500 ML are rounded.",
        "Type inference for custom fields is faster. HTML, XML and YAML exports are fixed.",
        "The export automatically rejects rows with an empty order number.",
        "Smart scheduling automatically re-sequences orders.",  # weak + decision: below 3
    ],
)
def test_false_positive_bait_scores_below_the_threshold(text):
    assert assess_passage(text).score < scan_notes.DEFAULT_MIN_SCORE


@pytest.mark.parametrize(
    ("text", "term"),
    [
        ("Adds an AI assistant powered by Azure OpenAI for maintenance tickets.", "AI assistant"),
        ("A copilot answers questions about downtime in plain language.", "copilot"),
        ("Defect images are sorted by a deep-learning classifier.", "deep learning"),
        ("Demand planning uses a predictive model trained on three years of orders.", "trained on"),
        ("The energy optimiser is self-learning and adapts to each line.", "self-learning"),
        ("Summaries are written by a large language model (LLM).", "large language model"),
        ("Runs computer vision inference on the edge gateway.", "computer vision"),
        ("Intelligent routing predicts queue lengths and automatically assigns jobs.", "predicts"),
    ],
)
def test_ai_behaviour_scores_at_or_above_the_threshold(text, term):
    found = assess_passage(text)
    assert found.score >= scan_notes.DEFAULT_MIN_SCORE
    assert term in found.terms


# ----------------------------------------------------------------------------------- CLI


def test_cli_lists_candidates_with_locations_and_a_summary(notes):
    result = run("meridian-mes.md", "orbis-erp.html", "optica-vision.pdf", "--vendor", "Acme")

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    mes_line = line_of(MES_MARKDOWN, "Smart Sequencer")
    assert lines[0].startswith(f"meridian-mes.md:{mes_line}  [")
    assert "AI-powered" in lines[0]
    assert any(line.startswith("optica-vision.pdf:p.2  [") for line in lines)
    assert any(line.startswith("orbis-erp.html:") for line in lines)
    assert "section: Meridian MES release notes > 7.2.0 (2024-05-14) > New features" in (
        result.stdout
    )
    assert 'suggested entry (unconfirmed): name "Smart Sequencer", vendor "Acme"' in result.stdout
    assert lines[-1] == "3 " + SUMMARY.format(3)
    assert "MAIL" not in result.stdout
    assert "Blockchain" not in result.stdout


def test_cli_json_is_an_array_of_candidate_objects(notes):
    result = run("helix-scada.txt", "optica-vision.pdf", "--json")

    assert result.exit_code == 0, result.output
    candidates = json.loads(result.stdout)
    assert [c["location"] for c in candidates] == [
        f"helix-scada.txt:{line_of(SCADA_TEXT, 'Collision guard')}",
        "optica-vision.pdf:p.2",
    ]
    pdf = candidates[1]
    assert pdf["page"] == 2
    assert pdf["line"] is None
    assert pdf["suggested_entry"]["suggested_tier"] == 2
    assert pdf["suggested_entry"]["influences_decision"] is True
    assert pdf["suggested_entry"]["status"] == "unconfirmed"
    assert "confirm or dismiss" in pdf["suggested_entry"]["review"]


def test_cli_zero_candidates_exits_zero_with_the_summary(notes):
    Path("quiet.md").write_text("# Notes\n\n## 1.0.1\n\n- Fixed the failed e-mail retry.\n")

    result = run("quiet.md")

    assert result.exit_code == 0, result.output
    assert result.stdout == "0 " + SUMMARY.format(1) + "\n"
    assert json.loads(run("quiet.md", "--json").stdout) == []


def test_cli_min_score_filters_weaker_candidates(notes):
    result = run("helix-scada.txt", "--min-score", "10")

    assert result.exit_code == 0, result.output
    assert result.stdout == "0 " + SUMMARY.format(1) + "\n"


def test_cli_missing_file_exits_two_and_prints_nothing_on_stdout(notes):
    result = run("meridian-mes.md", "no-such-notes.md")

    assert result.exit_code == 2
    assert result.stderr == "error: no-such-notes.md: no such file\n"
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("firmware.bin", bytes(range(256)) * 8, "binary data"),
        ("notes.txt", b"\x7fELF\x02\x01\x01" + b"\x00" * 64, "unsupported format"),
        ("notes.docx", b"PK\x03\x04" + b"\x00" * 64, "Office document"),
        ("notes.pdf", b"this is not a pdf\n", "not a PDF file"),
        ("broken.pdf", b"%PDF-1.4\n1 0 obj garbage", "cannot read the PDF"),
        ("scanned.pdf", minimal_pdf([[]]), "no extractable text"),
    ],
)
def test_cli_unreadable_input_exits_two_with_an_error(notes, name, content, message):
    Path(name).write_bytes(content)

    result = run(name)

    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {name}: ")
    assert message in result.stderr
    assert result.stdout == ""


def test_oversized_files_are_refused_before_they_are_read(notes, monkeypatch):
    # The limit is read where files are read: patch it there, not on the package.
    monkeypatch.setattr(scan_notes_extract, "MAX_FILE_BYTES", 100)

    with pytest.raises(ScanNotesError, match=r"meridian-mes\.md: .* MiB limit"):
        scan_files([Path("meridian-mes.md")])
    result = run("meridian-mes.md")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: meridian-mes.md: ")


def test_a_directory_is_an_error(notes):
    result = run(notes)

    assert result.exit_code == 2
    assert "is a directory" in result.stderr
