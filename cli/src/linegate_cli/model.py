"""``linegate model``: push versions to the registry, approve them, and sign and verify
OpenSSF model-signing signatures offline.

Data science pushes a model folder (``model.onnx``, optional ``preprocess.json`` and
``model_card.md``); the registry inspects, signs and stores it as a draft. QA runs the golden
set, approvers decide, and the release gate does the rest::

    linegate model push ./weld-seam-inspector --model weld-seam-inspector --version 2.1.0
    linegate model validate weld-seam-inspector 2.1.0
    linegate model approve weld-seam-inspector 2.1.0 --rationale "Golden set and defects reviewed"
    linegate model release weld-seam-inspector 2.1.0

Each talks to ``LINEGATE_REGISTRY_URL`` with ``--token`` / ``LINEGATE_TOKEN``.

A device, an auditor or a supplier checks a model folder against its signature and the
registry's public key (``GET /v1/signing-keys``) without any network access::

    linegate model verify ./weld-seam-inspector --signature model.sig --public-key registry.pub.pem
    verified: 3 files, manifest sha256:5f41e9..., key 0b8c316a4c179e25

Exit status 0 prints that one line; 1 prints ``error: <reason>`` (on stderr), naming the files that
were added, removed or changed, or saying the signature does not match the key. Suppliers and
developers sign with ``linegate model sign DIR --key PEM --signature FILE``.

Certificate signing adds ``--certificate PEM --certificate-chain PEM`` to ``sign``; such a
signature verifies with ``--certificate-chain ROOT.pem`` (the pinned root CA, instead of
``--public-key``), and the line names the signing certificate::

    linegate model sign ./weld-seam-inspector --key signer.key.pem --certificate signer.pem \
        --certificate-chain intermediate.pem --signature model.sig
    linegate model verify ./weld-seam-inspector --signature model.sig --certificate-chain root.pem
    verified: 3 files, manifest sha256:5f41e9..., certificate CN=release-signer,O=Plant \
        (sha256 3a7bd3e2360a3d29), key 0b8c316a4c179e25

``--identity NAME`` beside ``--certificate-chain`` also pins the signer (a subject alternative
name or the subject; the registry publishes its ``identity`` at ``GET /v1/signing-keys``), so
another certificate the same CA issued is refused.

Sigstore keyless: ``sign --identity-token FILE --trust-config JSON`` (online: Fulcio, Rekor) and
``verify --trust-config JSON --identity ID --oidc-issuer URL`` (offline against the pinned
trust config; never the network-fetched production trust).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer

from linegate.allocator import keep_freed_memory
from linegate.signing import SignatureError, key_id, load_private_key

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    # model-signing and the x509 code cost the verbs that talk to the registry ~0.1 s of
    # start-up: only sign and verify import them.
    from linegate.modelsig import VerifiedModel

app = typer.Typer(
    no_args_is_help=True,
    help="Push, validate, approve and release model versions; sign and verify model folders.",
)

ModelDir = Annotated[Path, typer.Argument(metavar="DIR", help="The model folder")]
IgnorePaths = Annotated[
    list[Path] | None,
    typer.Option(
        "--ignore-path",
        metavar="PATH",
        help="A file or folder inside DIR left out of the signature (repeat for several; "
        "relative paths are taken from the current directory, as the shell completes them)",
    ),
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _usage(message: str) -> typer.Exit:
    # Exit 2 like a missing option: the command line, not the model, is wrong.
    typer.echo(f"usage error: {message}", err=True)
    return typer.Exit(2)


def _absolute(paths: list[Path] | None) -> list[Path]:
    # The library reads relative ignore paths from the model folder; a shell user means the cwd.
    return [p.absolute() for p in paths or []]


@app.command()
def verify(
    model_dir: ModelDir,
    signature: Annotated[
        Path,
        typer.Option(
            "--signature", metavar="FILE", help="The model-signing bundle (Sigstore bundle JSON)"
        ),
    ],
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key", metavar="PEM", help="The PEM public key the signature must verify with"
        ),
    ] = None,
    ignore_path: IgnorePaths = None,
    certificate_chain: Annotated[
        Path | None,
        typer.Option(
            "--certificate-chain",
            metavar="PEM",
            help="Instead of --public-key: the pinned root CA (and intermediates) a "
            "certificate-signed signature must chain to; nothing else is trusted",
        ),
    ] = None,
    trust_config: Annotated[
        Path | None,
        typer.Option(
            "--trust-config",
            metavar="JSON",
            help="Instead of --public-key: a pinned Sigstore ClientTrustConfig (needs "
            "--identity and --oidc-issuer)",
        ),
    ] = None,
    identity: Annotated[
        str | None,
        typer.Option(
            "--identity",
            help="Sigstore: the expected signer identity; with --certificate-chain: a subject "
            "alternative name or the subject the signing certificate must have (the `identity` "
            "GET /v1/signing-keys publishes)",
        ),
    ] = None,
    oidc_issuer: Annotated[
        str | None, typer.Option("--oidc-issuer", help="Sigstore: the expected OIDC issuer")
    ] = None,
) -> None:
    """Verify a model folder against its signature offline: exit 0 and one `verified:` line."""
    options = {"--public-key": public_key, "--certificate-chain": certificate_chain}
    given = [name for name, value in (options | {"--trust-config": trust_config}).items() if value]
    if len(given) != 1:
        raise _usage(
            "give exactly one of --public-key PEM, --certificate-chain PEM or --trust-config JSON"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if public_key is not None and identity is not None:
        raise _usage("--identity pins a certificate or Sigstore signer, not a --public-key")
    from linegate.modelsig import (
        ModelSignatureError,
        verify_model,
        verify_model_certificate,
        verify_model_sigstore,
    )

    ignored = _absolute(ignore_path)
    try:
        if public_key is not None:
            verified = verify_model(model_dir, public_key, signature, ignore_paths=ignored)
        elif certificate_chain is not None:
            verified = verify_model_certificate(
                model_dir, certificate_chain, signature, ignore_paths=ignored, identity=identity
            )
        else:
            if not identity or not oidc_issuer:
                raise _usage("--trust-config needs --identity and --oidc-issuer")
            verified = verify_model_sigstore(
                model_dir,
                signature,
                identity=identity,
                oidc_issuer=oidc_issuer,
                trust_config=trust_config,  # type: ignore[arg-type]  # checked above
                ignore_paths=ignored,
            )
    except ModelSignatureError as e:
        raise _fail(str(e)) from e
    typer.echo(_verified_line(verified))


def _verified_line(verified: VerifiedModel) -> str:
    line = f"verified: {len(verified.files)} files, manifest sha256:{verified.manifest_sha256}, "
    if verified.certificate is not None:
        cert = verified.certificate
        names = (
            f" [{', '.join(cert.subject_alternative_names)}]"
            if cert.subject_alternative_names
            else ""
        )
        line += f"certificate {cert.subject}{names} (sha256 {cert.sha256_fingerprint[:16]}), "
    return line + f"key {verified.key_id[:16]}"


@app.command()
def sign(
    model_dir: ModelDir,
    signature: Annotated[
        Path,
        typer.Option(
            "--signature", metavar="FILE", help="Where to write the signature (may be inside DIR)"
        ),
    ],
    key: Annotated[
        Path | None,
        typer.Option(
            "--key", "--signing-key", metavar="PEM", help="The EC private key (PEM) to sign with"
        ),
    ] = None,
    ignore_path: IgnorePaths = None,
    certificate: Annotated[
        Path | None,
        typer.Option(
            "--certificate",
            metavar="PEM",
            help="Sign with this code-signing certificate of --key (certificate signing)",
        ),
    ] = None,
    certificate_chain: Annotated[
        list[Path] | None,
        typer.Option(
            "--certificate-chain",
            metavar="PEM",
            help="With --certificate: the intermediates (repeat, or one file) shipped in the "
            "signature",
        ),
    ] = None,
    identity_token: Annotated[
        Path | None,
        typer.Option(
            "--identity-token",
            metavar="FILE",
            help="Sigstore keyless instead of --key: the OIDC identity token (ONLINE: Fulcio, "
            "Rekor); needs --trust-config",
        ),
    ] = None,
    trust_config: Annotated[
        Path | None,
        typer.Option(
            "--trust-config", metavar="JSON", help="Sigstore: the pinned ClientTrustConfig"
        ),
    ] = None,
) -> None:
    """Sign every file in a model folder with an EC key (for suppliers and development)."""
    if (key is None) == (identity_token is None):
        raise _usage("give --key PEM, or --identity-token FILE for Sigstore keyless")
    if certificate_chain and certificate is None:
        raise _usage("--certificate-chain needs --certificate")
    from linegate.modelsig import (
        ModelSignatureError,
        sign_model,
        sign_model_certificate,
        sign_model_sigstore,
        signed_digests,
    )

    ignored = _absolute(ignore_path)
    try:
        if identity_token is not None:
            sign_model_sigstore(
                model_dir,
                signature,
                identity_token=identity_token,
                trust_config=trust_config,  # type: ignore[arg-type]  # None is refused inside
                ignore_paths=ignored,
            )
            typer.echo(f"signed: {len(signed_digests(signature))} files into {signature}, Sigstore")
            return
        assert key is not None  # for mypy: one of the two is set (checked above)
        by = ""
        if certificate is not None:
            cert = sign_model_certificate(
                model_dir,
                signature,
                private_key=key,
                certificate=certificate,
                certificate_chain=certificate_chain or [],
                ignore_paths=ignored,
            )
            by = f"certificate {cert.subject}, "
        else:
            sign_model(model_dir, key, signature, ignore_paths=ignored)
        files = signed_digests(signature)
        signer = load_private_key(key.read_bytes()).public_key()
    except (ModelSignatureError, SignatureError, OSError) as e:
        raise _fail(str(e)) from e
    typer.echo(f"signed: {len(files)} files into {signature}, {by}key {key_id(signer)[:16]}")


# -------------------------------------------------------------------------------- registry

Token = Annotated[
    str, typer.Option(envvar="LINEGATE_TOKEN", help="Bearer token (registry:approve role)")
]
RegistryUrl = Annotated[
    str | None,
    typer.Option("--registry", help="Registry URL (default: LINEGATE_REGISTRY_URL)"),
]
ModelName = Annotated[str, typer.Argument(metavar="MODEL", help="Model name")]
VersionName = Annotated[str, typer.Argument(metavar="VERSION", help="Version")]
SIDECARS = {"preprocess": "preprocess.json", "model_card": "model_card.md"}


def _registry_url(url: str | None) -> str:
    from linegate.settings import LinegateSettings

    try:
        return (url or LinegateSettings().registry_url).rstrip("/")
    except ValueError as e:  # the settings refused the environment
        raise _fail(str(e)) from e


def _call(method: str, url: str, token: str, *, timeout: float = 300.0, **kw: Any) -> Any:
    import httpx

    from linegate_cli.attest import report_http_error

    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    try:
        with httpx.Client(timeout=timeout) as client:
            response = client.request(method, url, headers=headers, **kw)
    except httpx.TransportError as e:
        raise _fail(f"cannot reach the registry at {url}: {e}") from e
    if not response.is_success:
        report_http_error(method.lower() + " " + url.split("/v1/", 1)[-1], response)
        raise typer.Exit(1)
    return response.json()


_READ_BYTES = 1024 * 1024


class _UploadReader:
    """A file as httpx streams it into a multipart part (by reads): each read advances the
    progress bar and the SHA-256 of what was sent, so the file is read once, not hashed first.

    httpx seeks to the start before it renders a part (and again on a retry), which starts
    the digest over; any other seek, or a digest asked before the last byte, is refused.
    Each chunk is hashed in a helper thread while httpx sends it (hashlib releases the GIL),
    one chunk at a time and in order, so hashing does not hold up the upload.
    """

    def __init__(self, f: BinaryIO, advance: Callable[[int], None], *, hashed: bool) -> None:
        self._f = f
        self._advance = advance
        self._size = os.fstat(f.fileno()).st_size
        self._hashing = hashed
        self._hash = hashlib.sha256()
        self._pending: Future[None] | None = None
        self._hasher: ThreadPoolExecutor | None = None
        if hashed:
            from concurrent.futures import ThreadPoolExecutor

            self._hasher = ThreadPoolExecutor(1, "linegate-push-hash")
        self._hashed = 0
        self._ended = False

    def read(self, size: int = -1) -> bytes:
        # httpx asks for 64 KiB at a time and sends whatever it gets; a megabyte per read
        # takes the per-chunk Python work of httpx, httpcore and h11 down sixteen-fold.
        data = self._f.read(size if size < 0 else max(size, _READ_BYTES))
        if self._hasher is not None:
            self._settle()  # the previous chunk first: a digest is of the bytes in order
            self._pending = self._hasher.submit(self._hash.update, data)
        self._hashed += len(data)
        self._ended = not data
        self._advance(len(data))
        return data

    def fileno(self) -> int:
        return self._f.fileno()

    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset, whence) != (0, os.SEEK_SET):
            raise io.UnsupportedOperation("an upload is read from its start only")
        self._settle()
        self._hash, self._hashed, self._ended = hashlib.sha256(), 0, False
        return self._f.seek(0)

    def tell(self) -> int:
        return self._f.tell()

    def _settle(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def sha256(self) -> str:
        """Hex SHA-256 of the whole file as it was sent."""
        if not self._hashing or not self._ended or self._hashed != self._size:
            raise RuntimeError(
                f"the upload of {self._f.name} is incomplete ({self._hashed} of {self._size} "
                "bytes read): the metadata part must be sent after the model"
            )
        self._settle()
        return self._hash.hexdigest()

    def close(self) -> None:
        """Stop the helper thread (the file itself is closed by whoever opened it)."""
        if self._hasher is not None:
            self._hasher.shutdown(wait=True)


class _MetadataAfterModel:
    """The ``metadata`` part, whose ``artefact_sha256`` is the digest of the model bytes just
    streamed (httpx sends the parts in order and this one is the last).

    httpx needs every part's length before it sends the first byte (Content-Length); a SHA-256
    hex digest has a fixed length, so the length is known before the digest is.
    """

    def __init__(self, meta: Mapping[str, Any], model: _UploadReader) -> None:
        self._meta = dict(meta)
        self._model = model
        self._length = len(self._render("0" * 64))
        self._data: bytes | None = None
        self._offset = 0

    def _render(self, sha256: str) -> bytes:
        return json.dumps({**self._meta, "artefact_sha256": f"sha256:{sha256}"}).encode()

    def read(self, size: int = -1) -> bytes:
        if self._data is None:
            self._data = self._render(self._model.sha256())
            assert len(self._data) == self._length
        end = self._length if size < 0 else min(self._length, self._offset + size)
        chunk, self._offset = self._data[self._offset : end], end
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        # httpx measures the part with seek(0, SEEK_END) and rewinds with seek(0) before it
        # sends it; the digest is taken again at the next read (a retry streams the model anew).
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._offset, os.SEEK_END: self._length}[whence]
        self._offset = max(0, min(self._length, base + offset))
        if self._offset == 0:
            self._data = None
        return self._offset

    def tell(self) -> int:
        return self._offset


def upload_parts(
    stack: contextlib.ExitStack,
    paths: Mapping[str, Path],
    meta: Mapping[str, Any],
    advance: Callable[[int], None],
    *,
    declare_digest: bool = True,
) -> dict[str, Any]:
    """The ``files`` httpx sends for a push: each file of ``paths`` (part name -> path, the
    ``model`` part first) opened on ``stack``, then ``metadata`` last. With ``declare_digest``
    the metadata declares the SHA-256 of the model bytes as they were streamed, so the
    registry refuses a body changed on the way (422, nothing stored). The bench sends pushes
    through this too."""
    files: dict[str, Any] = {}
    for part, path in paths.items():
        reader = _UploadReader(
            stack.enter_context(path.open("rb")), advance, hashed=declare_digest and part == "model"
        )
        stack.callback(reader.close)
        files[part] = (path.name, reader)
    body: Any = json.dumps(dict(meta)).encode()
    if declare_digest:
        body = _MetadataAfterModel(meta, files["model"][1])
    files["metadata"] = ("metadata.json", body, "application/json")
    return files


@app.command()
def push(
    model_dir: Annotated[
        Path,
        typer.Argument(
            metavar="DIR",
            exists=True,
            file_okay=False,
            help="Folder with model.onnx (and optional preprocess.json, model_card.md)",
        ),
    ],
    model: Annotated[str, typer.Option("--model", help="Model name in the registry")],
    version: Annotated[str, typer.Option("--version", help="New version, e.g. 2.1.0")],
    token: Token,
    security_version: Annotated[
        int | None,
        typer.Option("--security-version", help="Anti-rollback counter (default: unchanged)"),
    ] = None,
    metadata: Annotated[
        Path | None,
        typer.Option(
            "--metadata",
            exists=True,
            dir_okay=False,
            help="JSON with training parameters, code revision, datasets, metrics, limitations",
        ),
    ] = None,
    registry: RegistryUrl = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar")] = False,
) -> None:
    """Upload a model version (streamed, with a progress bar); the registry signs it."""
    onnx_file = model_dir / "model.onnx"
    if not onnx_file.is_file():
        raise _fail(f"{model_dir} has no model.onnx")
    try:
        meta: dict[str, Any] = json.loads(metadata.read_text()) if metadata else {}
    except ValueError as e:
        raise _fail(f"{metadata} is not JSON: {e}") from e
    if not isinstance(meta, dict):
        raise _fail(f"{metadata} must hold a JSON object")
    meta["version"] = version
    if security_version is not None:
        meta["security_version"] = security_version
    base = _registry_url(registry)
    paths = {"model": onnx_file} | {
        part: model_dir / name for part, name in SIDECARS.items() if (model_dir / name).is_file()
    }
    total = sum(p.stat().st_size for p in paths.values())
    keep_freed_memory()  # the 1 MiB reads reuse heap pages instead of faulting in new ones
    with contextlib.ExitStack() as stack:
        advance: Callable[[int], None] = lambda _: None  # noqa: E731  (a no-op callback)
        if not quiet:
            label = f"pushing {model} {version}"
            advance = stack.enter_context(
                typer.progressbar(length=total, label=label, file=sys.stderr)
            ).update
        # The declared digest (of the bytes as sent, in the metadata sent after them) makes the
        # registry refuse a body corrupted on the way.
        files = upload_parts(stack, paths, meta, advance)
        body = _call(
            "POST", f"{base}/v1/models/{model}/versions", token, files=files, timeout=3600.0
        )
    typer.echo(
        f"pushed: {model} {body['version']} ({body['state']}), sha256:{body['artefact_digest']}, "
        f"security_version {body['security_version']}, signed by key {body['signing_key_id'][:16]}"
    )


@app.command()
def validate(
    model: ModelName, version: VersionName, token: Token, registry: RegistryUrl = None
) -> None:
    """Run the golden set and synthetic defects on a version; exit 1 if it fails."""
    base = _registry_url(registry)
    run = _call("POST", f"{base}/v1/models/{model}/versions/{version}/validate", token)
    report = run["report"]
    typer.echo(
        f"{'passed' if run['passed'] else 'FAILED'}: {model} {version} on "
        f"{report['samples']} golden samples, accuracy {report['accuracy']:.3f}"
    )
    for reason in report["reasons"]:
        typer.echo(f"  - {reason}")
    if not run["passed"]:
        raise typer.Exit(1)


@app.command()
def approve(
    model: ModelName,
    version: VersionName,
    token: Token,
    rationale: Annotated[
        str, typer.Option("--rationale", help="Why (required; kept in the audit log)")
    ],
    reject: Annotated[bool, typer.Option("--reject", help="Reject instead of approve")] = False,
    registry: RegistryUrl = None,
) -> None:
    """Approve (or --reject) a validated version with a written rationale."""
    base = _registry_url(registry)
    body = _call(
        "POST",
        f"{base}/v1/models/{model}/versions/{version}/approvals",
        token,
        json={"decision": "reject" if reject else "approve", "rationale": rationale},
    )
    approvals = [a for a in body["approvals"] if a["decision"] == "approve"]
    typer.echo(
        f"{'rejected' if reject else 'approved'}: {model} {version} is {body['state']} "
        f"({len(approvals)} of {body['approvals_required']} approvals)"
    )


@app.command()
def release(
    model: ModelName,
    version: VersionName,
    token: Token,
    note: Annotated[str, typer.Option("--note", help="Release note")] = "",
    registry: RegistryUrl = None,
) -> None:
    """Release an approved version (signature, golden set and evidence are re-checked)."""
    base = _registry_url(registry)
    body = _call(
        "POST", f"{base}/v1/models/{model}/versions/{version}/release", token, json={"note": note}
    )
    typer.echo(f"released: {model} {version}, sha256:{body['artefact_digest']}")
