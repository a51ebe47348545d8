"""``linegate model``: sign and verify OpenSSF model-signing signatures, offline.

A device, an auditor or a supplier checks a model folder against its signature and the
registry's public key (``GET /v1/signing-keys``) without any network access::

    linegate model verify ./weld-seam-inspector --signature model.sig --public-key registry.pub.pem
    verified: 3 files, manifest sha256:5f41e9..., key 0b8c316a4c179e25

Exit status 0 prints that one line; 1 prints ``error: <reason>`` (on stderr), naming the files that
were added, removed or changed, or saying the signature does not match the key. Suppliers and
developers sign with ``linegate model sign DIR --key PEM --signature FILE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from linegate.modelsig import ModelSignatureError, sign_model, signed_digests, verify_model
from linegate.signing import SignatureError, key_id, load_private_key

app = typer.Typer(
    no_args_is_help=True,
    help="Sign and verify OpenSSF model-signing signatures of model folders (offline).",
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
        Path,
        typer.Option(
            "--public-key", metavar="PEM", help="The PEM public key the signature must verify with"
        ),
    ],
    ignore_path: IgnorePaths = None,
) -> None:
    """Verify a model folder against its signature offline: exit 0 and one `verified:` line."""
    try:
        verified = verify_model(
            model_dir, public_key, signature, ignore_paths=_absolute(ignore_path)
        )
    except ModelSignatureError as e:
        raise _fail(str(e)) from e
    typer.echo(
        f"verified: {len(verified.files)} files, manifest sha256:{verified.manifest_sha256}, "
        f"key {verified.key_id[:16]}"
    )


@app.command()
def sign(
    model_dir: ModelDir,
    key: Annotated[
        Path, typer.Option("--key", metavar="PEM", help="The EC private key (PEM) to sign with")
    ],
    signature: Annotated[
        Path,
        typer.Option(
            "--signature", metavar="FILE", help="Where to write the signature (may be inside DIR)"
        ),
    ],
    ignore_path: IgnorePaths = None,
) -> None:
    """Sign every file in a model folder with an EC key (for suppliers and development)."""
    try:
        sign_model(model_dir, key, signature, ignore_paths=_absolute(ignore_path))
        files = signed_digests(signature)
        signer = load_private_key(key.read_bytes()).public_key()
    except (ModelSignatureError, SignatureError, OSError) as e:
        raise _fail(str(e)) from e
    typer.echo(f"signed: {len(files)} files into {signature}, key {key_id(signer)[:16]}")
