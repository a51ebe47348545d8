"""Release evidence: what the attestation service holds for an artefact digest, against policy.

The registry never reads the attestation service's tables; it asks its public API
(``GET /v1/attestations?subject_digest=sha256:HEX``) with an auditor token, and sorts what comes
back into the evidence kinds a risk class requires (``RegistrySettings.evidence_policy``):

- ``slsa-provenance``: an in-toto Statement with SLSA provenance v1;
- ``ml-bom``: a CycloneDX BOM with a machine-learning-model component, or an SPDX 3 document
  with the AI profile;
- ``dataset-provenance``: Linegate's dataset-provenance predicate, or SPDX 3 with the dataset
  profile;
- ``sbom``: any CycloneDX or SPDX document.

A kind is *present* when a signed, verified and unexpired attestation of it names the digest,
*expired* when only expired ones do, and *missing* otherwise (unsigned SBOMs never count).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from linegate.auth import Role
from linegate.errors import ServiceUnavailable
from linegate.service_auth import ServiceTokens
from registry.settings import RegistrySettings

EVIDENCE_KINDS: Mapping[str, str] = {
    "slsa-provenance": "SLSA provenance v1 (in-toto)",
    "ml-bom": "CycloneDX ML-BOM (a machine-learning-model component) or SPDX 3 AI profile",
    "dataset-provenance": "dataset provenance (Linegate predicate or SPDX 3 dataset profile)",
    "sbom": "a CycloneDX or SPDX SBOM",
}


def _profiles(summary: Mapping[str, Any]) -> set[str]:
    conformance = summary.get("profile_conformance") or []
    if not isinstance(conformance, list):
        return set()
    return {str(p).rsplit("/", 1)[-1].lower() for p in conformance}


def _is_ml_bom(predicate_kind: Any, summary: Mapping[str, Any]) -> bool:
    if predicate_kind == "cyclonedx":
        # An ML-BOM describes at least one machine-learning-model component.
        return bool(summary.get("models"))
    return predicate_kind == "spdx-3" and "ai" in _profiles(summary)


def _is_dataset_provenance(predicate_kind: Any, summary: Mapping[str, Any]) -> bool:
    if predicate_kind == "linegate-dataset-provenance":
        return True
    return predicate_kind == "spdx-3" and "dataset" in _profiles(summary)


_MATCHERS: Mapping[str, Callable[[Any, Mapping[str, Any]], bool]] = {
    "slsa-provenance": lambda kind, _: kind == "slsa-provenance-v1",
    "ml-bom": _is_ml_bom,
    "dataset-provenance": _is_dataset_provenance,
    "sbom": lambda kind, _: kind in {"cyclonedx", "spdx-2", "spdx-3"},
}


def matches(kind: str, attestation: Mapping[str, Any]) -> bool:
    """Whether an attestation (as the attestation API returns it) is evidence of ``kind``."""
    matcher = _MATCHERS.get(kind)
    summary = attestation.get("summary") or {}
    return matcher is not None and matcher(attestation.get("predicate_kind"), summary)


@dataclass(frozen=True, slots=True)
class EvidenceItem:
    kind: str
    status: str  # present | expired | missing
    attestation_ids: tuple[str, ...] = ()
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "description": EVIDENCE_KINDS.get(self.kind, self.kind),
            "status": self.status,
            "attestation_ids": list(self.attestation_ids),
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class EvidenceReport:
    digest: str
    eu_category: str | None
    items: tuple[EvidenceItem, ...]
    checked_at: datetime
    other: tuple[str, ...] = field(default=())

    @property
    def satisfied(self) -> bool:
        return all(i.status == "present" for i in self.items)

    @property
    def reasons(self) -> list[str]:
        return [
            f"evidence {i.kind} is {i.status}" + (f" ({i.detail})" if i.detail else "")
            for i in self.items
            if i.status != "present"
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest": f"sha256:{self.digest}",
            "eu_category": self.eu_category,
            "satisfied": self.satisfied,
            "required": [i.to_dict() for i in self.items],
            "other_attestations": list(self.other),
            "checked_at": self.checked_at.isoformat(),
        }


def _expired(a: Mapping[str, Any], now: datetime) -> bool:
    raw = a.get("expires_at")
    if not raw:
        return False
    expires = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return expires <= now


def evaluate(
    digest: str,
    eu_category: str | None,
    required: Sequence[str],
    attestations: Iterable[Mapping[str, Any]],
    *,
    now: datetime | None = None,
) -> EvidenceReport:
    """Sort ``attestations`` of ``digest`` into the ``required`` evidence kinds."""
    now = now or datetime.now(UTC)
    signed = [a for a in attestations if a.get("status") == "verified" and a.get("verified")]
    unsigned = [a for a in attestations if a.get("status") == "unsigned"]
    items = []
    used: set[str] = set()
    for kind in required:
        candidates = [a for a in signed if matches(kind, a)]
        current = [a for a in candidates if not _expired(a, now)]
        if current:
            ids = tuple(str(a["id"]) for a in current)
            used.update(ids)
            items.append(EvidenceItem(kind, "present", ids))
        elif candidates:
            ids = tuple(str(a["id"]) for a in candidates)
            items.append(EvidenceItem(kind, "expired", ids, "every matching attestation expired"))
        else:
            note = ""
            if any(matches(kind, a) for a in unsigned):
                note = "only unsigned documents, which never count as evidence"
            items.append(EvidenceItem(kind, "missing", (), note))
    other = tuple(str(a["id"]) for a in signed if str(a["id"]) not in used)
    return EvidenceReport(digest, eu_category, tuple(items), now, other)


class AttestationClient:
    """Reads attestations from the attestation service's public API with an auditor token.

    With ``attestation_client_id`` set it uses the OAuth2 client-credentials grant; in the
    embedded stack (no external issuer) it mints its own token with the embedded issuer's key.
    """

    def __init__(
        self, settings: RegistrySettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self._client = httpx.AsyncClient(
            base_url=settings.attestation_url, timeout=10.0, transport=transport
        )
        self._tokens = ServiceTokens(
            settings,
            subject="service:registry",
            role=Role.AUDITOR,
            client_id=settings.attestation_client_id,
            client_secret=settings.attestation_client_secret,
            setting_prefix="LINEGATE_ATTESTATION_CLIENT",
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def attestations_for(self, digest: str) -> list[dict[str, Any]]:
        """Every attestation whose subjects include ``sha256:<digest>`` (all pages)."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        try:
            while True:
                params = {"subject_digest": f"sha256:{digest}", "limit": "500"}
                if cursor:
                    params["cursor"] = cursor
                headers = {"Authorization": f"Bearer {await self._tokens.get(self._client)}"}
                response = await self._client.get(
                    "/v1/attestations", params=params, headers=headers
                )
                if response.status_code != 200:
                    raise ServiceUnavailable(
                        f"the attestation service answered {response.status_code} to an "
                        f"evidence query: {response.text[:200]}"
                    )
                page = response.json()
                items.extend(page["items"])
                cursor = page.get("next_cursor")
                if not cursor:
                    return items
        except httpx.HTTPError as e:
            raise ServiceUnavailable(
                f"the attestation service at {self.settings.attestation_url} is unreachable: {e}"
            ) from e
