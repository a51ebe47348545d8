"""A client that watches a service's database and audit log around every request it sends.

:class:`AuditProbe` mints a token for a subject of its own for each call (or, with
:meth:`AuditProbe.call_as`, sends through a browser whose session is a known subject), notes
the audit head and a digest of every table before and after, and records per call whether the
tables changed and whether an audit entry *by that caller* was appended during it.
:func:`audit_problems` turns the calls into findings against the app's state-changing routes,
which :func:`routes_of` finds in the OpenAPI schema and in the route objects at any depth
(routes left out of the schema included). Requests are sent one at a time, so the window of
each call is exact.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import fastapi.routing
import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from starlette.routing import BaseRoute, Mount

from linegate.auth import Role
from linegate.testing.fixtures import bearer

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Tables the check does not diff: the audit log itself, and the outbox, whose rows the relay
#: deletes in the background once published (their insertion is part of an audited change).
UNDIFFED = frozenset({"audit_log", "audit_head", "audit_checkpoint", "outbox", "alembic_version"})

_counter = itertools.count(1)


def _flattened(routes: Sequence[BaseRoute]) -> Iterator[Any]:
    """``routes`` with every included router replaced by its routes, however deep.

    FastAPI >= 0.16x includes routers lazily: ``app.routes`` holds one placeholder per
    ``include_router`` call (the portal's router, itself made of two routers, is one such),
    and ``fastapi.routing.iter_route_contexts`` is what its own OpenAPI generator uses to
    see through them, with their prefixes applied. Older FastAPI copied the routes into
    ``app.routes`` at inclusion, so there the list is already flat.
    :func:`tests.services.test_audit_routes.test_routes_are_found_without_starting_the_app`
    fails if this ever stops seeing what the schema sees.
    """
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    yield from flatten(routes) if flatten is not None else routes


def _walk(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    for route in _flattened(routes):
        original = getattr(route, "original_route", route)
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if isinstance(original, Mount):
            # A mounted sub-application's routes are the app's too, under the mount path.
            yield from _walk(original.routes, prefix + (path or ""))
        elif methods and path:
            yield from ((m, prefix + path) for m in methods)


def routes_of(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path template) the app serves: its OpenAPI paths, and every route
    object, at any depth of included routers and mounts, including the routes left out of
    the schema (``include_in_schema=False``, e.g. the attestation portal's forms)."""
    objects = route_objects(app)
    # The schema writes ``{key:path}`` as ``{key}``: the same route, kept once, as the object
    # names it (the converter tells how much of a URL the parameter may take).
    seen = {(m, schema_path(p)) for m, p in objects}
    return objects | {(m, p) for m, p in schema_routes(app) if (m, p) not in seen}


def schema_path(template: str) -> str:
    """``template`` as the OpenAPI schema writes it (without ``:converter`` suffixes)."""
    return re.sub(r"\{([^}:]+):[^}]+\}", r"{\1}", template)


def schema_routes(app: FastAPI) -> set[tuple[str, str]]:
    """The (method, path template) pairs of the app's OpenAPI schema."""
    paths = app.openapi().get("paths", {})
    return {(method.upper(), path) for path, ops in paths.items() for method in ops}


def route_objects(app: FastAPI) -> set[tuple[str, str]]:
    """The (method, path template) pairs of the app's route objects, at any depth."""
    return set(_walk(app.router.routes))


def state_changing_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path template) of ``app`` that may change state."""
    return {(m, p) for m, p in routes_of(app) if m in STATE_CHANGING}


def _pattern(template: str) -> re.Pattern[str]:
    regex = re.sub(r"\\\{[^}:]+:path\\\}", ".+", re.escape(template))
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", regex) + "$")


def route_of(app: FastAPI, method: str, path: str) -> str | None:
    """The template ``path`` matches: the most specific one (a catch-all ``{x:path}`` last,
    then the fewest parameters, then the longest template)."""
    matches = [p for m, p in routes_of(app) if m == method and _pattern(p).match(path)]
    return min(matches, key=lambda p: (p.count(":path}"), p.count("{"), -len(p)), default=None)


@dataclass
class Call:
    method: str
    route: str | None
    url: str
    status: int
    subject: str
    audited: bool
    changed: list[str] = field(default_factory=list)
    location: str = ""

    @property
    def ok(self) -> bool:
        """Accepted: a 2xx, or the 303 See Other by which an HTML form that was accepted
        sends the browser on (Post/Redirect/Get). A 303 to a sign-in page is the portal's
        way of refusing a request without a session, not an acceptance."""
        if self.status == 303:
            return not httpx.URL(self.location).path.endswith("/login")
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

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[Any]:
        # Through the service's own unit of work, which waits its turn behind the service's
        # writers: on SQLite a bare engine.connect() begins IMMEDIATE outside that queue, and a
        # writer of the service (the outbox relay) starting meanwhile would wait for its lock
        # with the event loop blocked (inline SQLite), so neither could finish for 30 s.
        async with self._db.session() as session:
            yield await session.connection()

    async def _head(self) -> int:
        async with self._read() as conn:
            return int((await conn.execute(sa.text("SELECT seq FROM audit_head"))).scalar_one())

    async def _actors_after(self, seq: int) -> list[str]:
        async with self._read() as conn:
            rows = await conn.execute(
                sa.text("SELECT actor FROM audit_log WHERE seq > :s"), {"s": seq}
            )
            return [str(r[0]) for r in rows]

    async def _snapshot(self) -> dict[str, str]:
        db = self._db
        async with self._read() as conn:
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
        return await self._send(
            self.client,
            method,
            url,
            subject,
            expect=expect,
            headers={**bearer(token), **(headers or {})},
            **kw,
        )

    async def call_as(
        self,
        browser: httpx.AsyncClient,
        subject: str,
        method: str,
        url: str,
        *,
        expect: int | None = None,
        **kw: Any,
    ) -> httpx.Response:
        """Send one request through ``browser`` (its own cookie jar: a portal session) with
        no token of the probe's; ``subject`` is who the session is, so whose audit entry
        the request must append. Give each session a subject of its own (a fresh client)
        so that an entry by it can only come from its own requests."""
        return await self._send(browser, method, url, subject, expect=expect, **kw)

    async def _send(
        self,
        client: httpx.AsyncClient,
        method: str,
        url: str,
        subject: str,
        *,
        expect: int | None,
        **kw: Any,
    ) -> httpx.Response:
        head, before = await self._head(), await self._snapshot()
        response = await client.request(method, url, **kw)
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
                location=response.headers.get("location", ""),
            )
        )
        if expect is not None:
            assert response.status_code == expect, f"{method} {url}: {response.text}"
        return response


def audit_problems(
    probe: AuditProbe,
    exempt: dict[tuple[str, str, str], str],
    pending: dict[tuple[str, str, str], str] | None = None,
) -> list[str]:
    """What is wrong with the service's auditing, as far as the calls show:

    - a call changed tables but appended no audit entry by its caller (accepted or not);
    - a state-changing call was accepted (2xx, or a form's 303) without an audit entry by
      its caller, unless its route is exempt;
    - a state-changing route that is neither exempt nor pending was never driven to an
      acceptance with its entry;
    - an exempt route was never driven (so nobody saw that it changes no table);
    - an exemption or a pending entry names a route the app no longer has, or a pending
      route has meanwhile been proven (move it out of the pending list).
    """
    problems = []
    routes = state_changing_routes(probe.app)

    def of_service(listed: dict[tuple[str, str, str], str]) -> set[tuple[str, str]]:
        return {(m, p) for (s, m, p) in listed if s == probe.service}

    exempted, waiting = of_service(exempt), of_service(pending or {})
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
            problems.append(f"{call} was accepted without an audit entry by its caller")
    proven = {(c.method, c.route) for c in probe.calls if c.ok and c.audited}
    driven = {(c.method, c.route) for c in probe.calls}
    for method, path in sorted(routes - exempted - waiting - proven):
        problems.append(
            f"{probe.service}: {method} {path} is not known to append to the audit log: drive it "
            "with a valid request in tests/services/test_audit_routes.py (the check then proves "
            "it audits), or exempt it there with the reason"
        )
    for method, path in sorted((exempted & routes) - driven):
        problems.append(
            f"{probe.service}: {method} {path} is exempt but never driven, so nothing showed "
            "that it changes no table: drive it"
        )
    for method, path in sorted(waiting & proven):
        problems.append(
            f"{probe.service}: {method} {path} is pending a driver but now proven: remove it "
            "from PENDING_DRIVER"
        )
    for method, path in sorted((exempted | waiting) - routes):
        problems.append(f"{probe.service}: exemption for {method} {path}, a route it lacks")
    return problems
