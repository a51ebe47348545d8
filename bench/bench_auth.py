"""Bearer-token validation rate beside the raw ECDSA verify it is built on."""

from __future__ import annotations

import asyncio
import base64
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from _harness import rate, report, scaled
from linegate.auth import Role, TokenIssuer, TokenValidator
from linegate.settings import LinegateSettings
from linegate.signing import load_or_create_private_key


def main() -> None:
    n = scaled(5000)
    with tempfile.TemporaryDirectory() as tmp:
        settings = LinegateSettings(data_dir=Path(tmp))
        issuer = TokenIssuer.embedded(settings)
        validator = TokenValidator.from_settings(settings)
        tokens = iter([issuer.issue(f"b{i}", [Role.SUPPLIER], tenant="acme")[0] for i in range(n)])
        token = issuer.issue("bench", [Role.SUPPLIER], tenant="acme")[0]

        loop = asyncio.new_event_loop()
        cold = rate(lambda: loop.run_until_complete(validator.validate(next(tokens))), n)
        warm = rate(lambda: loop.run_until_complete(validator.validate(token)), n)
        loop.close()

        key = load_or_create_private_key(settings.keys_dir / "issuer.pem")
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        public = key.public_key()
        signing_input, _, sig_b64 = token.rpartition(".")
        raw_sig = base64.urlsafe_b64decode(sig_b64 + "=" * (-len(sig_b64) % 4))
        der = encode_dss_signature(
            int.from_bytes(raw_sig[:32], "big"), int.from_bytes(raw_sig[32:], "big")
        )
        data = signing_input.encode()
        raw = rate(lambda: public.verify(der, data, ec.ECDSA(hashes.SHA256())), n)

    report(
        "auth",
        "first validation of a token (signature + claims)",
        cold,
        "/s",
        "raw ECDSA P-256 verify",
        raw,
    )
    report(
        "auth",
        "repeat validation of a token (bounded cache)",
        warm,
        "/s",
        "raw ECDSA P-256 verify",
        raw,
    )


if __name__ == "__main__":
    main()
