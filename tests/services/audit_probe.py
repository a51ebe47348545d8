"""A client that watches a service's database and audit log around every request it sends.

:class:`AuditProbe` mints a token for a subject of its own for each call, notes the audit head
and a digest of every table before and after, and records per call whether the tables changed
and whether an audit entry *by that caller* was appended during it. :func:`audit_problems`
turns the calls into findings against the app's state-changing routes. Requests are sent one
at a time, so the window of each call is exact.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI

from linegate.auth import Role
from linegate.testing.fixtures import bearer

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Tables the check does not diff: the audit log itself, and the outbox, whose rows the relay
#: deletes in the background once published (their insertion is part of an audited change).
UNDIFFED = frozenset({"audit_log", "audit_head", "audit_checkpoint", "outbox", "alembic_version"})

_counter = itertools.count(1)


def routes_of(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path template) the app serves: its OpenAPI paths (FastAPI includes
    routers lazily, so ``app.routes`` alone does not list nested ones) and any route object
    at the top level, including those left out of the schema."""
    found: set[tuple[str, str]] = set()
    for path, operations in app.openapi().get("paths", {}).items():
        found.update((method.upper(), path) for method in operations)
    for route in app.routes:
        methods, path = getattr(route, "methods", None), getattr(route, "path", None)
        if methods and path:
            found.update((m, path) for m in methods)
    return found


def state_changing_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path template) of ``app`` that may change state."""
    return {(m, p) for m, p in routes_of(app) if m in STATE_CHANGING}


def _pattern(template: str) -> re.Pattern[str]:
    regex = re.sub(r"\\\{[^}:]+:path\\\}", ".+", re.escape(template))
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", regex) + "$")


def route_of(app: FastAPI, method: str, path: str) -> str | None:
    """The template ``path`` matches (the one with the fewest parameters)."""
    matches = [p for m, p in routes_of(app) if m == method and _pattern(p).match(path)]
    return min(matches, key=lambda p: (p.count("{"), -len(p)), default=None)


@dataclass
class Call:
    method: str
    route: str | None
    url: str
    status: int
    subject: str
    audited: bool
    changed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def __str__(self) -> str:
        return f"{self.method} {self.url} -> {self.status}"


class AuditProbe:
    def __init__(self, service: str, app: FastAPI, client: httpx.AsyncClient, mint: Any) -> None:
        self.service = service
        self.app = app
        self.client = client
        self.mint = mint
        self.calls: list[Call] = []

    @property
    def _db(self) -> Any:
        return self.app.state.ctx.db

    async def _head(self) -> int:
        async with self._db.engine.connect() as conn:
            return int((await conn.execute(sa.text("SELECT seq FROM audit_head"))).scalar_one())

    async def _actors_after(self, seq: int) -> list[str]:
        async with self._db.engine.connect() as conn:
            rows = await conn.execute(
                sa.text("SELECT actor FROM audit_log WHERE seq > :s"), {"s": seq}
            )
            return [str(r[0]) for r in rows]

    async def _snapshot(self) -> dict[str, str]:
        db = self._db
        async with db.engine.connect() as conn:
            names = await conn.run_sync(lambda c: sa.inspect(c).get_table_names(schema=db.schema))
            digests = {}
            for name in sorted(set(names) - UNDIFFED):
                rows = (await conn.execute(sa.text(f'SELECT * FROM "{name}"'))).all()
                material = "\n".join(sorted(repr(tuple(r)) for r in rows))
                digests[name] = hashlib.sha256(material.encode()).hexdigest()
        return digests

    async def call(
        self,
        method: str,
        url: str,
        *roles: Role,
        sub: str | None = None,
        tenant: str | None = None,
        device_id: str | None = None,
        expect: int | None = None,
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> httpx.Response:
        """Send one request as ``sub`` (a fresh subject unless given) holding ``roles``."""
        subject = sub or f"probe-{self.service}-{next(_counter)}"
        token = self.mint(
            *(roles or (Role.ADMIN,)), sub=subject, tenant=tenant, device_id=device_id
        )
        head, before = await self._head(), await self._snapshot()
        response = await self.client.request(
            method, url, headers={**bearer(token), **(headers or {})}, **kw
        )
        actors = await self._actors_after(head)
        after = await self._snapshot()
        self.calls.append(
            Call(
                method=method,
                route=route_of(self.app, method, httpx.URL(url).path),
                url=url,
                status=response.status_code,
                subject=subject,
                audited=any(a.split(" ")[0] == subject for a in actors),
                changed=sorted(
                    t for t in set(before) | set(after) if before.get(t) != after.get(t)
                ),
            )
        )
        if expect is not None:
            assert response.status_code == expect, f"{method} {url}: {response.text}"
        return response


def audit_problems(probe: AuditProbe, exempt: dict[tuple[str, str, str], str]) -> list[str]:
    """What is wrong with the service's auditing, as far as the calls show:

    - a call changed tables but appended no audit entry by its caller (2xx or not);
    - a state-changing call answered 2xx without an audit entry by its caller;
    - a state-changing route that is not exempt was never driven to a 2xx with its entry;
    - an exemption names a route the app no longer has.
    """
    problems = []
    routes = state_changing_routes(probe.app)
    exempted = {(m, p) for (s, m, p) in exempt if s == probe.service}
    for call in probe.calls:
        if call.route is None:
            problems.append(f"{call}: no route of the app matches (a typo in the driver?)")
        if call.changed and not call.audited:
            problems.append(f"{call} changed {call.changed} without an audit entry by its caller")
        elif (
            call.method in STATE_CHANGING
            and call.ok
            and not call.audited
            and (call.method, call.route) not in exempted
        ):
            problems.append(f"{call} answered 2xx without an audit entry by its caller")
    proven = {(c.method, c.route) for c in probe.calls if c.ok and c.audited}
    for method, path in sorted(routes - exempted - proven):
        problems.append(
            f"{probe.service}: {method} {path} is not known to append to the audit log: drive it "
            "with a valid request in tests/services/test_audit_routes.py (the check then proves "
            "it audits), or exempt it there with the reason"
        )
    for method, path in sorted(exempted - routes):
        problems.append(f"{probe.service}: exemption for {method} {path}, a route it lacks")
    return problems
