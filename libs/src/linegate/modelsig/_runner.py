"""Running ``model_signing``'s signer and verifier with Linegate's one hashing scheme (per-file
SHA-256), ignore paths, known digests, atomic writes and per-file failure messages."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature

from linegate.modelsig._types import (
    KnownDigest,
    ModelSignatureError,
    SignedFile,
    _reason,
    _Statement,
)

if TYPE_CHECKING:
    from model_signing.hashing import Config as HashingConfig
    from model_signing.manifest import Manifest
    from model_signing.verifying import Config as VerifyingConfig

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _model_root(model_dir: Path) -> Path:
    # Resolved once so ignore paths, the signature path and model_signing's walk all agree.
    root = Path(model_dir).resolve()
    if not root.is_dir():
        raise ModelSignatureError(f"model directory {model_dir} does not exist or is not a folder")
    return root


def _relative_ignore_paths(
    root: Path, ignore_paths: Sequence[Path], signature_path: Path
) -> list[Path]:
    relative: list[Path] = []
    for given in ignore_paths:
        full = (root / given).resolve()  # an absolute ``given`` replaces ``root``
        if not full.is_relative_to(root) or full == root:
            raise ModelSignatureError(
                f"ignore path {given} is not inside the model directory {root}"
            )
        relative.append(full.relative_to(root))
    signature = Path(signature_path).resolve()
    if signature.is_relative_to(root) and signature != root:
        relative.append(signature.relative_to(root))
    return sorted(set(relative))


def _run_signer(
    root: Path,
    signature_path: Path,
    ignore_paths: Sequence[Path],
    configure: Callable[[Any], Any],
    known_digests: Mapping[str, KnownDigest] | None = None,
) -> None:
    """Sign ``root`` with the signer ``configure`` sets on a ``model_signing.signing.Config``."""
    from model_signing import signing

    ignored = _relative_ignore_paths(root, ignore_paths, signature_path)
    hashing_config = _hashing_config(
        ignored, _known_digests_config(root, known_digests) if known_digests else None
    )
    # model_signing writes the signature with a plain write_text; sign into a private directory
    # and move the result into place so a concurrent verifier never reads a partial bundle.
    with tempfile.TemporaryDirectory(prefix="linegate-modelsig-") as tmp:
        unsigned = Path(tmp) / "model.sig"
        try:
            # model_signing's constructors lack annotations (its methods are typed).
            signer = configure(signing.Config())  # type: ignore[no-untyped-call]
            signer.set_hashing_config(hashing_config).sign(root, unsigned)
        except Exception as e:  # any failure of the third-party signer is a signing failure
            raise ModelSignatureError(f"cannot sign model directory {root}: {_reason(e)}") from e
        _write_atomically(signature_path, unsigned.read_bytes())


def _run_verifier(
    root: Path,
    raw: bytes,
    signature_path: Path,
    statement: _Statement,
    ignore_paths: Sequence[Path],
    configure: Callable[[VerifyingConfig, Path], VerifyingConfig],
    *,
    bad_signature: str,
) -> None:
    """Run ``model_signing``'s verifier (set by ``configure``) over ``root`` and ``raw``.

    ``configure`` gets a private temporary directory for any file the verifier must read.
    Raises :class:`ModelSignatureError` with ``bad_signature`` when the envelope's signature is
    wrong, or naming the files that differ from the statement.
    """
    from model_signing import verifying

    ignored = _relative_ignore_paths(root, ignore_paths, signature_path)
    hashing_config, hashed = _recording_hashing_config(ignored)
    # model_signing re-reads its inputs from paths; hand it private copies of exactly the bytes
    # parsed by the caller, so the digests returned are the ones whose signature was checked.
    with tempfile.TemporaryDirectory(prefix="linegate-modelsig-") as tmp:
        sig_copy = Path(tmp) / "model.sig"
        sig_copy.write_bytes(raw)
        try:
            verifier = verifying.Config()  # type: ignore[no-untyped-call]
            configure(verifier, Path(tmp)).set_hashing_config(hashing_config).verify(root, sig_copy)
        except InvalidSignature as e:
            raise ModelSignatureError(bad_signature) from e
        except ModelSignatureError:
            raise
        except Exception as e:  # any other failure of the third-party verifier fails verification
            raise _explain_failure(e, root, signature_path, statement, hashed) from e

    actual = hashed.manifest
    if actual is None or _files_of(actual) != statement.files:
        # Unreachable unless model_signing's notion of a match diverges from ours: fail closed.
        raise ModelSignatureError(
            f"model directory {root} verified but its digests differ from the signed statement"
        )


def _hashing_config(ignored: Iterable[Path], config: HashingConfig | None = None) -> HashingConfig:
    """``config`` (a new ``hashing.Config`` by default) set to Linegate's one hashing scheme."""
    from model_signing import hashing

    if config is None:
        config = hashing.Config()  # type: ignore[no-untyped-call]
    # Per-file SHA-256, pinned on both sides so a signature cannot choose a weaker scheme; git
    # paths are signed like any other file, so nothing in a release folder escapes the check.
    return config.use_file_serialization(hashing_algorithm="sha256").set_ignored_paths(
        paths=list(ignored), ignore_git_paths=False
    )


@dataclass(slots=True)
class _HashRecord:
    """What model_signing's hashing of the directory produced: a manifest or an error."""

    manifest: Manifest | None = None
    error: BaseException | None = None


def _recording_hashing_config(ignored: Iterable[Path]) -> tuple[HashingConfig, _HashRecord]:
    """:func:`_hashing_config` that also keeps the manifest it computes (or the error it hit).

    ``model_signing`` reports a mismatch as one formatted string; keeping the directory's
    manifest lets the error name each file without hashing the model a second time.
    """
    from model_signing import hashing

    record = _HashRecord()

    # Defined here because importing model_signing costs over a second (it pulls in sigstore).
    class RecordingConfig(hashing.Config):
        def __init__(self) -> None:
            super().__init__()  # type: ignore[no-untyped-call]

        def hash(
            self,
            model_path: hashing.PathLike,
            *,
            files_to_hash: Iterable[hashing.PathLike] | None = None,
        ) -> Manifest:
            try:
                record.manifest = super().hash(model_path, files_to_hash=files_to_hash)
            except BaseException as e:
                record.error = e
                raise
            return record.manifest

    return _hashing_config(ignored, RecordingConfig()), record


def _known_digests_config(root: Path, known: Mapping[str, KnownDigest]) -> HashingConfig:
    """A ``hashing.Config`` whose per-file hasher returns ``known`` digests instead of reading.

    Only the file hasher changes: model_signing still walks ``root``, applies the ignore paths
    and the symlink rule, and builds the manifest and its serialization description itself, so
    the signed statement is the one hashing would have produced (tests compare the two).
    """
    from model_signing import hashing
    from model_signing._hashing import hashing as engines
    from model_signing._hashing import io

    by_path = {root / Path(name): digest for name, digest in known.items()}
    for path, digest in by_path.items():
        if not path.resolve().is_relative_to(root) or not _SHA256_HEX.fullmatch(digest.sha256):
            raise ModelSignatureError(f"invalid known digest for {path}: {digest}")

    class KnownFileHasher(io.FileHasher):
        def __init__(self, path: Path, digest: KnownDigest, digest_name: str) -> None:
            self._path = path
            self._known = digest
            self._name = digest_name

        @property
        def digest_name(self) -> str:
            return self._name

        @property
        def digest_size(self) -> int:
            return 32

        def compute(self) -> engines.Digest:
            size = self._path.stat().st_size
            if size != self._known.size:
                raise ModelSignatureError(
                    f"{self._path} has {size} bytes, not the {self._known.size} whose digest "
                    "was given: it changed after it was written"
                )
            return engines.Digest(self._name, bytes.fromhex(self._known.sha256))

    class KnownDigestsConfig(hashing.Config):
        # Called by hashing.Config.__init__ and use_file_serialization(); wraps the stock
        # factory so that the digest name and every unknown file are exactly model_signing's.
        def _build_file_hasher_factory(self, *args: Any, **kwargs: Any) -> Any:
            inner = super()._build_file_hasher_factory(*args, **kwargs)

            def factory(path: Path) -> io.FileHasher:
                hasher = inner(path)
                digest = by_path.get(Path(path))
                if digest is None or not isinstance(hasher, io.SimpleFileHasher):
                    return hasher
                if hasher.digest_name != "sha256":
                    raise ModelSignatureError("known digests are SHA-256; the hashing is not")
                return KnownFileHasher(Path(path), digest, hasher.digest_name)

            return factory

    return KnownDigestsConfig()  # type: ignore[no-untyped-call]


def _files_of(manifest: Manifest) -> tuple[SignedFile, ...]:
    return tuple(
        SignedFile(str(rd.identifier), str(rd.digest.digest_hex))
        for rd in manifest.resource_descriptors()
    )


def _explain_failure(
    error: Exception,
    root: Path,
    signature_path: Path,
    statement: _Statement,
    hashed: _HashRecord,
) -> ModelSignatureError:
    if hashed.error is not None:
        return ModelSignatureError(f"cannot hash model directory {root}: {_reason(error)}")
    if hashed.manifest is None:
        # The verifier failed before hashing: the envelope or statement itself is bad.
        return ModelSignatureError(f"signature {signature_path} is invalid: {_reason(error)}")
    signed = dict(statement.files)
    found = {f.path: f.sha256 for f in _files_of(hashed.manifest)}
    problems = []
    if changed := sorted(p for p in signed.keys() & found.keys() if signed[p] != found[p]):
        problems.append("changed since signing: " + ", ".join(changed))
    if added := sorted(found.keys() - signed.keys()):
        problems.append("not in the signature (added): " + ", ".join(added))
    if removed := sorted(signed.keys() - found.keys()):
        problems.append("signed but missing (removed or ignored): " + ", ".join(removed))
    if not problems:
        return ModelSignatureError(f"model directory {root} failed verification: {_reason(error)}")
    return ModelSignatureError(
        f"model directory {root} does not match signature {signature_path}: " + "; ".join(problems)
    )


def _write_atomically(path: Path, data: bytes) -> None:
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            Path(tmp).replace(path)
        except BaseException:
            with contextlib.suppress(OSError):
                Path(tmp).unlink()
            raise
    except OSError as e:
        raise ModelSignatureError(f"cannot write signature {path}: {_reason(e)}") from e
