"""``linegate model push`` hashes the model while it streams it and declares the digest in the
metadata part, which is sent last: the body is what a pre-hash would have produced, read once."""

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from python_multipart.multipart import MultipartParser, parse_options_header

from linegate_cli.model import upload_parts


def parts_of(request: httpx.Request, body: bytes) -> list[tuple[str, bytes]]:
    """The (name, content) of each multipart part of ``body``, in order."""
    _, options = parse_options_header(request.headers["content-type"])
    found: list[tuple[str, bytes]] = []
    headers: list[bytes] = []
    data = bytearray()

    def on_header_value(d: bytes, start: int, end: int) -> None:
        headers.append(d[start:end])

    def on_part_data(d: bytes, start: int, end: int) -> None:
        data.extend(d[start:end])

    def on_part_end() -> None:
        disposition = next(h for h in headers if h.startswith(b"form-data"))
        name = parse_options_header(disposition)[1][b"name"].decode()
        found.append((name, bytes(data)))
        headers.clear()
        data.clear()

    parser = MultipartParser(
        options[b"boundary"],
        {
            "on_header_value": on_header_value,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    parser.write(body)
    parser.finalize()
    return found


@pytest.fixture
def folder(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "model.onnx").write_bytes(os.urandom(300_000))
    (tmp_path / "model_card.md").write_text("# card\n")
    return {"model": tmp_path / "model.onnx", "model_card": tmp_path / "model_card.md"}


def test_the_digest_of_the_streamed_model_goes_in_the_metadata_sent_last(
    folder: dict[str, Path],
) -> None:
    sent: list[int] = []
    meta = {"version": "2.1.0", "security_version": 3, "artefact_sha256": "sha256:" + "0" * 64}
    with contextlib.ExitStack() as stack:
        request = httpx.Request(
            "POST", "http://registry/", files=upload_parts(stack, folder, meta, sent.append)
        )
        body = b"".join(request.stream)  # type: ignore[arg-type]
        again = b"".join(request.stream)  # type: ignore[arg-type]  (a retry re-reads it)
    assert int(request.headers["content-length"]) == len(body)
    assert again == body
    parts = parts_of(request, body)
    assert [name for name, _ in parts] == ["model", "model_card", "metadata"]
    model = folder["model"].read_bytes()
    assert parts[0][1] == model
    declared = json.loads(parts[2][1])
    assert declared == {
        "version": "2.1.0",
        "security_version": 3,
        "artefact_sha256": "sha256:" + hashlib.sha256(model).hexdigest(),
    }
    assert sum(sent) == 2 * (len(model) + len(b"# card\n"))  # the progress bar, two passes


def test_without_a_declared_digest_the_metadata_is_sent_as_given(
    folder: dict[str, Path],
) -> None:
    with contextlib.ExitStack() as stack:
        files = upload_parts(stack, folder, {"version": "1"}, lambda _: None, declare_digest=False)
        request = httpx.Request("POST", "http://registry/", files=files)
        parts = dict(parts_of(request, b"".join(request.stream)))  # type: ignore[arg-type]
    assert json.loads(parts["metadata"]) == {"version": "1"}


def test_metadata_before_the_whole_model_is_refused_rather_than_declaring_a_partial_digest(
    folder: dict[str, Path],
) -> None:
    with contextlib.ExitStack() as stack:
        files: dict[str, Any] = upload_parts(stack, folder, {"version": "1"}, lambda _: None)
        reordered = {"metadata": files.pop("metadata"), **files}
        request = httpx.Request("POST", "http://registry/", files=reordered)
        with pytest.raises(RuntimeError, match="must be sent after the model"):
            b"".join(request.stream)  # type: ignore[arg-type]
