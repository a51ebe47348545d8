"""OpenSSF model signatures (``model_signing``) with EC keys, offline.

A model version is a directory (``model.onnx``, ``preprocess.json``, ``model_card.md``, ...).
:func:`sign_model` hashes every file in it (SHA-256, streamed in 1 MiB chunks, so memory does not
grow with file size) and writes a Sigstore bundle whose DSSE envelope carries an in-toto
statement listing each file's digest; :func:`verify_model` checks the envelope against a public
key, re-hashes the directory and names any file that was added, removed or changed.

Key-based and certificate signing never reach the network. Everything in the directory is
signed, ``.git*`` paths included, except ``ignore_paths`` and the signature file itself when it
lies inside the directory; the signed statement records the ignored paths, so verification
ignores them too.

Example::

    from pathlib import Path

    from linegate.modelsig import sign_model, verify_model
    from linegate.signing import generate_private_key, private_key_pem, public_key_pem
    from linegate.testing.onnx_models import write_model_dir

    key = generate_private_key()
    Path("release.pem").write_bytes(private_key_pem(key))
    Path("release.pub.pem").write_bytes(public_key_pem(key.public_key()))
    model = write_model_dir(Path("weld-seam-inspector"))
    sign_model(model, Path("release.pem"), Path("model.sig"))
    verified = verify_model(model, Path("release.pub.pem"), Path("model.sig"))
    print(verified.manifest_sha256, [f.path for f in verified.files])

Certificates: :func:`sign_model_certificate` signs with an EC key and its code-signing
certificate (plus the intermediates, shipped in the bundle); :func:`verify_model_certificate`
verifies against a pinned chain holding the root CA (never the operating system's roots), and
checks what ``model_signing`` does not (see :mod:`linegate._modelsig_x509`): the signing
certificate and its CAs are valid *now*, and the leaf is a code-signing certificate::

    sign_model_certificate(model, Path("model.sig"), private_key=Path("signer.key.pem"),
                           certificate=Path("signer.pem"), certificate_chain=[Path("ca.pem")])
    verified = verify_model_certificate(model, Path("root-ca.pem"), Path("model.sig"))
    print(verified.certificate.subject, verified.certificate.sha256_fingerprint)

:func:`verify_signature_certificate` makes the same certificate checks and the DSSE check on a
signature alone (bytes, with the pinned chain as bytes), for evidence kept apart from the model
such as an auditor's bundle: it vouches for what was signed, not for any files on disk.

Sigstore keyless (:func:`sign_model_sigstore`, :func:`verify_model_sigstore`) needs Fulcio and
Rekor to sign, so it is online by nature; both refuse to run without a pinned trust config
(``model_signing`` would otherwise fetch the production trust root), and verification is offline
against it.

The package: ``_key`` (bare EC keys), ``_certificate`` (code-signing certificates, pinned
chains), ``_sigstore`` (keyless), ``_bundle`` (reading a bundle unverified), ``_runner``
(``model_signing``'s signer and verifier, hashing) and ``_types`` (the error and result types);
import from ``linegate.modelsig`` only.
"""

from __future__ import annotations

from linegate._modelsig_x509 import SigningCertificate
from linegate.modelsig._bundle import read_signature, signature_kind, signed_digests
from linegate.modelsig._certificate import (
    describe_signing_certificate,
    sign_model_certificate,
    signing_identity,
    verify_model_certificate,
    verify_model_pinned,
    verify_signature_certificate,
)
from linegate.modelsig._key import sign_model, verify_model
from linegate.modelsig._sigstore import sign_model_sigstore, verify_model_sigstore

# The bundle format's names, imported from here by callers (not part of ``*``).
from linegate.modelsig._types import (
    BUNDLE_MEDIA_TYPE as BUNDLE_MEDIA_TYPE,
)
from linegate.modelsig._types import (
    IN_TOTO_PAYLOAD_TYPE as IN_TOTO_PAYLOAD_TYPE,
)
from linegate.modelsig._types import (
    MODEL_SIGNATURE_PREDICATE as MODEL_SIGNATURE_PREDICATE,
)
from linegate.modelsig._types import (
    STATEMENT_V1 as STATEMENT_V1,
)
from linegate.modelsig._types import (
    KnownDigest,
    ModelSignatureError,
    SignatureKind,
    SignedFile,
    SignedStatement,
    VerifiedModel,
    VerifiedSignature,
)

__all__ = [
    "KnownDigest",
    "ModelSignatureError",
    "SignatureKind",
    "SignedFile",
    "SignedStatement",
    "SigningCertificate",
    "VerifiedModel",
    "VerifiedSignature",
    "describe_signing_certificate",
    "read_signature",
    "sign_model",
    "sign_model_certificate",
    "sign_model_sigstore",
    "signature_kind",
    "signed_digests",
    "signing_identity",
    "verify_model",
    "verify_model_certificate",
    "verify_model_pinned",
    "verify_model_sigstore",
    "verify_signature_certificate",
]
