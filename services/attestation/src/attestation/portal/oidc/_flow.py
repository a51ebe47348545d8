"""The sign-in flow (``state``, ``nonce``, PKCE verifier) and the signed cookie that keeps it."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from authlib.oauth2.rfc7636 import (  # type: ignore[import-untyped]  # no py.typed
    create_s256_code_challenge,
)

from attestation.portal.oidc._errors import SignInFlowInvalid
from attestation.portal.security import PortalSessionSigner

#: The sign-in flow's cookie: only the two OIDC routes ever receive it.
FLOW_COOKIE = "linegate_portal_oidc"
FLOW_COOKIE_PATH = "/portal/login/oidc"
#: Ten minutes to get through the provider's sign-in page.
FLOW_TTL_SECONDS = 600
FLOW_AUDIENCE = "linegate-portal-oidc-flow"


@dataclass(frozen=True)
class SignInFlow:
    """What the callback must find again: kept in the browser, signed, for ten minutes."""

    state: str
    nonce: str
    verifier: str
    next_url: str

    @classmethod
    def new(cls, next_url: str) -> SignInFlow:
        # token_urlsafe(48) is 64 characters of [A-Za-z0-9_-]: a valid RFC 7636 verifier.
        return cls(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(48),
            next_url=next_url,
        )

    @property
    def challenge(self) -> str:
        challenge: str = create_s256_code_challenge(self.verifier)
        return challenge

    def seal(self, signer: PortalSessionSigner) -> str:
        values = {
            "state": self.state,
            "nonce": self.nonce,
            "verifier": self.verifier,
            "next": self.next_url,
        }
        return signer.seal(FLOW_AUDIENCE, values, ttl_seconds=FLOW_TTL_SECONDS)

    @classmethod
    def from_callback(
        cls, signer: PortalSessionSigner, cookie: str | None, state: str | None
    ) -> SignInFlow:
        """The flow the cookie carries, if it is genuine, current and for this ``state``."""
        if not cookie:
            raise SignInFlowInvalid(
                "no sign-in in progress in this browser (or it took longer than ten minutes): "
                "start again from the sign-in page"
            )
        try:
            values = signer.unseal(FLOW_AUDIENCE, cookie)
        except ValueError as e:
            raise SignInFlowInvalid(
                f"the sign-in state cookie is invalid or expired ({e}): start again"
            ) from e
        fields = [values.get(k) for k in ("state", "nonce", "verifier", "next")]
        if not all(isinstance(v, str) and v for v in fields):
            raise SignInFlowInvalid("the sign-in state cookie is incomplete: start again")
        flow = cls(*(str(v) for v in fields))
        if not state or not hmac.compare_digest(state.encode(), flow.state.encode()):
            # Another sign-in's answer, or a forged one (login CSRF): never exchanged.
            raise SignInFlowInvalid("the provider's answer does not belong to this sign-in")
        return flow
