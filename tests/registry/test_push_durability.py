"""What a push makes durable, and when the staging goes.

The parts of a push are written to staging unsynced; :meth:`BlobStore.commit` fsyncs each file
it stores before linking it under its digest. So every stored file (the model, its sidecars and
the registry's signature) is synced before the version row commits, while a part whose bytes
the store already has is never synced, only removed. The staging of a stored push is removed
after the 201 is sent (a response background task), not before it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from linegate.auth import Principal, Role
from registry import storage, versions
from registry.timing import StageTimes
from tests.registry.conftest import MODEL


@pytest.fixture
async def model_line(registry: Any) -> Any:
    await registry.create_system()
    return await registry.create_model()


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files BlobStore.commit fsyncs, in order (the real fsync still runs)."""
    calls: list[Path] = []
    real = storage._fsync_file

    def spy(path: Path) -> None:
        calls.append(path)
        real(path)

    monkeypatch.setattr(storage, "_fsync_file", spy)
    return calls


def _staged_names(paths: list[Path]) -> list[str]:
    return sorted(p.name for p in paths)


async def test_every_stored_file_is_synced_and_stored_bytes_are_not_synced_again(
    registry: Any, model_line: Any, fsynced: list[Path]
) -> None:
    files = registry.artefact("2.1.0")
    r = await registry.push("2.1.0", files=files)
    assert r.status_code == 201, r.text
    stored = {f["sha256"] for f in r.json()["files"]}
    # The three parts and the registry's signature, each synced before it was linked.
    assert _staged_names(fsynced) == [
        "model.sig", "part-model", "part-model_card", "part-preprocess"
    ]  # fmt: skip
    store = registry.app.state.registry.store
    assert all(store.exists(d) for d in stored)

    # The same folder again as another version: only the new signature is new to the store.
    fsynced.clear()
    r = await registry.push("2.1.1", files=files, security_version=1)
    assert r.status_code == 201, r.text
    assert {f["sha256"] for f in r.json()["files"]} == stored
    assert _staged_names(fsynced) == ["model.sig"]
    assert list((store.root / ".staging").iterdir()) == []


async def test_the_staging_of_a_stored_push_is_left_to_the_deferred_task(
    registry: Any, model_line: Any
) -> None:
    """push_version with ``defer`` returns with the staging still there; the task it was
    handed removes it. Without ``defer`` (and on any refusal) it is gone on return."""
    reg = registry.app.state.registry
    files = registry.artefact("3.0.0")
    request = httpx.Request(
        "POST",
        "http://registry/",
        files={
            "model": ("model.onnx", files["model"]),
            "metadata": ("metadata.json", b'{"version": "3.0.0"}', "application/json"),
        },
    )
    body = request.read()

    async def chunks() -> Any:
        yield body

    deferred: list[Any] = []
    actor = Principal(subject="dana-datasci", roles=frozenset({Role.REGISTRY_APPROVE}))
    times = StageTimes()
    version = await versions.push_version(
        reg, actor, MODEL, request.headers["content-type"], chunks(), times, deferred.append
    )
    assert version.version == "3.0.0"
    staging = reg.store.root / ".staging"
    left = list(staging.iterdir())
    assert len(left) == 1
    assert (left[0] / "part-model").is_file()
    assert len(deferred) == 1
    deferred[0]()
    assert list(staging.iterdir()) == []
    assert list(times.stages) == ["body", "drain", "check", "inspect", "sign", "store", "record"]


def test_commit_fsyncs_a_file_written_unsynced(tmp_path: Path) -> None:
    store = storage.BlobStore(tmp_path / "store")
    with store.staging() as stage:
        writer = storage.HashingWriter(stage.directory / "part", limit=1 << 20, name="part")
        writer.write(b"x" * 1000)
        writer.close(sync=False)
        received = writer.received()
        assert store.commit(received) is True
        assert store.commit(received) is False  # stored already: nothing to link or sync
    assert store.path(received.sha256).read_bytes() == b"x" * 1000
    assert store.path(received.sha256).stat().st_nlink == 1  # the staged name is gone
