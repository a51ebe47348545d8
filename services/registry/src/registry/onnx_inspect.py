"""Inspect an uploaded ONNX file without loading it into memory.

:func:`inspect_onnx` reads the protobuf wire format of the ``ModelProto`` from disk, seeking past
the bulk data of every tensor, so memory stays flat in file size (a 1 GB model costs what its
graph structure costs, typically well under a megabyte). From that "skeleton" it records inputs,
outputs, opsets, IR version and producer, runs the ONNX checker, and, for files no larger than
``ort_max_bytes``, also loads the model with onnxruntime. Anything unusable raises
:class:`InvalidOnnx` with a reason a user can act on. Example::

    from pathlib import Path

    from linegate.testing.onnx_models import build_classifier
    from registry.onnx_inspect import InvalidOnnx, inspect_onnx

    info = inspect_onnx(build_classifier(Path("model.onnx")))
    assert info.inputs[0].shape == ("batch", 3, 8, 8)
    print(info.to_dict())

    Path("broken.onnx").write_bytes(Path("model.onnx").read_bytes()[:100])
    try:
        inspect_onnx(Path("broken.onnx"))
    except InvalidOnnx as e:
        print(e)  # the file is truncated (...); upload the complete file
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from onnx import GraphProto, ModelProto, TensorProto, TypeProto

__all__ = ["MAX_SKELETON_BYTES", "InvalidOnnx", "OnnxInfo", "TensorSpec", "inspect_onnx"]

# Everything but tensor data. Real graphs are far smaller (a 7B-parameter LLM's is a few MB);
# the cap keeps a hostile file from turning "skip the weights" into "load it all anyway".
MAX_SKELETON_BYTES = 64 * 1024 * 1024
# Messages on the way to a tensor that are no longer than this are copied whole rather than
# walked field by field: a node this small carries no weights worth stripping, and copying is
# much faster than decoding in Python. Graphs and tensors are always walked.
_INLINE_BYTES = 4096
# Subgraphs nest (If/Loop bodies); protobuf itself refuses to parse deeper than 100 levels.
_MAX_DEPTH = 64
_READ_BUFFER = 1 << 16

# Message kinds, and for each the length-delimited fields that may lead to tensor data
# (field numbers from onnx/onnx.proto). All other fields are copied verbatim.
_MODEL, _TRAINING, _FUNCTION, _GRAPH, _NODE, _ATTRIBUTE, _SPARSE, _TENSOR = range(8)
_CHILDREN: dict[int, dict[int, int]] = {
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},
    _TRAINING: {1: _GRAPH, 2: _GRAPH},
    _FUNCTION: {7: _NODE},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTRIBUTE},
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
    _TENSOR: {},
}
_TENSOR_DIMS = 1
# float_data, int32_data, string_data, int64_data, raw_data, double_data, uint64_data.
_TENSOR_DATA = frozenset({4, 5, 6, 7, 9, 10, 11})
_GRAPH_INITIALIZERS = frozenset({5, 15})  # initializer, sparse_initializer
_MODEL_GRAPH = 7
_EMPTY_DIMS = b"\x08\x00"  # dims: [0]


class InvalidOnnx(Exception):
    """The file is not a usable ONNX model; str(e) says why in one sentence a user can act on."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A graph input or output: ``shape`` holds ints, symbolic dim names, or None if unknown."""

    name: str
    elem_type: str
    shape: tuple[int | str | None, ...]


@dataclass(frozen=True, slots=True)
class OnnxInfo:
    """What the registry records about a model file (``inputs`` exclude initializers)."""

    size_bytes: int
    ir_version: int
    opsets: dict[str, int]
    producer_name: str
    producer_version: str
    graph_name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    node_count: int
    initializer_count: int
    initializer_bytes: int
    loaded_with_onnxruntime: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (shapes and tensor lists become lists)."""
        return {
            "size_bytes": self.size_bytes,
            "ir_version": self.ir_version,
            "opsets": dict(self.opsets),
            "producer_name": self.producer_name,
            "producer_version": self.producer_version,
            "graph_name": self.graph_name,
            "inputs": [_spec_dict(s) for s in self.inputs],
            "outputs": [_spec_dict(s) for s in self.outputs],
            "node_count": self.node_count,
            "initializer_count": self.initializer_count,
            "initializer_bytes": self.initializer_bytes,
            "loaded_with_onnxruntime": self.loaded_with_onnxruntime,
        }


def inspect_onnx(path: Path, *, ort_max_bytes: int = 256 * 1024 * 1024) -> OnnxInfo:
    """Validate the ONNX file at ``path`` and describe it, with memory flat in file size.

    The ONNX checker always runs, on the model with its tensor data stripped. onnxruntime also
    loads the model when the file is at most ``ort_max_bytes`` (that does read it into memory);
    larger files skip it here and are run by the later validation step, so
    ``loaded_with_onnxruntime`` is False for them. Raises :class:`InvalidOnnx` if the file is
    empty, truncated or not ONNX, has no graph, outputs, IR version or opset imports, keeps
    tensor data in external files, or fails the checker or onnxruntime. ``initializer_bytes``
    is what the main graph's initializers take in the file. Blocking file I/O: call it from a
    worker thread in async code.
    """
    with Path(path).open("rb", buffering=_READ_BUFFER) as file:
        size = os.fstat(file.fileno()).st_size
        if size == 0:
            raise InvalidOnnx("the file is empty; upload the .onnx model file itself")
        scanner = _Scanner(file, size)
        skeleton = scanner.scan()
    model = _parse(skeleton)
    _check_structure(model)
    _check_with_onnx(skeleton)
    loaded = size <= ort_max_bytes
    if loaded:
        _load_with_onnxruntime(Path(path))
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    initializers.update(t.values.name for t in graph.sparse_initializer)
    return OnnxInfo(
        size_bytes=size,
        ir_version=model.ir_version,
        opsets={("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import},
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        graph_name=graph.name,
        inputs=tuple(_spec(v.name, v.type) for v in graph.input if v.name not in initializers),
        outputs=tuple(_spec(v.name, v.type) for v in graph.output),
        node_count=len(graph.node),
        initializer_count=len(graph.initializer) + len(graph.sparse_initializer),
        initializer_bytes=scanner.initializer_bytes,
        loaded_with_onnxruntime=loaded,
    )


class _Scanner:
    """Rewrites the ModelProto on disk into one without tensor data, reading field by field.

    A stripped tensor keeps its name, data type and everything else, but its dims become
    ``[0]``: see :func:`_check_with_onnx` for why.
    """

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self._size = size
        self._pos = 0
        self._kept = 0
        self.initializer_bytes = 0

    def scan(self) -> bytes:
        return self._message(_MODEL, self._size, 0, main_graph=False)

    def _message(self, kind: int, end: int, depth: int, *, main_graph: bool) -> bytes:
        if depth > _MAX_DEPTH:
            raise InvalidOnnx(f"the model nests subgraphs more than {_MAX_DEPTH} levels deep")
        children = _CHILDREN[kind]
        parts: list[bytes] = []
        dims: list[bytes] = []
        stripped = False
        while self._pos < end:
            start = self._pos
            key = self._varint(end)
            field, wire = key >> 3, key & 7
            if field == 0:
                raise self._malformed(f"field number 0 at byte {start}")
            if kind == _TENSOR and field in _TENSOR_DATA:
                self._skip(wire, end, start)
                stripped = True
            elif wire == 2:
                length = self._varint(end)
                self._need(length, end, start)
                if main_graph and field in _GRAPH_INITIALIZERS:
                    self.initializer_bytes += length
                child = children.get(field)
                if child is not None and (child in (_GRAPH, _TENSOR) or length > _INLINE_BYTES):
                    body = self._message(
                        child,
                        self._pos + length,
                        depth + 1,
                        main_graph=kind == _MODEL and field == _MODEL_GRAPH,
                    )
                else:
                    body = self._read(length)
                header = _varint_bytes(key) + _varint_bytes(len(body))
                self._charge(len(header))
                part = header + body
            else:
                part = _varint_bytes(key) + self._scalar(wire, end, start)
                self._charge(len(part))
            (dims if kind == _TENSOR and field == _TENSOR_DIMS else parts).append(part)
        parts.extend([_EMPTY_DIMS] if stripped else dims)
        return b"".join(parts)

    def _varint(self, end: int) -> int:
        start = self._pos
        result = 0
        for shift in range(0, 70, 7):
            if self._pos >= end:
                raise self._overrun(start, end)
            byte = self._file.read(1)
            if not byte:
                raise self._overrun(start, end)
            self._pos += 1
            result |= (byte[0] & 0x7F) << shift
            if byte[0] < 0x80 and result < 1 << 64:
                return result
            if byte[0] < 0x80:
                break
        raise self._malformed(f"a varint that does not fit 64 bits at byte {start}")

    def _scalar(self, wire: int, end: int, start: int) -> bytes:
        if wire == 0:
            return _varint_bytes(self._varint(end))
        if wire in (1, 5):
            n = 8 if wire == 1 else 4
            self._need(n, end, start)
            return self._take(n)
        raise self._malformed(f"protobuf wire type {wire} at byte {start}")

    def _skip(self, wire: int, end: int, start: int) -> None:
        if wire == 0:
            self._varint(end)
            return
        if wire == 2:
            length = self._varint(end)
        elif wire in (1, 5):
            length = 8 if wire == 1 else 4
        else:
            raise self._malformed(f"protobuf wire type {wire} at byte {start}")
        self._need(length, end, start)
        self._file.seek(length, os.SEEK_CUR)
        self._pos += length

    def _charge(self, n: int) -> None:
        self._kept += n
        if self._kept > MAX_SKELETON_BYTES:
            raise InvalidOnnx(
                f"the model's graph structure (everything but tensor data) is larger than "
                f"{MAX_SKELETON_BYTES // 2**20} MiB, which the registry does not accept"
            )

    def _read(self, n: int) -> bytes:
        self._charge(n)
        return self._take(n)

    def _take(self, n: int) -> bytes:
        data = self._file.read(n)
        if len(data) != n:  # the file shrank while we read it
            raise self._overrun(self._pos, self._size)
        self._pos += n
        return data

    def _need(self, length: int, end: int, start: int) -> None:
        if self._pos + length > end:
            raise self._overrun(start, end)

    def _overrun(self, start: int, end: int) -> InvalidOnnx:
        if end == self._size:
            return InvalidOnnx(
                f"the file is truncated (a field starting at byte {start} runs past its end at "
                f"byte {self._size}); upload the complete file"
            )
        return self._malformed(f"the field at byte {start} overruns its enclosing message")

    def _malformed(self, detail: str) -> InvalidOnnx:
        self._file.seek(0)
        head = self._file.read(16)
        for looks_like, test in _FOREIGN_FORMATS:
            if test(head):
                return InvalidOnnx(f"the file is not an ONNX model: it looks like {looks_like}")
        return InvalidOnnx(f"the file is not an ONNX model (invalid protobuf: {detail})")


# What people upload instead of ONNX. None of these starts like a protobuf that gets far.
_FOREIGN_FORMATS: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
    ("JSON", lambda head: head.lstrip()[:1] in (b"{", b"[")),
    (
        "a zip archive (a PyTorch checkpoint?); export the model to ONNX first",
        lambda head: head.startswith(b"PK\x03\x04"),
    ),
    ("safetensors weights; export the model to ONNX first", lambda head: head[8:10] == b'{"'),
    ("an HDF5 file (a Keras model?); convert it to ONNX first", lambda head: head[1:4] == b"HDF"),
)


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _parse(skeleton: bytes) -> ModelProto:
    import onnx

    # protobuf ships no type information (types-protobuf is not a dependency).
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped, unused-ignore]

    try:
        model: ModelProto = onnx.ModelProto.FromString(skeleton)
    except DecodeError as e:
        raise InvalidOnnx(f"the file is not an ONNX model (protobuf decoding failed: {e})") from e
    return model


def _check_structure(model: ModelProto) -> None:
    if not model.HasField("graph"):
        raise InvalidOnnx("the file has no graph: it is truncated or not an ONNX model")
    if model.ir_version <= 0:
        raise InvalidOnnx("the model has no ir_version; re-export it with a current exporter")
    if not model.opset_import:
        raise InvalidOnnx(
            "the model declares no opset_import: the file is truncated, or its exporter is too "
            "old; re-export it with a current one"
        )
    if not model.graph.output:
        raise InvalidOnnx("the model's graph has no outputs, so it cannot produce predictions")
    if any(_is_external(t) for t in _tensors(model)):
        raise InvalidOnnx(
            "external tensor data is not supported; upload a single-file model "
            "(onnx.save_model(model, path, save_as_external_data=False))"
        )


def _check_with_onnx(skeleton: bytes) -> None:
    """Run ``onnx.checker.check_model`` on the skeleton.

    The checker insists that a tensor's data match its dims (onnx >= 1.23 also checks the
    length of ``raw_data``), so no small placeholder can stand in for gigabytes of weights.
    A zero-element tensor needs no data, so the scanner rewrites each stripped tensor's dims
    to ``[0]``. Without ``full_check`` the checker never compares tensor shapes with how they
    are used (that is shape inference), so this changes nothing else it looks at: node inputs
    must still be defined before use, ops must exist in the declared opsets and their
    attributes have the schema's names and types, and IR version and opsets must agree. What
    it no longer sees is whether each tensor's data matches its dims; onnxruntime checks that
    when it loads the model. We skip ``full_check`` (strict shape inference) on purpose: it
    rejects models that onnxruntime runs, and its data-dependent inference would need the
    stripped tensors.
    """
    import onnx

    try:
        onnx.checker.check_model(skeleton)
    except onnx.checker.ValidationError as e:
        raise InvalidOnnx(f"the ONNX checker rejected the model: {_one_line(str(e))}") from e


def _load_with_onnxruntime(path: Path) -> None:
    import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; the reason reaches the user via InvalidOnnx
    try:
        ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's error classes live in a private pybind module
        reason = _ORT_PREFIX.sub("", str(e)).replace(str(path), "the model")
        raise InvalidOnnx(f"onnxruntime cannot load the model: {_one_line(reason)}") from e


_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (Load model from .*? failed:)?")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _tensors(model: ModelProto) -> list[TensorProto]:
    """Every tensor in the model: initializers and attributes, in all graphs and functions."""
    found: list[TensorProto] = []
    graphs: list[GraphProto] = [model.graph]
    graphs += [g for info in model.training_info for g in (info.initialization, info.algorithm)]
    nodes = [n for f in model.functions for n in f.node]
    while graphs or nodes:
        if graphs:
            graph = graphs.pop()
            found += graph.initializer
            found += [t for s in graph.sparse_initializer for t in (s.values, s.indices)]
            nodes += graph.node
            continue
        for attr in nodes.pop().attribute:
            found += [attr.t, *attr.tensors]
            found += [
                t for s in (attr.sparse_tensor, *attr.sparse_tensors) for t in (s.values, s.indices)
            ]
            graphs += [attr.g, *attr.graphs]
    return found


def _is_external(tensor: TensorProto) -> bool:
    return tensor.data_location == 1 or len(tensor.external_data) > 0  # 1 = EXTERNAL


def _spec(name: str, type_proto: TypeProto) -> TensorSpec:
    which = type_proto.WhichOneof("value")
    if which not in ("tensor_type", "sparse_tensor_type"):
        return TensorSpec(name=name, elem_type="unknown", shape=())
    tensor = type_proto.tensor_type if which == "tensor_type" else type_proto.sparse_tensor_type
    shape: list[int | str | None] = []
    for dim in tensor.shape.dim:
        kind = dim.WhichOneof("value")
        shape.append(
            dim.dim_value if kind == "dim_value" else dim.dim_param if kind == "dim_param" else None
        )
    return TensorSpec(name=name, elem_type=_elem_type(tensor.elem_type), shape=tuple(shape))


def _elem_type(elem_type: int) -> str:
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        return str(tensor_dtype_to_np_dtype(elem_type).name)
    except (KeyError, ValueError, TypeError):
        return "unknown"


def _spec_dict(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "elem_type": spec.elem_type, "shape": list(spec.shape)}
