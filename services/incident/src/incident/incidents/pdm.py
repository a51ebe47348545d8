"""Predictive maintenance: alert -> hierarchical chain -> encrypted maintenance ticket.

A device's ``MaintenanceAlertV1`` (its smoothed anomaly score crossed the threshold) opens a
``pdm_alert`` incident; the incident gets a maintenance ticket at the chain level its score
warrants (``pdm_chain.json``: device -> line maintenance -> plant maintenance ->
maintenance management, a score at twice its threshold starting at plant level). The ticket's
context is minimal (asset, where, the figures, the anomaly model's digest) and is stored and
served only as a JWE encrypted for the maintenance team's public key
(``LINEGATE_MAINTENANCE_PUBLIC_KEY``, PEM or JWK; EC/OKP keys use ECDH-ES+A256KW, RSA
keys RSA-OAEP-256, content A256GCM; joserfc, no home-made crypto; RFC 7518 rates RSA-OAEP-256
"optional", so the team names it when decrypting: ``algorithms=["RSA-OAEP-256", "A256GCM"]``).
Without a key the ticket is withheld rather than stored in the clear. An unacknowledged ticket
moves up a level when its time runs out (:meth:`TicketDesk.escalate_due`, driven with an
explicit ``now``).

Example::

    encrypter = TicketEncrypter.from_settings(settings.maintenance_public_key, None)
    desk = TicketDesk(MaintenanceChain.packaged(), encrypter)
    jwe.decrypt_compact(ticket.jwe, team_private_key).plaintext   # the team's side
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey, import_key
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from incident.incidents.core import ACTOR, note, utc
from incident.incidents.errors import InvalidTransition, TicketNotFound
from incident.incidents.models import Incident, MaintenanceTicket
from incident.signals import Signal
from linegate.audit import AuditLog
from linegate.events import MaintenanceTicketV1, Subjects
from linegate.outbox import enqueue

TICKET_MEDIA_TYPE = "application/vnd.linegate.maintenance-ticket.v1+json"
ENC = "A256GCM"
#: The figures a ticket carries; nothing else of the signal leaves the incident service.
TICKET_FIELDS = ("ewma", "threshold", "last_score", "windows", "model_digest")


class ChainLevel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    level: str = Field(pattern=r"^[a-z_]{1,64}$")
    #: A ticket starts at the highest level whose ratio (EWMA / threshold) it reaches.
    min_ratio: float | None = None
    #: None: the last level keeps the ticket.
    acknowledge_within_minutes: int | None = Field(default=None, ge=1)


class MaintenanceChain(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int
    description: str = ""
    origin: str = "device"
    levels: list[ChainLevel] = Field(min_length=1)

    @classmethod
    def packaged(cls) -> MaintenanceChain:
        text = (resources.files("incident.incidents") / "pdm_chain.json").read_text("utf-8")
        return cls.model_validate_json(text)

    def start_level(self, ratio: float) -> int:
        start = 0
        for i, level in enumerate(self.levels):
            if level.min_ratio is not None and ratio >= level.min_ratio:
                start = i
        return start


PublicKey = ECKey | RSAKey | OKPKey


def load_public_key(value: str) -> PublicKey:
    """A public key from a JWK (JSON) or a PEM string."""
    text = value.strip()
    key: Any
    try:
        if text.startswith("{"):
            key = import_key(json.loads(text))
        else:
            kinds: dict[str, Any] = {"RSA": RSAKey, "EC": ECKey, "OKP": OKPKey}
            key = kinds[_pem_kind(text)].import_key(text)
    except (JoseError, ValueError, TypeError) as e:
        raise ValueError(f"not a usable JWK or PEM public key: {e}") from e
    if not isinstance(key, ECKey | RSAKey | OKPKey):
        raise TypeError("the maintenance key must be an EC, OKP or RSA public key")
    return key


def _pem_kind(pem: str) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    loaded = load_pem_public_key(pem.encode())
    if isinstance(loaded, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(loaded, ec.EllipticCurvePublicKey):
        return "EC"
    return "OKP"


class TicketEncrypter:
    """Encrypts ticket payloads for one recipient key (the maintenance team's)."""

    def __init__(self, key: PublicKey) -> None:
        self.key = key
        self.kid = key.kid or key.thumbprint()
        self.alg = "RSA-OAEP-256" if isinstance(key, RSAKey) else "ECDH-ES+A256KW"

    @classmethod
    def from_settings(cls, value: str | None, path: Path | None) -> TicketEncrypter | None:
        if path is not None:
            value = path.read_text(encoding="utf-8")
        return cls(load_public_key(value)) if value else None

    def encrypt(self, payload: dict[str, Any]) -> str:
        header = {"alg": self.alg, "enc": ENC, "cty": TICKET_MEDIA_TYPE, "kid": self.kid}
        return jwe.encrypt_compact(
            header,
            json.dumps(payload, sort_keys=True).encode(),
            self.key,
            # RSA-OAEP-256 is "optional" in RFC 7518, so joserfc wants it named explicitly.
            algorithms=[self.alg, ENC],
        )


@dataclass
class TicketDesk:
    chain: MaintenanceChain
    encrypter: TicketEncrypter | None

    def _deadline(self, index: int, now: datetime) -> datetime | None:
        minutes = self.chain.levels[index].acknowledge_within_minutes
        return None if minutes is None else now + timedelta(minutes=minutes)

    async def _deliver(
        self,
        session: AsyncSession,
        ticket: MaintenanceTicket,
        now: datetime,
        reason: Literal["opened", "escalated"],
    ) -> None:
        """Queue the encrypted ticket for its level in the outbox (same transaction); a
        withheld ticket (no key) has nothing that may leave the service."""
        if ticket.jwe is None or ticket.recipient_kid is None:
            return
        await enqueue(
            session,
            Subjects.maintenance_ticket(ticket.level),
            MaintenanceTicketV1(
                actor=ACTOR,
                occurred_at=now,
                ticket_id=ticket.id,
                incident_id=ticket.incident_id,
                level=ticket.level,
                reason=reason,
                acknowledge_by=ticket.escalate_at,
                recipient_kid=ticket.recipient_kid,
                jwe=ticket.jwe,
            ),
        )

    async def open_ticket(
        self, session: AsyncSession, audit: AuditLog, incident: Incident, signal: Signal
    ) -> MaintenanceTicket:
        now = utc(signal.observed_at)
        ev = signal.evidence
        asset = str(ev.get("asset") or signal.station or signal.device_id or "unknown")
        ratio = float(ev["ewma"]) / float(ev["threshold"]) if ev.get("threshold") else 1.0
        index = self.chain.start_level(ratio)
        ticket = MaintenanceTicket(
            id=f"mt-{uuid.uuid4().hex[:16]}",
            incident_id=incident.id,
            asset=asset,
            level=self.chain.levels[index].level,
            level_index=index,
            status="open",
            created_at=now,
            escalate_at=self._deadline(index, now),
            delivery="withheld: no maintenance public key configured "
            "(LINEGATE_MAINTENANCE_PUBLIC_KEY)",
        )
        if self.encrypter is not None:
            context = {
                "ticket_id": ticket.id,
                "incident_id": incident.id,
                "asset": asset,
                "device_id": signal.device_id,
                "line": signal.line,
                "station": signal.station,
                "raised_by": self.chain.origin,
                "raised_at": now.isoformat(),
                **{k: ev.get(k) for k in TICKET_FIELDS},
            }
            ticket.jwe = self.encrypter.encrypt(context)
            ticket.recipient_kid = self.encrypter.kid
            ticket.delivery = f"encrypted for {self.encrypter.kid} ({self.encrypter.alg}/{ENC})"
        session.add(ticket)
        await session.flush()
        await self._deliver(session, ticket, now, "opened")
        await note(
            session,
            incident.id,
            at=now,
            kind="maintenance_ticket",
            actor=ACTOR,
            detail=f"maintenance ticket {ticket.id} for {asset} at {ticket.level}; "
            f"{ticket.delivery}",
            data={"ticket_id": ticket.id, "level": ticket.level, "ratio": round(ratio, 4)},
        )
        await audit.append(
            session,
            actor=ACTOR,
            action="maintenance_ticket.open",
            subject=f"maintenance_ticket:{ticket.id}",
            # The digest of the ciphertext, never the context, goes into the audit log.
            payload={"incident_id": incident.id, "level": ticket.level, "jwe": ticket.jwe},
        )
        return ticket

    async def acknowledge(
        self,
        session: AsyncSession,
        audit: AuditLog,
        ticket_id: str,
        actor: str,
        now: datetime,
        note_text: str | None = None,
    ) -> MaintenanceTicket:
        ticket = await session.get(MaintenanceTicket, ticket_id)
        if ticket is None:
            raise TicketNotFound(f"no maintenance ticket {ticket_id!r}")
        if ticket.status != "open":
            raise InvalidTransition(f"ticket {ticket_id} is {ticket.status}")
        ticket.status, ticket.acknowledged_at, ticket.acknowledged_by = "acknowledged", now, actor
        ticket.escalate_at = None
        session.add(ticket)
        await note(
            session,
            ticket.incident_id,
            at=now,
            kind="maintenance_ticket",
            actor=actor,
            detail=f"maintenance ticket {ticket.id} acknowledged at {ticket.level}"
            + (f": {note_text}" if note_text else ""),
        )
        await audit.append(
            session,
            actor=actor,
            action="maintenance_ticket.acknowledge",
            subject=f"maintenance_ticket:{ticket.id}",
            payload={"level": ticket.level},
            reason=note_text,
            now=now,
        )
        return ticket

    async def escalate_due(
        self, session: AsyncSession, audit: AuditLog, now: datetime
    ) -> list[MaintenanceTicket]:
        stmt = (
            select(MaintenanceTicket)
            .where(
                MaintenanceTicket.status == "open",
                col(MaintenanceTicket.escalate_at).is_not(None),
                col(MaintenanceTicket.escalate_at) <= now,
            )
            .with_for_update(skip_locked=True)
        )
        moved = []
        for ticket in (await session.exec(stmt)).all():
            if ticket.level_index + 1 >= len(self.chain.levels):
                ticket.escalate_at = None
                session.add(ticket)
                continue
            previous = ticket.level
            ticket.level_index += 1
            ticket.level = self.chain.levels[ticket.level_index].level
            ticket.escalate_at = self._deadline(ticket.level_index, now)
            session.add(ticket)
            await self._deliver(session, ticket, now, "escalated")
            await note(
                session,
                ticket.incident_id,
                at=now,
                kind="maintenance_ticket",
                actor=ACTOR,
                detail=f"ticket {ticket.id} not acknowledged at {previous}: "
                f"escalated to {ticket.level}",
            )
            await audit.append(
                session,
                actor=ACTOR,
                action="maintenance_ticket.escalate",
                subject=f"maintenance_ticket:{ticket.id}",
                payload={"from": previous, "to": ticket.level},
                reason="not acknowledged in time",
                now=now,
            )
            moved.append(ticket)
        await session.flush()
        return moved
