"""Whether an instance is valid against one of our JSON Schemas, as a plain yes or no.

``jsonschema`` builds a validator object per subschema it descends into and an error object
per finding: for an ordinary SLSA provenance predicate that was ~100 us of an upload's
~300 us of verification, to learn that there is nothing to report. Every valid predicate pays
it, and nearly every predicate uploaded is valid. :func:`compile_check` turns a schema into
nested closures that answer only "valid?", which :func:`attestation.predicates._jsonschema.
schema_errors` asks first: when the answer is yes there is nothing to describe; when it is no,
``jsonschema`` itself walks the instance and describes every error, as before.

The closures implement the keywords our schemas use, with ``jsonschema``'s Draft 2020-12
meaning (its ``FORMAT_CHECKER`` for ``format``); a schema using any other keyword (or a
nested ``$id``, or an ``enum``/``const`` of values other than strings, booleans and null)
is not compiled and is always left to ``jsonschema``. A "no" from here is never an answer on
its own, so the closures may be stricter than ``jsonschema`` but never more lenient: tests
compare both on every schema with valid instances and thousands of mutations of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote, urljoin

Check = Callable[[Any], bool]

#: Keywords that assert nothing (``then``/``else`` are read with ``if``).
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$defs", "$comment", "title", "description", "examples", "default"}
    | {"then", "else", "deprecated", "readOnly", "writeOnly"}
)


class Unsupported(Exception):
    """The schema uses something these closures do not implement."""


def _always(_: Any) -> bool:
    return True


def _never(_: Any) -> bool:
    return False


def _is_integer(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    return isinstance(x, int) or (isinstance(x, float) and x.is_integer())


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


_TYPES: dict[str, Check] = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
    "integer": _is_integer,
    "number": _is_number,
}


def _all(checks: list[Check]) -> Check:
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]
    frozen = tuple(checks)

    def check(x: Any) -> bool:
        return all(c(x) for c in frozen)

    return check


def _equal_to(values: list[Any]) -> Check:
    """``enum``/``const`` of strings, booleans and null (``jsonschema`` tells ``True`` from
    ``1``, as the type test here does)."""
    strings: set[str] = set()
    others: list[Any] = []
    for v in values:
        if isinstance(v, str):
            strings.add(v)
        elif v is None or isinstance(v, bool):
            others.append(v)
        else:
            raise Unsupported(f"enum/const value {v!r}")
    frozen = tuple(others)

    def check(x: Any) -> bool:
        if isinstance(x, str):
            return x in strings
        return any(x is v for v in frozen)

    return check


class _Compiler:
    def __init__(self, documents: Mapping[str, Any], format_checker: Any) -> None:
        self._documents = documents
        self._format_checker = format_checker
        #: Compiled targets of ``$ref``s, by absolute URI (a cell, so a recursive reference
        #: can point at a target still being compiled).
        self._targets: dict[str, list[Check]] = {}

    def reference(self, ref: str, base: str) -> Check:
        uri = urljoin(base, ref)
        cell = self._targets.get(uri)
        if cell is None:
            cell = self._targets[uri] = [_never]
            document_uri, _, fragment = uri.partition("#")
            if document_uri not in self._documents:
                raise Unsupported(f"$ref to an unknown document {document_uri!r}")
            target = self._documents[document_uri]
            if fragment:
                if not fragment.startswith("/"):
                    raise Unsupported(f"$ref to an anchor {fragment!r}")
                for escaped in fragment[1:].split("/"):
                    token = unquote(escaped).replace("~1", "/").replace("~0", "~")
                    if isinstance(target, list):
                        target = target[int(token)]
                    elif isinstance(target, dict) and token in target:
                        target = target[token]
                    else:
                        raise Unsupported(f"$ref {uri!r} points at nothing")
            cell[0] = self.schema(target, document_uri, root=not fragment)

        def check(x: Any) -> bool:
            return cell[0](x)

        return check

    def schema(self, schema: Any, base: str, *, root: bool = False) -> Check:
        if schema is True:
            return _always
        if schema is False:
            return _never
        if not isinstance(schema, dict):
            raise Unsupported(f"schema {schema!r}")
        if "$id" in schema and not root:
            raise Unsupported("a nested $id")
        unknown = set(schema) - _ANNOTATIONS - set(_KEYWORDS)
        if unknown:
            raise Unsupported(f"keywords {sorted(unknown)}")
        # "type" first: the cheapest test, and the others assume nothing of it.
        checks = [
            _KEYWORDS[k](self, schema[k], schema, base)
            for k in sorted(schema, key=lambda k: k != "type")
            if k in _KEYWORDS
        ]
        return _all([c for c in checks if c is not _always])

    # ---------------------------------------------------------------------------- keywords

    def k_type(self, value: Any, schema: dict[str, Any], base: str) -> Check:
        names = value if isinstance(value, list) else [value]
        if not all(isinstance(n, str) and n in _TYPES for n in names):
            raise Unsupported(f"type {value!r}")
        tests = tuple(_TYPES[n] for n in names)
        if len(tests) == 1:
            return tests[0]
        return lambda x: any(t(x) for t in tests)

    def k_ref(self, value: Any, schema: dict[str, Any], base: str) -> Check:
        if not isinstance(value, str):
            raise Unsupported(f"$ref {value!r}")
        return self.reference(value, base)

    def k_required(self, value: Any, schema: dict[str, Any], base: str) -> Check:
        names = tuple(value)
        return lambda x: not isinstance(x, dict) or all(n in x for n in names)

    def k_properties(self, value: Any, schema: dict[str, Any], base: str) -> Check:
        props = tuple((name, self.schema(sub, base)) for name, sub in value.items())
        props = tuple((name, c) for name, c in props if c is not _always)

        def check(x: Any) -> bool:
            return not isinstance(x, dict) or all(c(x[n]) for n, c in props if n in x)

        return check

    def k_additional_properties(self, value: Any, schema: dict[str, Any], base: str) -> Check:
        known = frozenset(schema.get("properties", ()))
        extra = self.schema(value, base)
        if extra is _always:
            return _always

        def check(x: Any) -> bool:
            return not isinstance(x, dict) or all(extra(v) for n, v in x.items() if n not in known)

        return check

    def k_items(self, value: Any, schema: dict[str, Any], base: str) -> Check:
        item = self.schema(value, base)
        if item is _always:
            return _always
        return lambda x: not isinstance(x, list) or all(item(v) for v in x)

    def k_format(self, value: Any, schema: dict[str, Any], base: str) -> Check:
        if self._format_checker is None:
            return _always
        conforms = self._format_checker.conforms
        return lambda x: bool(conforms(x, value))

    def k_pattern(self, value: Any, schema: dict[str, Any], base: str) -> Check:
        search = re.compile(value).search
        return lambda x: not isinstance(x, str) or search(x) is not None

    def k_enum(self, value: Any, schema: dict[str, Any], base: str) -> Check:
        return _equal_to(list(value))

    def k_const(self, value: Any, schema: dict[str, Any], base: str) -> Check:
        return _equal_to([value])

    def k_minimum(self, value: Any, schema: dict[str, Any], base: str) -> Check:
        if not _is_number(value):
            raise Unsupported(f"minimum {value!r}")
        return lambda x: not _is_number(x) or x >= value

    def k_min_length(self, value: Any, schema: dict[str, Any], base: str) -> Check:
        return lambda x: not isinstance(x, str) or len(x) >= value

    def k_min_items(self, value: Any, schema: dict[str, Any], base: str) -> Check:
        return lambda x: not isinstance(x, list) or len(x) >= value

    def k_min_properties(self, value: Any, schema: dict[str, Any], base: str) -> Check:
        return lambda x: not isinstance(x, dict) or len(x) >= value

    def k_any_of(self, value: Any, schema: dict[str, Any], base: str) -> Check:
        options = tuple(self.schema(sub, base) for sub in value)
        return lambda x: any(c(x) for c in options)

    def k_if(self, value: Any, schema: dict[str, Any], base: str) -> Check:
        condition = self.schema(value, base)
        then = self.schema(schema.get("then", True), base)
        otherwise = self.schema(schema.get("else", True), base)
        return lambda x: then(x) if condition(x) else otherwise(x)


_Keyword = Callable[[_Compiler, Any, dict[str, Any], str], Check]
_KEYWORDS: dict[str, _Keyword] = {
    "type": _Compiler.k_type,
    "$ref": _Compiler.k_ref,
    "required": _Compiler.k_required,
    "properties": _Compiler.k_properties,
    "additionalProperties": _Compiler.k_additional_properties,
    "items": _Compiler.k_items,
    "format": _Compiler.k_format,
    "pattern": _Compiler.k_pattern,
    "enum": _Compiler.k_enum,
    "const": _Compiler.k_const,
    "minimum": _Compiler.k_minimum,
    "minLength": _Compiler.k_min_length,
    "minItems": _Compiler.k_min_items,
    "minProperties": _Compiler.k_min_properties,
    "anyOf": _Compiler.k_any_of,
    "if": _Compiler.k_if,
}


def compile_check(
    schema: dict[str, Any], documents: Mapping[str, Any], format_checker: Any
) -> Check | None:
    """``instance -> bool`` for ``schema`` (``documents``: every schema its ``$ref``s may
    reach, by ``$id``), or None when it uses something not implemented here."""
    try:
        return _Compiler(documents, format_checker).schema(schema, schema["$id"], root=True)
    except (Unsupported, KeyError, ValueError, TypeError, IndexError, re.error):
        return None
