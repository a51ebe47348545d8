"""The yes-or-no checks compiled from our JSON Schemas answer as jsonschema does.

`schema_errors` skips jsonschema when the compiled check says an instance is valid, so a
check that accepted what jsonschema refuses would let an invalid predicate through. Each
schema is compared with jsonschema on valid predicates and on every single mutation of them
(each value replaced by values of every JSON type and of the formats the schemas check, each
member removed, an unknown member added), then on seeded random multi-step mutations."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest

from attestation.predicates._jsonschema import (
    SCHEMA_FILES,
    load_schema,
    schema_errors,
    valid_check,
    validator,
)
from attestation.predicates._schemacheck import compile_check

from .test_predicates import SHA256, _dataset_provenance, _link, _sla_evidence, load

#: Replacement values: every JSON type, and strings that pass or fail each format and
#: pattern the schemas use.
PALETTE: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2.0,
    0.5,
    -0.5,
    "",
    "x",
    "not a uri",
    "https://example.com/a?b=c#d",
    "git+https://example.com/repo@refs/heads/main",
    "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
    "2025-01-01T00:00:00Z",
    "2025-13-01T00:00:00Z",
    "yesterday",
    SHA256,
    SHA256.upper(),
    "ab" * 20,
    "ab" * 32,
    "aGVsbG8=",
    "not base64!",
    "production-line",
    "legitimate-interests",
    "model-performance",
    ">=",
    "report",
    "camera-mono",
    "in-house",
    [],
    [1],
    ["x"],
    [{}],
    {},
    {"sha256": SHA256},
    {"name": "n"},
    {"uri": "https://example.com/x"},
]


def _seeds(file_name: str) -> list[Any]:
    if file_name == "slsa-provenance-v1.json":
        slsa = load("slsa/slsa_predicate_v1_0.json")
        minimal = {
            "buildDefinition": {"buildType": "https://example.com/t", "externalParameters": {}},
            "runDetails": {"builder": {"id": "https://example.com/b"}},
        }
        return [slsa, minimal]
    if file_name == "in-toto-link-v0.3.json":
        return [_link()]
    if file_name == "dataset-provenance-v1.json":
        personal = _dataset_provenance(
            personalData={"present": True, "legalBasis": "consent", "categories": ["hands"]}
        )
        return [_dataset_provenance(), personal]
    if file_name == "sla-evidence-v1.json":
        return [_sla_evidence()]
    return [{"sha256": SHA256}]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _paths(child, (*path, i))


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def _mutations(seed: Any) -> Iterator[Any]:
    for path in _paths(seed):
        for replacement in PALETTE:
            if path:
                mutated = copy.deepcopy(seed)
                _get(mutated, path[:-1])[path[-1]] = copy.deepcopy(replacement)
                yield mutated
        target = _get(seed, path)
        if path:
            mutated = copy.deepcopy(seed)
            del _get(mutated, path[:-1])[path[-1]]
            yield mutated
        if isinstance(target, dict):
            mutated = copy.deepcopy(seed)
            _get(mutated, path)["unexpected"] = "x"
            yield mutated


def _random_mutation(seed: Any, rng: random.Random, steps: int) -> Any:
    value = copy.deepcopy(seed)
    for _ in range(steps):
        paths = [p for p in _paths(value) if p]
        if not paths:
            break
        path = rng.choice(paths)
        parent = _get(value, path[:-1])
        if rng.random() < 0.2:
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(PALETTE))
    return value


def _agree(file_name: str, instance: Any) -> None:
    check = valid_check(file_name)
    assert check is not None
    expected = validator(file_name).is_valid(instance)
    assert check(instance) == expected, json.dumps(instance)[:2000]


@pytest.mark.parametrize("file_name", SCHEMA_FILES)
def test_every_schema_is_compiled(file_name: str) -> None:
    assert valid_check(file_name) is not None


@pytest.mark.parametrize("file_name", SCHEMA_FILES)
def test_the_check_agrees_with_jsonschema_on_every_single_mutation(file_name: str) -> None:
    count = 0
    for seed in _seeds(file_name):
        _agree(file_name, seed)
        assert validator(file_name).is_valid(seed)
        for mutated in _mutations(seed):
            _agree(file_name, mutated)
            count += 1
    assert count > 0


@pytest.mark.parametrize("file_name", SCHEMA_FILES)
def test_the_check_agrees_with_jsonschema_on_random_mutations(file_name: str) -> None:
    rng = random.Random(f"schemacheck:{file_name}")
    for seed in _seeds(file_name):
        for _ in range(300):
            _agree(file_name, _random_mutation(seed, rng, rng.randint(1, 4)))


@pytest.mark.parametrize("instance", [None, 1, "x", [], True])
@pytest.mark.parametrize("file_name", SCHEMA_FILES)
def test_the_check_agrees_on_non_objects(file_name: str, instance: Any) -> None:
    _agree(file_name, instance)


def test_an_invalid_instance_is_still_described_by_jsonschema() -> None:
    predicate = load("slsa/slsa_predicate_v1_0.json")
    predicate["runDetails"]["builder"]["id"] = 7
    assert schema_errors("slsa-provenance-v1.json", predicate) == [
        "$.runDetails.builder.id: 7 is not of type 'string'"
    ]


@pytest.mark.parametrize(
    "schema",
    [
        {"$id": "https://x.example/s.json", "oneOf": [{"type": "string"}]},
        {"$id": "https://x.example/s.json", "patternProperties": {"^a": {"type": "string"}}},
        {"$id": "https://x.example/s.json", "enum": [1, 2]},
        {"$id": "https://x.example/s.json", "properties": {"a": {"$id": "inner.json"}}},
        {"$id": "https://x.example/s.json", "$ref": "other.json"},
    ],
)
def test_a_schema_using_what_is_not_implemented_is_left_to_jsonschema(
    schema: dict[str, Any],
) -> None:
    assert compile_check(schema, {schema["$id"]: schema}, None) is None


def test_every_schema_file_is_in_the_comparison() -> None:
    for file_name in SCHEMA_FILES:
        assert load_schema(file_name)["$id"]
