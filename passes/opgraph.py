"""The operator graph handed from the TVM side to the learning side.

Plain Python data only: a dataset of OpGraphs must be usable for training on a
machine without TVM, so nothing here may import tvm or torch.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT = "nar-tvm.opgraph/2"
# /2 added the fused ops' own attributes and shapes (OpNode.fused); a /1 graph is a /2 graph
# whose fused nodes list none, so both load.
READABLE_FORMATS = ("nar-tvm.opgraph/1", FORMAT)
# Content hashes are taken as under /1, so a graph with nothing /2 added (every op-level
# graph) keeps the hash the profiler stored for it and deduplicates against it.
_HASH_FORMAT = "nar-tvm.opgraph/1"
LEVELS = ("op", "fused")

DTYPE_BYTES = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1,
}
# Gathers read only the rows they select: an embedding lookup of 32 tokens touches 32 rows of
# a 30,000-row table, not the table. Counting the whole operand made a cost prior read
# such a lookup as a full-table copy (over 100x its measured time).
GATHER_OPS = frozenset({"take", "gather_elements", "gather_nd"})


class OpGraphError(ValueError):
    """A malformed OpGraph (bad JSON, dangling edge, cycle, unknown level)."""


def numel(shape) -> int:
    return int(math.prod(shape))


def tensor_bytes(shape, dtype: str) -> int:
    return numel(shape) * DTYPE_BYTES.get(dtype, 4)


@dataclass
class TensorSpec:
    shape: list[int]
    dtype: str = "float32"

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self.shape, self.dtype)


@dataclass
class FusedOp:
    """One operator inside a fused kernel, as it was before legalization turned it into a
    PrimFunc: its attributes (strides, groups, axis, ...) and the shapes it reads and writes."""

    op: str
    attrs: dict[str, Any] = field(default_factory=dict)
    # Every tensor argument in call order, constants included.
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> "FusedOp":
        return cls(op=data["op"], attrs=data.get("attrs", {}),
                   inputs=[TensorSpec(**t) for t in data.get("inputs", [])],
                   outputs=[TensorSpec(**t) for t in data.get("outputs", [])])


@dataclass
class OpNode:
    """One operator (op level) or one fused kernel (fused level).

    Weights and constants are not nodes: as in NAR-Former V2 they are properties
    of the operator that consumes them, recorded here by shape.
    """

    op: str
    attrs: dict[str, Any] = field(default_factory=dict)
    inputs: list[TensorSpec] = field(default_factory=list)
    weights: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    flops: int = 0
    # Operators inside this node: [op] at op level, the fused ops at fused level.
    ops: list[str] = field(default_factory=list)
    # The kernel (PrimFunc) this node runs as, when known: joins per-kernel timings.
    kernel: str | None = None
    # Fused level: the operators of the kernel in order, each with its attributes and shapes
    # (empty at op level, and where the extraction did not see legalization). `attrs` is
    # then the anchor's, the op that dominates the kernel (its conv, matmul, pool...).
    fused: list[FusedOp] = field(default_factory=list)

    @property
    def params(self) -> int:
        return sum(numel(w.shape) for w in self.weights)

    @property
    def bytes(self) -> int:
        """Memory traffic if every operand is read once and every result written once,
        except that a gather reads no more of its source than it writes out."""
        # Inlined tensor_bytes: the tokenizer asks this of every node of every graph.
        operands = (*self.inputs, *self.weights)
        total = sum(int(math.prod(t.shape)) * DTYPE_BYTES.get(t.dtype, 4) for t in (*operands, *self.outputs))
        if self.op.removeprefix("relax.") in GATHER_OPS or not GATHER_OPS.isdisjoint(self.ops):
            total -= self._unread_gather_bytes(operands)
        return total

    def _unread_gather_bytes(self, operands) -> int:
        """Bytes of gathered-from operands that the gathers never read."""
        if self.fused:
            gathers = [(f.inputs[0], f.outputs[0]) for f in self.fused
                       if f.op in GATHER_OPS and f.inputs and f.outputs]
        elif self.outputs and operands:
            # Op level keeps no operand order; the source is the biggest operand (choosing
            # the indices instead is harmless: a gather writes at least one element per index).
            gathers = [(max(operands, key=lambda t: t.nbytes), self.outputs[0])]
        else:
            return 0
        unread = 0
        unmatched = list(operands)
        for source, out in gathers:
            # A source computed inside the fused kernel was never counted as node traffic.
            match = next((t for t in unmatched if t.shape == source.shape and t.dtype == source.dtype), None)
            if match is None:
                continue
            unmatched.remove(match)
            read = numel(out.shape) * DTYPE_BYTES.get(source.dtype, 4)
            unread += max(0, source.nbytes - read)
        return unread


@dataclass
class OpGraph:
    nodes: list[OpNode]
    edges: list[tuple[int, int]]
    level: str = "op"
    inputs: list[TensorSpec] = field(default_factory=list)
    name: str = ""
    # Provenance (source file, frontend, pipeline); excluded from the content hash.
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.edges = [(int(s), int(d)) for s, d in self.edges]
        self.validate()

    def validate(self) -> None:
        if self.level not in LEVELS:
            raise OpGraphError(f"unknown graph level {self.level!r}; expected one of {LEVELS}")
        n = len(self.nodes)
        for s, d in self.edges:
            if not (0 <= s < n and 0 <= d < n):
                raise OpGraphError(f"edge ({s}, {d}) refers to a node outside 0..{n - 1}")
            if s >= d:
                # Node order is topological by construction; a backward edge means a cycle
                # or a graph built out of order, and the tokenizer relies on the order.
                raise OpGraphError(f"edge ({s}, {d}) goes backwards: nodes must be in topological order")

    # ---- whole-graph statistics (NAR-Former V2's static features) ----
    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def flops(self) -> int:
        return sum(nd.flops for nd in self.nodes)

    @property
    def params(self) -> int:
        return sum(nd.params for nd in self.nodes)

    @property
    def memory_access(self) -> int:
        return sum(nd.bytes for nd in self.nodes)

    @property
    def batch(self) -> int:
        for t in self.inputs:
            if t.shape:
                return int(t.shape[0])
        return 1

    def op_counts(self) -> Counter:
        return Counter(nd.op for nd in self.nodes)

    def predecessors(self) -> list[list[int]]:
        preds: list[list[int]] = [[] for _ in self.nodes]
        for s, d in self.edges:
            preds[d].append(s)
        return preds

    def depth(self) -> int:
        """Length of the longest path, counted in nodes."""
        level = [1] * len(self.nodes)
        for s, d in sorted(self.edges, key=lambda e: e[1]):
            level[d] = max(level[d], level[s] + 1)
        return max(level, default=0)

    # ---- serialisation ----
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "name": self.name,
            "level": self.level,
            "inputs": [asdict(t) for t in self.inputs],
            "nodes": [_node_dict(nd) for nd in self.nodes],
            "edges": [list(e) for e in self.edges],
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "OpGraph":
        if not isinstance(data, dict) or data.get("format") not in READABLE_FORMATS:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise OpGraphError(f"not an OpGraph: format is {got!r}, expected one of {READABLE_FORMATS}")
        try:
            nodes = [
                OpNode(
                    op=nd["op"],
                    attrs=nd.get("attrs", {}),
                    inputs=[TensorSpec(**t) for t in nd.get("inputs", [])],
                    weights=[TensorSpec(**t) for t in nd.get("weights", [])],
                    outputs=[TensorSpec(**t) for t in nd.get("outputs", [])],
                    flops=int(nd.get("flops", 0)),
                    ops=list(nd.get("ops", [])),
                    kernel=nd.get("kernel"),
                    fused=[FusedOp.from_dict(f) for f in nd.get("fused", [])],
                )
                for nd in data["nodes"]
            ]
            return cls(
                nodes=nodes,
                edges=[tuple(e) for e in data["edges"]],
                level=data.get("level", "op"),
                inputs=[TensorSpec(**t) for t in data.get("inputs", [])],
                name=data.get("name", ""),
                meta=data.get("meta", {}),
            )
        except (KeyError, TypeError) as exc:
            raise OpGraphError(f"malformed OpGraph: {exc!r}") from exc

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> "OpGraph":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise OpGraphError(f"OpGraph JSON does not parse: {exc}") from exc
        return cls.from_dict(data)

    def content_hash(self) -> str:
        """Identifies the network, not where it came from: name and meta are left out."""
        body = self.to_dict()
        body.pop("name")
        body.pop("meta")
        body["format"] = _HASH_FORMAT
        for nd in body["nodes"]:
            nd.pop("kernel")  # kernel names carry arbitrary numeric suffixes
        canon = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:20]

    def summary(self) -> dict:
        return {
            "name": self.name,
            "level": self.level,
            "nodes": self.num_nodes,
            "edges": len(self.edges),
            "depth": self.depth(),
            "flops": self.flops,
            "params": self.params,
            "memory_access_bytes": self.memory_access,
            "batch": self.batch,
            "op_counts": dict(self.op_counts().most_common()),
            "hash": self.content_hash(),
        }


def _node_dict(node: OpNode) -> dict:
    out = asdict(node)
    if not out["fused"]:
        del out["fused"]  # op-level nodes serialise exactly as under /1
    return out
