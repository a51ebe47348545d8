"""Signed release metadata for devices: TUF targets metadata over one model release.

The edge gateway tells each device what to run by pointing its desired state at a release
metadata document; the device downloads the artefacts from the object store (objects named by
their SHA-256) and installs them only if everything checks out. The document is standard TUF
*targets* metadata (spec 1.0.x, JSON, built and parsed with python-tuf's ``Metadata[Targets]``)
signed with the gateway's ECDSA P-256 key (``ecdsa`` / ``ecdsa-sha2-nistp256``), so it answers
the TUF attack model: arbitrary software (signature over every file's length and digest),
mix-and-match (digests per file, one document per release), endless data (signed lengths,
:class:`LengthGuard`), freeze (``expires``) and rollback (``security_version``).

The document::

    {"signatures": [{"keyid": "<TUF keyid>", "sig": "<hex>"}],
     "signed": {"_type": "targets", "spec_version": "1.0.31", "version": 3,
                "expires": "2030-01-01T00:00:00Z",
                "targets": {"model.onnx": {"length": 123, "hashes": {"sha256": "<hex>"},
                                           "custom": {"object_name": "<hex>"}}, ...},
                "x-linegate-release": {"model": "weld-seam-inspector", "version": "2.1.0",
                                       "security_version": 7, "manifest_sha256": "<hex>",
                                       "rollback": {...}}}}

Where things live, and why:

* ``targets``: every file of the artefact folder (``model.onnx``, ``preprocess.json``,
  ``model_card.md``, ``model.sig``) with ``length`` and ``hashes.sha256``; ``custom.object_name``
  is the object-store name (the SHA-256 hex), so a device never guesses where to fetch.
* ``x-linegate-release``: the release-level fields, one object among ``signed``'s unrecognized
  fields (``Targets.unrecognized_fields``). The TUF spec requires implementations to keep such
  fields and include them when verifying signatures, so they are signed like everything else and
  other TUF tools read the document unchanged. A field of ``signed`` rather than one target's
  ``custom`` because these describe the release, not a file; the ``x-`` prefix keeps it clear
  of future spec fields. ``manifest_sha256`` is the subject digest of the model-signing statement
  (:attr:`linegate.modelsig.VerifiedModel.manifest_sha256`), tying the two signatures together.
* ``rollback`` (optional): ``{"incident_id", "approved_by": [...], "reason",
  "from_security_version", "to_security_version"}``; ``to_security_version`` always equals the
  release's own ``security_version`` (:func:`sign_release` fills it in), so an instruction can
  never be read as authorising any other target.
* ``device`` (optional): binds the document to one device, for the desired state the gateway
  writes under that device's key: ``{"id", "revision", "control", "shadow"}``. ``revision`` is
  the device's desired-state revision (monotonic, also the TUF ``version``): a device refuses a
  document older than the one it applied, and, once it has applied a bound one, any unbound
  document (a replay cannot undo an incident's order). ``control`` (or null) is what an
  approved incident action ordered: ``{"mode": "automatic" | "manual_inspection",
  "threshold": "0.92" | null, "incident_id", "action_id", "approved_by": [...], "reason"}``.
  ``shadow`` (or null) is the complete signed metadata (a string) of a candidate release the
  device runs beside the active one without letting it decide (a rollout's shadow stage);
  the device verifies it on its own, like any release.
* ``x-linegate-competence`` (optional, a second field of ``signed``): the override roster for
  the AI system the release's model line belongs to, from the registry's competence register:
  ``{"system_id", "nist_tier": 1 | 2 | 3 | null, "as_of": "<UTC time>", "override":
  [{"person", "trained_at", "valid_until"}, ...]}`` (times ``YYYY-MM-DDTHH:MM:SSZ``; every
  unrevoked ``override`` training that has not ended, so a device decides at the moment of an
  override, offline, whether its operator's training is current). Its own field rather than a
  key of ``x-linegate-release`` so that agents which predate it ignore it (they reject unknown
  release and device keys); it is signed like everything in ``signed``.
* ``expires`` and ``version`` (the monotonic metadata version) are TUF's own fields.

Trust: a device holds the gateway's public key(s); key ids are TUF's
(``securesystemslib`` ``compute_default_keyid``). One valid signature by any trusted key is
enough (threshold 1: the keys are alternatives, e.g. during key rotation), checked with
python-tuf's own delegation logic (a ``Root`` whose ``targets`` role lists the trusted keys).
Signatures only by keys the device does not know make the document *unsigned*; a signature
claiming a trusted key id that does not verify makes it *bad-signature* (tampered, or forged
under a borrowed key id).

Anti-rollback: with ``installed_security_version`` given, a release with a lower
``security_version`` is refused unless it carries a rollback instruction for exactly its own
security version, and the device does not already run something newer than the instruction's
``from_security_version`` (a later release supersedes an old incident's rollback).

Example::

    import hashlib
    from datetime import UTC, datetime, timedelta

    from linegate.release_metadata import LengthGuard, ReleaseFile, sign_release, verify_release
    from linegate.signing import generate_private_key

    key = generate_private_key()
    onnx = b"...model bytes..."
    raw = sign_release(
        key,
        model="weld-seam-inspector",
        version="2.1.0",
        security_version=7,
        manifest_sha256="ab" * 32,
        files=[ReleaseFile("model.onnx", len(onnx), hashlib.sha256(onnx).hexdigest())],
        expires=datetime.now(UTC) + timedelta(days=30),
    )
    release = verify_release(
        raw, [key.public_key()], model="weld-seam-inspector", installed_security_version=6
    )
    guard = LengthGuard(release.file("model.onnx"))
    guard.feed(onnx)  # chunk by chunk as the object store streams it
    guard.finish()
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.formats import encode_canonical

# securesystemslib and python-tuf re-export their API without ``as``, which mypy does not count
# as explicit; these are the documented import paths.
from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, TargetFile, Targets  # type: ignore[attr-defined]
from tuf.api.serialization import DeserializationError, SerializationError

__all__ = [
    "COMPETENCE_FIELD",
    "CONTROL_MODES",
    "MAX_METADATA_BYTES",
    "RELEASE_FIELD",
    "LengthGuard",
    "Release",
    "ReleaseFile",
    "ReleaseMetadataError",
    "check_file",
    "release_files",
    "sign_release",
    "verify_release",
]

#: The key in ``signed`` that holds the release-level fields.
RELEASE_FIELD = "x-linegate-release"
#: The key in ``signed`` that holds the override roster (competence register extract).
COMPETENCE_FIELD = "x-linegate-competence"
#: Devices refuse metadata larger than this before parsing it (endless-data defence).
MAX_METADATA_BYTES = 1 << 20

Reason = Literal[
    "malformed", "unsigned", "bad-signature", "expired", "rollback", "mismatch", "length", "digest"
]

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_RELEASE_KEYS = frozenset(
    {"model", "version", "security_version", "manifest_sha256", "rollback", "device"}
)
_DEVICE_KEYS = frozenset({"id", "revision", "control", "shadow"})
_CONTROL_KEYS = frozenset(
    {"mode", "threshold", "incident_id", "action_id", "approved_by", "reason"}
)
CONTROL_MODES = ("automatic", "manual_inspection")
_ROLLBACK_KEYS = frozenset(
    {"incident_id", "approved_by", "reason", "from_security_version", "to_security_version"}
)
_COMPETENCE_KEYS = frozenset({"system_id", "nist_tier", "as_of", "override"})
_TRAINING_KEYS = frozenset({"person", "trained_at", "valid_until"})
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_CHUNK = 1 << 20


class ReleaseMetadataError(Exception):
    """Release metadata or a downloaded file was refused; ``reason`` says which defence fired.

    ``reason`` is one of ``malformed``, ``unsigned``, ``bad-signature``, ``expired``,
    ``rollback``, ``mismatch``, ``length``, ``digest`` (stable: devices report it in their
    status); ``str(e)`` is a sentence for the operator.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


@dataclass(frozen=True, slots=True)
class ReleaseFile:
    """One signed file of a release: POSIX path in the artefact folder, length, SHA-256 hex."""

    path: str
    length: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Release:
    """What verified release metadata vouches for (files sorted by path)."""

    model: str
    version: str
    security_version: int
    manifest_sha256: str
    files: tuple[ReleaseFile, ...]
    expires: datetime
    metadata_version: int
    rollback: dict[str, Any] | None
    #: The device binding (``id``, ``revision``, ``control``, ``shadow``) or ``None``.
    device: dict[str, Any] | None = None
    #: The override roster (``system_id``, ``nist_tier``, ``as_of``, ``override``: entries
    #: with ``person`` and timezone-aware ``trained_at`` / ``valid_until``) or ``None``.
    competence: dict[str, Any] | None = None

    def file(self, path: str) -> ReleaseFile:
        """The signed entry for ``path``; ``mismatch`` when the release has no such file."""
        for entry in self.files:
            if entry.path == path:
                return entry
        raise ReleaseMetadataError(
            "mismatch",
            f"{path!r} is not a file of release {self.model} {self.version} "
            f"(signed files: {', '.join(f.path for f in self.files)})",
        )


# ------------------------------------------------------------------------------------ sign


def sign_release(
    key: ec.EllipticCurvePrivateKey,
    *,
    model: str,
    version: str,
    security_version: int,
    manifest_sha256: str,
    files: Sequence[ReleaseFile],
    expires: datetime,
    metadata_version: int = 1,
    rollback: Mapping[str, Any] | None = None,
    device: Mapping[str, Any] | None = None,
    competence: Mapping[str, Any] | None = None,
) -> bytes:
    """Canonical JSON bytes of TUF targets metadata for one release, signed with ``key``.

    ``expires`` must be timezone-aware (it is stored in UTC, to the second). ``rollback``, when
    given, needs ``incident_id``, ``approved_by`` (non-empty list of distinct names), ``reason``
    and ``from_security_version`` (above ``security_version``); ``to_security_version`` is filled
    in. ``device`` binds the document to one device (``id``, ``revision``, optional
    ``control`` and ``shadow``; see the module docstring). ``competence`` is the override
    roster (``system_id``, ``nist_tier``, ``as_of`` and ``override`` entries; times as aware
    datetimes or ``YYYY-MM-DDTHH:MM:SSZ`` strings). Raises :class:`ReleaseMetadataError`
    (``malformed``) naming the field that is wrong.
    """
    if expires.tzinfo is None:
        raise ValueError("expires must be timezone-aware (e.g. datetime.now(UTC) + timedelta)")
    if rollback is not None:
        rollback = {"to_security_version": security_version, **rollback}
    block = _release_block(
        {
            "model": model,
            "version": version,
            "security_version": security_version,
            "manifest_sha256": manifest_sha256,
            **({"rollback": dict(rollback)} if rollback is not None else {}),
            **({"device": dict(device)} if device is not None else {}),
        }
    )
    if type(metadata_version) is not int or metadata_version < 1:
        raise _malformed(f"metadata_version must be an integer >= 1, not {metadata_version!r}")
    targets: dict[str, TargetFile] = {}
    for f in files:
        entry = _release_file(f.path, f.length, f.sha256)
        if entry.path in targets:
            raise _malformed(f"file {entry.path!r} is listed twice")
        targets[entry.path] = TargetFile(
            entry.length,
            {"sha256": entry.sha256},
            entry.path,
            {"custom": {"object_name": entry.sha256}},
        )
    if not targets:
        raise _malformed("a release needs at least one file")
    fields: dict[str, Any] = {RELEASE_FIELD: block}
    if competence is not None:
        fields[COMPETENCE_FIELD] = _signed_competence(_competence(competence))

    metadata = Metadata(
        Targets(
            version=metadata_version,
            expires=expires.astimezone(UTC),
            targets=targets,
            unrecognized_fields=fields,
        )
    )
    metadata.sign(CryptoSigner(key))
    text = encode_canonical(metadata.to_dict())
    assert text is not None  # returns None only when given an output function
    raw = text.encode()
    if len(raw) > MAX_METADATA_BYTES:
        raise _malformed(
            f"signed metadata is {len(raw)} bytes; devices refuse more than {MAX_METADATA_BYTES}"
        )
    return raw


def release_files(artefact_dir: Path) -> tuple[ReleaseFile, ...]:
    """Length and SHA-256 of every regular file under ``artefact_dir`` (streamed, by path).

    Symlinks are refused (``malformed``): a release ships bytes, not pointers.
    """
    entries = []
    for path in sorted(artefact_dir.rglob("*")):
        if path.is_symlink():
            raise _malformed(f"{path} is a symlink; release artefacts must be regular files")
        if not path.is_file():
            continue
        digest = hashlib.sha256()
        length = 0
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                length += len(chunk)
        rel = path.relative_to(artefact_dir).as_posix()
        entries.append(ReleaseFile(rel, length, digest.hexdigest()))
    return tuple(entries)


# ---------------------------------------------------------------------------------- verify


def verify_release(
    raw: bytes,
    trusted_keys: Sequence[ec.EllipticCurvePublicKey],
    *,
    now: datetime | None = None,
    model: str | None = None,
    installed_security_version: int | None = None,
    max_bytes: int = MAX_METADATA_BYTES,
) -> Release:
    """Verify signed release metadata and return the release it describes.

    Checks, in order: size (``malformed``), TUF targets JSON (``malformed``), one valid signature
    by a trusted key (``unsigned`` / ``bad-signature``), the release fields (``malformed``),
    ``expires`` against ``now`` (``expired``), the expected ``model`` (``mismatch``) and
    anti-rollback against ``installed_security_version`` (``rollback``). Nothing in the document
    is interpreted before its signature verifies.
    """
    if not trusted_keys:
        raise ValueError("verify_release needs at least one trusted public key")
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if len(raw) > max_bytes:
        raise _malformed(
            f"release metadata is {len(raw)} bytes, over the {max_bytes}-byte limit; "
            "refusing to parse it"
        )
    metadata = _parse(raw)
    _verify_signatures(metadata, trusted_keys)
    release = _release(metadata.signed)

    if metadata.signed.is_expired(now):
        raise ReleaseMetadataError(
            "expired",
            f"release metadata for {release.model} {release.version} expired at "
            f"{release.expires:%Y-%m-%dT%H:%M:%SZ}; the gateway must re-sign it "
            "(a stale document may hide a newer release: freeze attack)",
        )
    if model is not None and release.model != model:
        raise ReleaseMetadataError(
            "mismatch",
            f"release metadata is for model {release.model!r}, but this device expects {model!r}",
        )
    if installed_security_version is not None:
        _check_rollback(release, installed_security_version)
    return release


def check_file(release: Release, path: str, length: int, sha256: str) -> None:
    """Refuse a downloaded file unless its length and SHA-256 equal the signed ones.

    Raises ``mismatch`` (not a file of the release), ``length`` or ``digest`` (tampered, or a
    file of another release: mix-and-match).
    """
    expected = release.file(path)
    if length != expected.length:
        raise ReleaseMetadataError(
            "length",
            f"{path} is {length} bytes but release {release.model} {release.version} "
            f"signed {expected.length}; refusing it",
        )
    if not hmac.compare_digest(sha256.lower().encode(), expected.sha256.encode()):
        raise ReleaseMetadataError(
            "digest",
            f"{path} has sha256 {sha256} but release {release.model} {release.version} signed "
            f"{expected.sha256}; the file was tampered with or belongs to another release",
        )


class LengthGuard:
    """Check a streamed download against its signed length and digest, chunk by chunk.

    :meth:`feed` refuses the chunk that would take the download past the signed length, so a
    malicious source cannot fill the disk (endless data); :meth:`finish` then checks the exact
    length and the digest. Memory stays constant.
    """

    def __init__(self, expected: ReleaseFile) -> None:
        self._expected = expected
        self._digest = hashlib.sha256()
        self._received = 0
        self._overflowed = False

    @property
    def received(self) -> int:
        """Bytes accepted so far."""
        return self._received

    def feed(self, chunk: bytes) -> None:
        """Hash ``chunk``; ``length`` as soon as the total would exceed the signed length."""
        if self._overflowed or self._received + len(chunk) > self._expected.length:
            self._overflowed = True
            raise ReleaseMetadataError(
                "length",
                f"{self._expected.path}: more than the signed {self._expected.length} bytes "
                "arrived; stop the download and discard it",
            )
        self._digest.update(chunk)
        self._received += len(chunk)

    def finish(self) -> None:
        """``length`` unless exactly the signed length arrived, then ``digest`` on mismatch."""
        if self._overflowed or self._received != self._expected.length:
            raise ReleaseMetadataError(
                "length",
                f"{self._expected.path}: {'more than' if self._overflowed else 'only'} "
                f"{self._received} of the signed {self._expected.length} bytes arrived",
            )
        actual = self._digest.hexdigest()
        if not hmac.compare_digest(actual.encode(), self._expected.sha256.encode()):
            raise ReleaseMetadataError(
                "digest",
                f"{self._expected.path}: sha256 {actual} differs from the signed "
                f"{self._expected.sha256}; the download was tampered with, discard it",
            )


# -------------------------------------------------------------------------------- internal


def _malformed(message: str) -> ReleaseMetadataError:
    return ReleaseMetadataError("malformed", message)


def _parse(raw: bytes) -> Metadata[Targets]:
    try:
        metadata: Metadata[Any] = Metadata.from_bytes(raw)
    except DeserializationError as e:
        raise _malformed(f"release metadata is not TUF JSON metadata: {e.__cause__ or e}") from e
    if not isinstance(metadata.signed, Targets):
        raise _malformed(
            f"release metadata must be TUF targets metadata, not {metadata.signed.type!r}"
        )
    return metadata


def _verify_signatures(
    metadata: Metadata[Targets], trusted_keys: Sequence[ec.EllipticCurvePublicKey]
) -> None:
    # The device's trust anchor expressed as TUF: the targets role lists the trusted keys with
    # threshold 1, and python-tuf's delegation check decides.
    anchor = Root()
    for public_key in trusted_keys:
        anchor.add_key(SSlibKey.from_crypto(public_key), Targets.type)
    try:
        payload = metadata.signed_bytes
    except SerializationError as e:
        raise _malformed(f"release metadata cannot be canonicalised: {e.__cause__ or e}") from e
    try:
        anchor.verify_delegate(Targets.type, payload, metadata.signatures)
    except UnsignedMetadataError:
        pass
    else:
        return
    trusted = set(anchor.roles[Targets.type].keyids)
    if not metadata.signatures:
        raise ReleaseMetadataError("unsigned", "release metadata carries no signature; refusing it")
    claimed = sorted(trusted & metadata.signatures.keys())
    if claimed:
        raise ReleaseMetadataError(
            "bad-signature",
            f"the signature for trusted key {claimed[0]} does not verify: the metadata was "
            "changed after signing, or the signature was forged under that key id",
        )
    raise ReleaseMetadataError(
        "unsigned",
        "release metadata is signed only by keys this device does not trust "
        f"({', '.join(sorted(metadata.signatures))}); it trusts {', '.join(sorted(trusted))}",
    )


def _release(signed: Targets) -> Release:
    if signed.delegations is not None:
        raise _malformed("release metadata must not delegate; list every file in 'targets'")
    block = _release_block(signed.unrecognized_fields.get(RELEASE_FIELD))
    files = []
    for path, target in signed.targets.items():
        entry = _release_file(path, target.length, target.hashes.get("sha256"))
        custom = target.custom
        if custom is not None and (
            not isinstance(custom, dict) or custom.get("object_name", entry.sha256) != entry.sha256
        ):
            raise _malformed(f"target {path!r}: custom.object_name must be the file's sha256")
        files.append(entry)
    if not files:
        raise _malformed("release metadata lists no files")
    return Release(
        model=block["model"],
        version=block["version"],
        security_version=block["security_version"],
        manifest_sha256=block["manifest_sha256"],
        files=tuple(sorted(files, key=lambda f: f.path)),
        expires=signed.expires,
        metadata_version=signed.version,
        rollback=block.get("rollback"),
        device=block.get("device"),
        competence=(
            None
            if signed.unrecognized_fields.get(COMPETENCE_FIELD) is None
            else _competence(signed.unrecognized_fields[COMPETENCE_FIELD])
        ),
    )


def _check_rollback(release: Release, installed: int) -> None:
    if release.security_version >= installed:
        return
    what = (
        f"{release.model} {release.version} has security_version {release.security_version}, "
        f"below the installed {installed}"
    )
    rollback = release.rollback
    if rollback is None:
        raise ReleaseMetadataError(
            "rollback",
            f"{what}, and its metadata carries no rollback instruction; installing it needs a "
            "signed rollback instruction from an approved incident",
        )
    if installed > rollback["from_security_version"]:
        raise ReleaseMetadataError(
            "rollback",
            f"{what}; the rollback instruction of incident {rollback['incident_id']} covers "
            f"devices at security_version {rollback['from_security_version']} or below only",
        )


def _release_block(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _malformed(f"release metadata has no {RELEASE_FIELD!r} object in 'signed'")
    unknown = set(value) - _RELEASE_KEYS
    if unknown:
        raise _malformed(f"unknown release fields {sorted(unknown)}")
    block: dict[str, Any] = {
        "model": _text(value, "model"),
        "version": _text(value, "version"),
        "security_version": _int(value, "security_version"),
        "manifest_sha256": _sha256(value.get("manifest_sha256"), "manifest_sha256"),
    }
    if value.get("rollback") is not None:
        block["rollback"] = _rollback(value["rollback"], block["security_version"])
    if value.get("device") is not None:
        block["device"] = _device(value["device"])
    return block


def _device(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _malformed("device must be an object")
    unknown = set(value) - _DEVICE_KEYS
    if unknown:
        raise _malformed(f"unknown device fields {sorted(unknown)}")
    revision = _int(value, "revision")
    if revision < 1:
        raise _malformed("device revision must be >= 1")
    shadow = value.get("shadow")
    if shadow is not None and (not isinstance(shadow, str) or not shadow):
        raise _malformed("device shadow must be the candidate's signed metadata, as a string")
    control = value.get("control")
    return {
        "id": _text(value, "id"),
        "revision": revision,
        "control": None if control is None else _control(control),
        "shadow": shadow,
    }


def _control(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _malformed("device control must be an object")
    unknown = set(value) - _CONTROL_KEYS
    if unknown:
        raise _malformed(f"unknown control fields {sorted(unknown)}")
    mode = value.get("mode")
    if mode not in CONTROL_MODES:
        raise _malformed(f"control mode must be one of {list(CONTROL_MODES)}, not {mode!r}")
    # A decimal string: TUF's canonical JSON has no floats.
    threshold = value.get("threshold")
    if threshold is not None:
        try:
            number = float(threshold) if isinstance(threshold, str) else math.nan
        except ValueError:
            number = math.nan
        if not 0.0 < number <= 1.0:
            raise _malformed(
                f"control threshold must be a decimal string in (0, 1], not {threshold!r}"
            )
    approved_by = value.get("approved_by")
    if not isinstance(approved_by, list | tuple) or not approved_by:
        raise _malformed("control approved_by must be a non-empty list of names")
    return {
        "mode": mode,
        "threshold": threshold,
        "incident_id": _text(value, "incident_id"),
        "action_id": _text(value, "action_id"),
        "approved_by": [_text_value(name, "approved_by") for name in approved_by],
        "reason": _text(value, "reason"),
    }


def _competence(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _malformed(f"{COMPETENCE_FIELD} must be an object")
    unknown, missing = set(value) - _COMPETENCE_KEYS, _COMPETENCE_KEYS - set(value)
    if unknown or missing:
        raise _malformed(
            f"{COMPETENCE_FIELD} needs exactly {sorted(_COMPETENCE_KEYS)}"
            f" (unknown: {sorted(unknown)}, missing: {sorted(missing)})"
        )
    tier = value["nist_tier"]
    if tier is not None and (type(tier) is not int or tier not in (1, 2, 3)):
        raise _malformed(f"competence nist_tier must be 1, 2, 3 or null, not {tier!r}")
    entries = value["override"]
    if not isinstance(entries, list | tuple):
        raise _malformed("competence override must be a list of trainings")
    override = []
    for entry in entries:
        if not isinstance(entry, Mapping) or set(entry) != _TRAINING_KEYS:
            raise _malformed(f"a competence override entry needs exactly {sorted(_TRAINING_KEYS)}")
        trained_at = _time(entry["trained_at"], "trained_at")
        valid_until = _time(entry["valid_until"], "valid_until")
        if valid_until <= trained_at:
            raise _malformed(
                f"competence of {entry['person']!r}: valid_until is not after trained_at"
            )
        override.append(
            {
                "person": _text_value(entry["person"], "person"),
                "trained_at": trained_at,
                "valid_until": valid_until,
            }
        )
    return {
        "system_id": _text(value, "system_id"),
        "nist_tier": tier,
        "as_of": _time(value["as_of"], "as_of"),
        "override": override,
    }


def _signed_competence(value: Mapping[str, Any]) -> dict[str, Any]:
    """The roster as canonical JSON holds it (times as strings, entries in a stable order)."""
    entries = [
        {**e, "trained_at": _stamp(e["trained_at"]), "valid_until": _stamp(e["valid_until"])}
        for e in value["override"]
    ]
    entries.sort(key=lambda e: (e["person"], e["trained_at"], e["valid_until"]))
    return {**value, "as_of": _stamp(value["as_of"]), "override": entries}


def _time(value: object, name: str) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise _malformed(f"competence {name} must be timezone-aware")
        return value.astimezone(UTC).replace(microsecond=0)
    if isinstance(value, str):
        try:
            return datetime.strptime(value, _TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            pass
    raise _malformed(
        f"competence {name} must be a UTC time like 2030-01-01T00:00:00Z, not {value!r}"
    )


def _stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime(_TIME_FORMAT)


def _rollback(value: object, security_version: int) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _malformed("rollback must be an object")
    unknown, missing = set(value) - _ROLLBACK_KEYS, _ROLLBACK_KEYS - set(value)
    if unknown or missing:
        raise _malformed(
            f"rollback instruction needs exactly {sorted(_ROLLBACK_KEYS)}"
            f" (unknown: {sorted(unknown)}, missing: {sorted(missing)})"
        )
    approved_by = value["approved_by"]
    if not isinstance(approved_by, list | tuple) or not approved_by:
        raise _malformed("rollback approved_by must be a non-empty list of names")
    names = [_text_value(name, "approved_by") for name in approved_by]
    if len(set(names)) != len(names):
        raise _malformed(f"rollback approved_by names someone twice: {names}")
    from_version = _int(value, "from_security_version")
    to_version = _int(value, "to_security_version")
    if to_version != security_version:
        raise _malformed(
            f"rollback to_security_version {to_version} is not this release's "
            f"security_version {security_version}"
        )
    if from_version <= security_version:
        raise _malformed(
            f"rollback from_security_version {from_version} must be above the release's "
            f"security_version {security_version}"
        )
    return {
        "incident_id": _text(value, "incident_id"),
        "approved_by": names,
        "reason": _text(value, "reason"),
        "from_security_version": from_version,
        "to_security_version": to_version,
    }


def _release_file(path: object, length: object, sha256: object) -> ReleaseFile:
    if not isinstance(path, str) or not path:
        raise _malformed(f"file path {path!r} must be a non-empty string")
    parts = PurePosixPath(path).parts
    if (
        path.startswith("/")
        or "\\" in path
        or any(p in {"..", "."} for p in path.split("/"))
        or "/".join(parts) != path
        or not path.isprintable()
    ):
        raise _malformed(
            f"file path {path!r} must be a relative POSIX path inside the artefact folder"
        )
    if type(length) is not int or length < 0:
        raise _malformed(f"{path}: length must be a non-negative integer, not {length!r}")
    return ReleaseFile(path, length, _sha256(sha256, f"{path}: sha256"))


def _text(fields: Mapping[str, Any], name: str) -> str:
    return _text_value(fields.get(name), name)


def _text_value(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise _malformed(f"release field {name!r} must be a non-empty one-line string")
    return value


def _int(fields: Mapping[str, Any], name: str) -> int:
    value = fields.get(name)
    if type(value) is not int or value < 0:
        raise _malformed(f"release field {name!r} must be a non-negative integer, not {value!r}")
    return value


def _sha256(value: object, name: str) -> str:
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
        raise _malformed(f"{name} must be 64 lowercase hex characters, not {value!r}")
    return value
