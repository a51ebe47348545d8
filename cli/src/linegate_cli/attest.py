"""``linegate attest``: sign, upload and verify supplier attestations.

A supplier's pipeline signs an in-toto Statement v1 as a DSSE envelope with its own key, uploads
it to the attestation service, and anyone holding the public key can check it offline::

    linegate attest --key acme.pem --subject model.onnx \\
        --predicate-type https://slsa.dev/provenance/v1 --out model.intoto.json provenance.json
    linegate attest upload model.intoto.json          # LINEGATE_TOKEN or --client-id/--secret
    linegate attest verify model.intoto.json --public-key acme.pub.pem --subject model.onnx

``linegate attest sign ...`` is the same as the bare ``linegate attest ...`` form.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any
from urllib.parse import urlparse

import typer
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from typer.core import TyperGroup

from linegate.signing import (
    IN_TOTO_PAYLOAD_TYPE,
    SignatureError,
    VerifiedEnvelope,
    canonical_json,
    dsse_verify,
    key_id,
    load_private_key,
    load_public_key,
    public_key_pem,
)

if TYPE_CHECKING:  # httpx and the settings cost ~1 s to import: only the commands that
    import httpx  # talk to a service import them, so `linegate --help` stays quick


STATEMENT_V1 = "https://in-toto.io/Statement/v1"

DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
SIGSTORE_BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
CYCLONEDX_MEDIA_TYPE = "application/vnd.cyclonedx+json"
SPDX_MEDIA_TYPE = "application/spdx+json"

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


class AttestError(Exception):
    """An attestation could not be built, verified or uploaded; the message says why."""


class _AttestGroup(TyperGroup):
    """Routes ``linegate attest --key ... PREDICATE`` to the ``sign`` command.

    click parses a group's own options before it looks for a subcommand, so a group cannot
    also take ``sign``'s options; rewriting the argument list keeps the short form without
    making a typo'd subcommand silently mean "sign" (it must look like an option or a file).
    """

    # ``ctx`` is typer's privately vendored click Context (typer >= 0.29); Any spares importing it.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            first = args[0]
            if first.startswith("-") or Path(first).is_file():
                args = ["sign", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_AttestGroup,
    no_args_is_help=True,
    help=(
        "Sign, upload and verify in-toto attestations. "
        "`linegate attest --key ... PREDICATE.json` is short for `linegate attest sign ...`."
    ),
)


# ----------------------------------------------------------------------------- statements


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks (artifacts may be larger than memory)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def build_statement(subjects: list[Path], predicate_type: str, predicate: Any) -> dict[str, Any]:
    """An in-toto Statement v1 naming each file by basename and SHA-256."""
    entries: dict[str, str] = {}
    for path in subjects:
        digest = sha256_file(path)
        if entries.setdefault(path.name, digest) != digest:
            raise AttestError(f"two different subjects are named {path.name!r}; rename one")
    return {
        "_type": STATEMENT_V1,
        "subject": [{"name": name, "digest": {"sha256": d}} for name, d in entries.items()],
        "predicateType": predicate_type,
        "predicate": predicate,
    }


def sign_statement(statement: dict[str, Any], key_pem: bytes) -> dict[str, Any]:
    """Sign ``statement`` into a DSSE envelope (JSON-ready dict) with securesystemslib.

    The signature's ``keyid`` is Linegate's key id (SHA-256 of the public key's DER), the one the
    attestation service reports when a supplier registers the key.
    """
    # Imported here: securesystemslib costs every other verb ~0.1 s of start-up.
    from securesystemslib.dsse import Envelope

    # securesystemslib re-exports its signer API without ``as``, which mypy does not count as
    # explicit.
    from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]

    try:
        private = load_private_key(key_pem)
        # load_public_key applies the verifier's rules (curves, RSA >= 2048 bits) up front.
        public = load_public_key(public_key_pem(private.public_key()))
    except (ValueError, TypeError, UnsupportedAlgorithm, SignatureError) as e:
        raise AttestError(f"cannot use the signing key: {e}") from e
    if isinstance(public, ec.EllipticCurvePublicKey) and public.curve.key_size > 384:
        # securesystemslib signs P-521 with SHA-512; Linegate verifies EC keys with at most SHA-384.
        raise AttestError("P-521 keys are not supported; use ECDSA P-256/P-384, Ed25519 or RSA")
    signer = CryptoSigner(private, SSlibKey.from_crypto(public, keyid=key_id(public)))
    envelope = Envelope(canonical_json(statement), IN_TOTO_PAYLOAD_TYPE, {})
    envelope.sign(signer)
    document: dict[str, Any] = envelope.to_dict()
    try:
        # The service verifies with linegate.signing, not securesystemslib: never hand out an
        # envelope that it would reject.
        dsse_verify(document, [public])
    except SignatureError as e:
        raise AttestError(f"the new signature does not verify: {e}") from e
    return document


def parse_statement(payload: bytes) -> dict[str, Any]:
    """Parse and check an in-toto Statement v1; return it."""
    try:
        statement = json.loads(payload)
    except ValueError as e:
        raise AttestError(f"payload is not JSON: {e}") from e
    if not isinstance(statement, dict):
        raise AttestError("payload is not a JSON object")
    if statement.get("_type") != STATEMENT_V1:
        raise AttestError(f"_type is {statement.get('_type')!r}, not {STATEMENT_V1!r}")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise AttestError("statement has no subjects")
    for i, subject in enumerate(subjects):
        digest = subject.get("digest") if isinstance(subject, dict) else None
        sha = digest.get("sha256") if isinstance(digest, dict) else None
        if not isinstance(sha, str) or not _SHA256_HEX.fullmatch(sha):
            raise AttestError(f"subject {i} has no sha256 digest of 64 hex characters")
    predicate_type = statement.get("predicateType")
    if not isinstance(predicate_type, str) or not predicate_type:
        raise AttestError("statement has no predicateType")
    if "predicate" in statement and not isinstance(statement["predicate"], dict):
        raise AttestError("predicate is not a JSON object")
    return statement


def verify_statement(verified: VerifiedEnvelope, subjects: list[Path]) -> dict[str, Any]:
    """The in-toto statement of a verified envelope, checked to name every file in ``subjects``."""
    if verified.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise AttestError(f"payloadType is {verified.payload_type!r}, not {IN_TOTO_PAYLOAD_TYPE!r}")
    statement = parse_statement(verified.payload)
    digests = {s["digest"]["sha256"].lower() for s in statement["subject"]}
    for path in subjects:
        digest = sha256_file(path)
        if digest not in digests:
            raise AttestError(f"{path} (sha256:{digest}) is not a subject of the statement")
    return statement


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_bytes())
    except ValueError as e:
        raise AttestError(f"{path} is not JSON: {e}") from e
    if not isinstance(value, dict):
        raise AttestError(f"{path} is not a JSON object")
    return value


# --------------------------------------------------------------------- content-type sniffing

_SKIPPED: Any = object()
_NON_WS = re.compile(r"[^ \t\n\r]")
_STRING_STOP = re.compile(r'["\\]')
_CONTAINER_STOP = re.compile(r'["{}\[\]]')
_SCALAR_END = re.compile(r"[,}\] \t\n\r]")


class _TopLevelReader:
    """Walks the members of a JSON object read from a stream in chunks.

    Values are skipped without being kept, except those of the keys asked for, which are
    returned parsed when they are small. That is enough to tell document types apart by their
    top-level keys without loading, say, a DSSE envelope whose ``payload`` is 200 MB.
    """

    def __init__(self, stream: IO[bytes], *, chunk: int = 1 << 16, limit: int = 1 << 16) -> None:
        self._stream = stream
        self._chunk = chunk
        self._limit = limit
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._buf = ""
        self._pos = 0
        self._mark: int | None = None  # start of the value being kept
        self._eof = False

    def _more(self) -> None:
        if self._eof:
            raise AttestError("the document ends in the middle of a JSON value")
        data = self._stream.read(self._chunk)
        self._eof = not data
        try:
            text = self._decoder.decode(data, final=self._eof)
        except UnicodeDecodeError as e:
            raise AttestError("the document is not UTF-8 JSON") from e
        if self._mark is not None and len(self._buf) - self._mark > self._limit:
            self._mark = None  # too big to keep: report it as skipped
        keep = self._pos if self._mark is None else self._mark
        self._buf = self._buf[keep:] + text
        self._pos -= keep
        if self._mark is not None:
            self._mark -= keep

    def _peek(self) -> str:
        """Skip whitespace; the next character, or '' at the end of the input."""
        while (m := _NON_WS.search(self._buf, self._pos)) is None:
            self._pos = len(self._buf)
            if self._eof:
                return ""
            self._more()
        self._pos = m.start()
        return self._buf[self._pos]

    def _skip_string(self) -> None:
        self._pos += 1
        while True:
            m = _STRING_STOP.search(self._buf, self._pos)
            if m is None:
                self._pos = len(self._buf)
                self._more()
            elif m.group() == '"':
                self._pos = m.end()
                return
            elif m.end() >= len(self._buf):  # a backslash needs the character it escapes
                self._pos = m.start()
                self._more()
            else:
                self._pos = m.end() + 1

    def _skip_value(self) -> None:
        first = self._peek()
        if first == '"':
            self._skip_string()
        elif first in ("{", "["):
            depth = 0
            while True:
                m = _CONTAINER_STOP.search(self._buf, self._pos)
                if m is None:
                    self._pos = len(self._buf)
                    self._more()
                elif m.group() == '"':
                    self._pos = m.start()
                    self._skip_string()
                else:
                    self._pos = m.end()
                    depth += 1 if m.group() in "{[" else -1
                    if depth == 0:
                        return
        elif first == "":
            raise AttestError("the document ends in the middle of a JSON value")
        else:  # number, true, false, null
            while (m := _SCALAR_END.search(self._buf, self._pos)) is None and not self._eof:
                self._pos = len(self._buf)
                self._more()
            self._pos = m.start() if m else len(self._buf)

    def _keep(self, skip: Callable[[], None]) -> Any:
        self._peek()
        self._mark = self._pos
        try:
            skip()
        finally:
            mark, self._mark = self._mark, None
        if mark is None:
            return _SKIPPED
        try:
            return json.loads(self._buf[mark : self._pos])
        except ValueError:
            return _SKIPPED

    def members(self, wanted: frozenset[str]) -> Iterator[tuple[Any, Any]]:
        """(key, value) for each top-level member; value is ``_SKIPPED`` unless wanted."""
        if self._peek() != "{":
            raise AttestError("the document is not a JSON object")
        self._pos += 1
        if self._peek() == "}":
            return
        while True:
            if self._peek() != '"':
                raise AttestError("the document is not valid JSON (expected a member name)")
            key = self._keep(self._skip_string)
            if self._peek() != ":":
                raise AttestError("the document is not valid JSON (expected ':')")
            self._pos += 1
            if key in wanted:
                yield key, self._keep(self._skip_value)
            else:
                self._skip_value()
                yield key, _SKIPPED
            after = self._peek()
            self._pos += 1
            if after == "}":
                return
            if after != ",":
                raise AttestError("the document is not valid JSON (expected ',' or '}')")


_SNIFF_KEYS = frozenset({"mediaType", "bomFormat", "spdxVersion", "@context"})
_DSSE_KEYS = frozenset({"payload", "payloadType", "signatures"})


def detect_content_type(path: Path) -> str:
    """The upload media type of a DSSE envelope, Sigstore bundle, CycloneDX or SPDX JSON file."""
    seen: set[str] = set()
    with path.open("rb") as f:
        for key, value in _TopLevelReader(f).members(_SNIFF_KEYS):
            if (
                key == "mediaType"
                and isinstance(value, str)
                and value.startswith("application/vnd.dev.sigstore.bundle")
            ):
                return SIGSTORE_BUNDLE_MEDIA_TYPE
            if key == "bomFormat" and value == "CycloneDX":
                return CYCLONEDX_MEDIA_TYPE
            if key == "spdxVersion" or (
                key == "@context" and value is not _SKIPPED and "spdx" in json.dumps(value).lower()
            ):
                return SPDX_MEDIA_TYPE
            if isinstance(key, str):
                seen.add(key)
            if seen >= _DSSE_KEYS:
                return DSSE_MEDIA_TYPE
    raise AttestError(
        "not a DSSE envelope, Sigstore bundle, CycloneDX or SPDX JSON document; pass --content-type"
    )


# ---------------------------------------------------------------------------------- upload


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def report_http_error(what: str, response: httpx.Response) -> None:
    """Print a failed response: RFC 9457 problem details (or an OAuth2 error) when present."""
    try:
        body = response.json()
    except ValueError:
        body = None
    head = f"{what} failed: HTTP {response.status_code} {response.reason_phrase}"
    if not isinstance(body, dict):
        text = response.text.strip()[:500]
        typer.echo(f"error: {head}" + (f": {text}" if text else ""), err=True)
        return
    detail = body.get("detail") or body.get("error_description") or body.get("title")
    detail = detail or body.get("error")
    typer.echo(f"error: {head}" + (f": {detail}" if detail else ""), err=True)
    reasons = body.get("reasons")
    for reason in reasons if isinstance(reasons, list) else []:
        typer.echo(f"  - {reason if isinstance(reason, str) else json.dumps(reason)}", err=True)
    if body.get("id"):
        typer.echo(f"  rejection id: {body['id']}", err=True)


def _client_credentials_token(
    client: httpx.Client, base: str, client_id: str, client_secret: str
) -> str:
    response = client.post(
        f"{base}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
        },
    )
    if not response.is_success:
        report_http_error("token request", response)
        raise typer.Exit(1)
    try:
        token = response.json()["access_token"]
    except (ValueError, KeyError, TypeError) as e:
        raise _fail("token response has no access_token", 1) from e
    if not isinstance(token, str) or not token:
        raise _fail("token response has no access_token", 1)
    return token


# -------------------------------------------------------------------------------- commands

ExistingFile = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)]


@app.command()
def sign(
    predicate: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="Predicate JSON (an object)"
        ),
    ],
    key: Annotated[
        Path,
        typer.Option(
            exists=True,
            dir_okay=False,
            readable=True,
            help="Unencrypted PEM private key (ECDSA P-256/P-384, Ed25519, RSA)",
        ),
    ],
    subject: Annotated[
        list[Path],
        typer.Option(
            exists=True,
            dir_okay=False,
            readable=True,
            help="Artifact the statement is about (repeat for several)",
        ),
    ],
    predicate_type: Annotated[str, typer.Option("--predicate-type", help="Predicate type URI")],
    out: Annotated[
        Path | None, typer.Option(help="Write the envelope here instead of stdout")
    ] = None,
) -> None:
    """Build an in-toto Statement v1 over the subjects and sign it as a DSSE envelope."""
    if not urlparse(predicate_type).scheme:
        raise typer.BadParameter("must be a URI", param_hint="--predicate-type")
    try:
        statement = build_statement(subject, predicate_type, _read_json_object(predicate))
        envelope = sign_statement(statement, key.read_bytes())
    except (AttestError, OSError) as e:
        raise _fail(str(e), 1) from e
    text = json.dumps(envelope, indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)


@app.command()
def upload(
    file: ExistingFile,
    content_type: Annotated[
        str | None,
        typer.Option("--content-type", help="Media type (default: guessed from the document)"),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="Attestation service URL (default: LINEGATE_ATTESTATION_URL)"),
    ] = None,
    token: Annotated[str | None, typer.Option(envvar="LINEGATE_TOKEN", help="Bearer token")] = None,
    client_id: Annotated[
        str | None,
        typer.Option("--client-id", envvar="LINEGATE_CLIENT_ID", help="OAuth2 client id"),
    ] = None,
    client_secret: Annotated[
        str | None,
        typer.Option(
            "--client-secret", envvar="LINEGATE_CLIENT_SECRET", help="OAuth2 client secret"
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait on the network")] = 60.0,
) -> None:
    """Upload a DSSE envelope, Sigstore bundle or SBOM to the attestation service."""
    if not token and not (client_id and client_secret):
        raise typer.BadParameter(
            "no credentials: pass --token (or LINEGATE_TOKEN), or --client-id and "
            "--client-secret (or LINEGATE_CLIENT_ID and LINEGATE_CLIENT_SECRET)",
            param_hint="--token",
        )
    if content_type is None:
        try:
            content_type = detect_content_type(file)
        except (AttestError, OSError) as e:
            raise typer.BadParameter(f"{file}: {e}", param_hint="--content-type") from e
    import httpx

    from linegate.settings import LinegateSettings

    try:
        base = (url or LinegateSettings().attestation_url).rstrip("/")
    except ValueError as e:  # the settings refused the environment
        raise _fail(str(e), 2) from e
    try:
        with httpx.Client(timeout=timeout) as client:
            if not token and client_id and client_secret:
                token = _client_credentials_token(client, base, client_id, client_secret)
            with file.open("rb") as body:
                # A file object makes httpx send Content-Length and stream it in 64 KiB reads.
                response = client.post(
                    f"{base}/v1/attestations",
                    content=body,
                    headers={
                        "Content-Type": content_type,
                        "Authorization": f"Bearer {token}",
                        "Accept": "application/json, application/problem+json",
                    },
                )
    except httpx.TransportError as e:
        raise _fail(f"cannot reach the attestation service at {base}: {e}", 2) from e
    if not response.is_success:
        report_http_error("upload", response)
        raise typer.Exit(1)
    try:
        typer.echo(json.dumps(response.json(), indent=2))
    except ValueError:
        typer.echo(response.text)


@app.command()
def verify(
    envelope: ExistingFile,
    public_key: Annotated[
        list[Path],
        typer.Option(
            "--public-key",
            exists=True,
            dir_okay=False,
            readable=True,
            help="Trusted PEM public key (repeat for several)",
        ),
    ],
    subject: Annotated[
        list[Path] | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            readable=True,
            help="File that must be a subject of the statement (repeat for several)",
        ),
    ] = None,
) -> None:
    """Verify a DSSE-signed in-toto statement offline (and, optionally, its subjects)."""
    try:
        keys = [load_public_key(p.read_bytes()) for p in public_key]
        verified = dsse_verify(_read_json_object(envelope), keys)
        statement = verify_statement(verified, subject or [])
    except (AttestError, SignatureError, OSError) as e:
        raise _fail(str(e), 1) from e
    n = len(statement["subject"])
    typer.echo(
        f"verified: {statement['predicateType']} for {n} subject(s), "
        f"signed by key {verified.signer_key_ids[0][:16]}"
    )
