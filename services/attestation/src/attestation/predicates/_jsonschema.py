"""JSON Schema plumbing shared by the validators: the schemas shipped in `schemas/`, and
turning jsonschema errors into one readable line each that starts with the JSON path.

Two validators of the same schemas: `jsonschema-rs` (the Rust `jsonschema` crate) answers
"valid?" about a hundred times faster (0.4 against 42 microseconds for an SLSA predicate), and
`jsonschema` (python-jsonschema) is the authority whenever the answer is no: it finds and
words the errors. An instance is accepted without the Python validator's walk only when the
Rust one finds it valid. The Rust validator checks `format`s with python-jsonschema's own
checkers (the two disagree on leap seconds in `date-time`, for one), so the verdicts can only
differ on structure; `tests/attestation/test_predicates.py` holds both to the same verdict on
every valid and invalid case there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from functools import cache
from importlib import resources
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import best_match  # type: ignore[import-untyped]
from referencing import Registry, Resource

# Every schema file in `schemas/`, by file name; they refer to each other by `$id`.
SCHEMA_FILES = (
    "in-toto-common-v1.json",
    "slsa-provenance-v1.json",
    "in-toto-link-v0.3.json",
    "dataset-provenance-v1.json",
    "sla-evidence-v1.json",
)

_MESSAGE_LIMIT = 300


@cache
def load_schema(file_name: str) -> dict[str, Any]:
    """One schema from the package's `schemas/` directory, parsed."""
    text = resources.files(__package__).joinpath("schemas", file_name).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _registry() -> Registry[Any]:
    schemas = [load_schema(name) for name in SCHEMA_FILES]
    return Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas)


@cache
def validator(file_name: str) -> Any:
    """A Draft 2020-12 validator for one of our schemas, asserting `format` too."""
    schema = load_schema(file_name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(
        schema,
        registry=_registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def python_formats(checker: Any) -> dict[str, Callable[[str], bool]]:
    """Every format of a python-jsonschema `FormatChecker`, as the callables `jsonschema-rs`
    takes for its `formats`: both validators then judge formats alike."""

    def one(name: str) -> Callable[[str], bool]:
        return lambda value: bool(checker.conforms(value, name))

    return {name: one(name) for name in checker.checkers}


@cache
def fast_validator(file_name: str) -> Any:
    """The same schema compiled by `jsonschema-rs`, offline (every `$ref` resolves inside our
    own schemas), asserting each `format` with python-jsonschema's checker for it."""
    registry = jsonschema_rs.Registry([(s["$id"], s) for s in map(load_schema, SCHEMA_FILES)])
    return jsonschema_rs.Draft202012Validator(
        load_schema(file_name),
        registry=registry,
        validate_formats=True,
        formats=python_formats(Draft202012Validator.FORMAT_CHECKER),
        offline=True,
    )


def schema_errors(file_name: str, instance: Any) -> list[str]:
    """Every way `instance` breaks the schema, one line each, ordered by JSON path."""
    if fast_validator(file_name).is_valid(instance):
        return []
    return describe_all(validator(file_name).iter_errors(instance))


def describe_all(errors: Iterable[Any]) -> list[str]:
    """Readable lines for jsonschema `ValidationError`s, ordered by JSON path."""
    return [describe(e) for e in sorted(errors, key=lambda e: (e.json_path, e.message))]


def describe(error: Any) -> str:
    """`<json path>: <reason>` for one jsonschema `ValidationError`."""
    if error.validator in ("anyOf", "oneOf") and error.context:
        if all(sub.validator == "required" for sub in error.context):
            # The "at least one of these fields" idiom; jsonschema's own message would repeat
            # the whole offending object.
            names = sorted({name for sub in error.context for name in sub.validator_value})
            return f"{error.json_path}: needs at least one of {', '.join(names)}"
        return describe(best_match(error.context))
    message = error.message
    if len(message) > _MESSAGE_LIMIT:
        message = message[: _MESSAGE_LIMIT - 3] + "..."
    return f"{error.json_path}: {message}"
