"""Refuses text no database can store, before it reaches a handler.

PostgreSQL's text cannot hold U+0000, and neither PostgreSQL nor SQLite can be handed a lone
UTF-16 surrogate (U+D800-U+DFFF), which has no UTF-8 encoding: JSON's ``"\\u0000"`` and
``"\\ud800"`` escapes decode to exactly those. Such a string in a request went through
validation (it is a valid ``str``) and failed in the database driver, an unhandled error
answered 500, where the client sent something wrong and should hear so.

:class:`StorableTextMiddleware` answers 422 problem+json naming where the text is, for the
request path, its query string, and the body of ``application/json`` requests (the documents
of the services' own APIs) and of urlencoded forms (the portal's). Uploads in other media
types (DSSE envelopes, Sigstore bundles, SBOMs, multipart models) are parsed by their own
endpoints, which bound and check them.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from linegate.errors import validation_problem

#: A character no database column here can store.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
#: The JSON escapes that decode to one (raw NUL bytes and surrogates are not valid JSON text).
_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89abcdefABCDEF][0-9a-fA-F]{2})")
#: Bodies above this are not buffered to be checked (the endpoint's own limit answers them).
MAX_CHECKED_BYTES = 8 * 1024 * 1024
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def may_hold_unstorable(json_text: bytes) -> bool:
    """Whether JSON text can decode to a string :func:`unstorable_location` finds: a cheap
    test of the bytes (a match may still be an escaped backslash, which decodes to text)."""
    return _ESCAPE.search(json_text) is not None


def _printable(text: str) -> str:
    return UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def unstorable_location(document: Any, root: str = "body") -> str | None:
    """The location (``body.a.0.b``) of the first key or string in ``document`` that holds a
    character no database can store, or None. The location itself holds none: such a character
    in a key is written as its ``\\uXXXX`` escape."""
    stack: list[tuple[str, Any]] = [(root, document)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if UNSTORABLE.search(value):
                return where
        elif isinstance(value, dict):
            for key, item in value.items():
                if UNSTORABLE.search(key):
                    return f"{where}.{_printable(key)} (a key)"
                stack.append((f"{where}.{key}", item))
        elif isinstance(value, list):
            stack.extend((f"{where}.{i}", item) for i, item in enumerate(value))
    return None


_JSON = b"application/json"
_FORM = b"application/x-www-form-urlencoded"


def _media_type(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bytes(value.split(b";", 1)[0].strip().lower())
    return b""


class StorableTextMiddleware:
    """Pure ASGI: 422 for a path, query or JSON body holding text no database can store."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if UNSTORABLE.search(scope["path"]):
                await self._refuse(scope, receive, send, "path")
                return
            if b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
                await self._refuse(scope, receive, send, "query")
                return
            media = _media_type(scope) if scope["method"] in _BODY_METHODS else b""
            if media in (_JSON, _FORM):
                await self._checked_body(scope, receive, send, media)
                return
        await self.app(scope, receive, send)

    async def _checked_body(self, scope: Scope, receive: Receive, send: Send, media: bytes) -> None:
        chunks: list[bytes] = []
        size = 0
        more = True
        while more and size <= MAX_CHECKED_BYTES:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nobody to answer
                return
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if not more and media == _FORM:
            if b"\x00" in unquote_to_bytes(body):
                await self._refuse(scope, receive, send, "body")
                return
        elif not more and _worth_parsing(body):
            try:
                where = unstorable_location(json.loads(body))
            except ValueError:
                where = None  # malformed: the endpoint's own parser answers it
            except RecursionError:  # json.loads gives up; past the endpoint it would be a 500
                await self._refuse(
                    scope, receive, send, "body", "the document is nested too deeply", "nesting"
                )
                return
            if where is not None:
                await self._refuse(scope, receive, send, where)
                return
        await self.app(scope, _replay(body, receive, more=more), send)

    @staticmethod
    async def _refuse(
        scope: Scope,
        receive: Receive,
        send: Send,
        where: str,
        message: str = "text must not contain U+0000 or unpaired surrogates",
        kind: str = "unstorable_text",
    ) -> None:
        response = validation_problem(
            [{"location": where, "message": message, "type": kind}],
            instance=scope["path"] if where != "path" else None,
        )
        await response(scope, receive, send)


#: Fewer opening brackets than this cannot nest deep enough to exhaust json.loads' recursion.
_SAFE_BRACKETS = 500


def _worth_parsing(body: bytes) -> bool:
    """Whether a JSON body needs parsing here: it may hold an escape of unstorable text, or
    enough brackets to nest past what json.loads can parse. Most bodies need neither."""
    return may_hold_unstorable(body) or body.count(b"[") + body.count(b"{") >= _SAFE_BRACKETS


def _replay(body: bytes, receive: Receive, *, more: bool) -> Receive:
    """``receive`` that hands out the buffered body again, then the original's messages."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": more}]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay
