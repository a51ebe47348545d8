"""The depth bound of uploaded JSON: exact at the limit, whichever way it is checked.

``parse_json`` skips its walk of the parsed document when the text has too few brackets to
nest that deep; these cases sit on both sides of the limit, with and without the skip."""

import json

import pytest

from attestation.verification import parse_json

LIMIT = 64


def _nested(depth: int, filler: int = 0) -> bytes:
    """A document ``depth`` levels deep as parse_json counts them (the top object is level
    one, the innermost value level ``depth``), with ``filler`` more brackets at level two."""
    inner: object = 1
    for _ in range(depth - 2):
        inner = [inner]
    doc: dict[str, object] = {"deep": inner}
    if filler:
        doc["wide"] = [[] for _ in range(filler)]
    return json.dumps(doc).encode()


@pytest.mark.parametrize("filler", [0, 100], ids=["few-brackets", "many-brackets"])
def test_a_document_at_the_limit_parses(filler: int) -> None:
    assert parse_json(_nested(LIMIT, filler), LIMIT)["deep"]


@pytest.mark.parametrize("filler", [0, 100], ids=["few-brackets", "many-brackets"])
def test_one_level_more_is_refused(filler: int) -> None:
    with pytest.raises(ValueError, match=f"nested deeper than {LIMIT} levels"):
        parse_json(_nested(LIMIT + 1, filler), LIMIT)


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    doc = {"text": "[" * 500 + "{" * 500, "list": [1, 2, 3]}
    assert parse_json(json.dumps(doc).encode(), LIMIT) == doc
