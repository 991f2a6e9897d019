"""OpGraph -> token sequence, as NAR-Former V2's tokenizer.

Each node becomes one token: what it is (op-type one-hot, plus a multi-hot of the
operators fused into it) and how big it is (sinusoidal encodings of its numeric
attributes, output shape and cost). The graph structure is kept as a neighbour
list for the graph-aided attention mask, and whole-graph statistics become a
separate, normalised static-feature vector.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from nar_tvm.passes.opgraph import OpGraph, OpNode, numel

UNK = "<unk>"
STATE_FORMAT = "nar-tvm.tokenizer/1"
STATIC_FEATURES = ("batch", "flops", "params", "memory_access", "num_nodes", "depth")
# Spatial dims of the kernel window (kh, kw): conv1d fills one, conv3d's depth is dropped.
KERNEL_SLOTS = 2
COST_FEATURES = ("flops", "bytes", "params")
# Element-wise functions that evaluate a transcendental per element (fused ops may carry a
# "tir_" prefix). TVM's FLOP count gives them no cost, yet on a CPU each element is a scalar
# libm call worth tens of multiply-adds: a conv2d + sigmoid or matmul + erf kernel costs more
# than its FLOPs say. The order is the one kernel kinds are named in (nar_tvm.kernel_errors).
TRANSCENDENTALS = ("erf", "exp", "sigmoid", "tanh", "softmax", "log", "pow",
                   "log_softmax", "gelu", "gelu_tanh", "silu", "power")


def transcendental_evaluations(node: OpNode) -> int:
    """How many transcendental functions the node evaluates: each transcendental op's output
    elements. A fused kernel counts each fused op on its own output, because the tensor a
    transcendental runs on need not be the kernel's: a squeeze-excitation gate evaluates its
    sigmoid once per channel, then broadcasts it over the feature map the kernel writes, while
    a SiLU convolution evaluates one per output element. Nodes without the fused ops' shapes
    (op level, or graphs extracted without them) count every such op on the node's output."""
    if node.fused:
        return sum(numel(op.outputs[0].shape) for op in node.fused
                   if op.outputs and op.op.removeprefix("tir_") in TRANSCENDENTALS)
    per_element = sum(name.removeprefix("tir_") in TRANSCENDENTALS for name in node.ops or [node.op])
    return per_element * numel(node.outputs[0].shape) if per_element and node.outputs else 0


class Vocabulary:
    """Op-type names -> indices; index 0 is reserved for names never seen in training."""

    def __init__(self, names: Sequence[str] = (UNK,)):
        names = list(names)
        if not names or names[0] != UNK:
            raise ValueError(f"a vocabulary must start with {UNK!r}, got {names[:1]}")
        if len(set(names)) != len(names):
            raise ValueError("vocabulary names must be unique")
        self.names = names
        self.index = {name: i for i, name in enumerate(names)}

    @classmethod
    def fit(cls, graphs: Iterable[OpGraph]) -> "Vocabulary":
        seen: set[str] = set()
        for g in graphs:
            for nd in g.nodes:
                seen.add(nd.op)
                seen.update(nd.ops)
        seen.discard(UNK)
        # Sorted, so that the same training set gives the same vocabulary whatever its order.
        return cls([UNK, *sorted(seen)])

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: str) -> bool:
        return name in self.index

    def lookup(self, name: str) -> int:
        return self.index.get(name, 0)

    def to_list(self) -> list[str]:
        return list(self.names)


@dataclass
class TokenizerConfig:
    # Width of one scalar's sinusoidal encoding (sin/cos pairs), as in the paper.
    pe_dim: int = 8
    # Frequencies run geometrically from 1 down to pe_base**(-(k-1)/k) radians per unit of
    # log2 value; 100 keeps the slowest one monotone over the ~40 octaves of FLOP counts.
    pe_base: float = 100.0
    max_shape_dims: int = 4
    # Slots for the first input's shape (0: not encoded, as checkpoints before it have it).
    # Input against output shape tells a strided kernel from a same-size one even where a
    # fused node carries no operator attributes (graphs extracted before OpGraph /2).
    input_shape_dims: int = 0
    # Encode a fused node's attributes (its anchor op's strides, padding, groups, pool size)
    # in the attribute slots. States saved before the option existed were trained on fused
    # nodes without attributes and load with it off, so they tokenize as they were trained.
    fused_attrs: bool = True
    # Attribute key -> number of scalar slots it gets (values truncated / zero-padded).
    attr_slots: dict[str, int] = field(
        default_factory=lambda: {"strides": 2, "padding": 4, "dilation": 2, "groups": 1}
    )
    # A slot for the node's transcendental evaluations (transcendental_evaluations), which
    # the cost prior reads beside FLOPs and bytes. Off in states saved before the option existed.
    transcendentals: bool = False

    @classmethod
    def with_options(cls, transcendentals: bool = False, input_shapes: bool = False) -> "TokenizerConfig":
        """The config `--transcendentals` and `--input-shapes` ask for (the CLI's and the
        benchmarks' spelling); input shapes take four slots: N, C, H, W of a conv's data."""
        return cls(transcendentals=transcendentals, input_shape_dims=4 if input_shapes else 0)

    def __post_init__(self):
        if self.pe_dim < 2 or self.pe_dim % 2:
            raise ValueError(f"pe_dim must be a positive even number, got {self.pe_dim}")

    @property
    def num_scalars(self) -> int:
        """Scalar slots per node, each encoded into pe_dim features."""
        return (
            KERNEL_SLOTS + sum(self.attr_slots.values()) + 1  # + number of weights
            + self.input_shape_dims + self.max_shape_dims + self.transcendentals + len(COST_FEATURES)
        )


@dataclass
class GraphTokens:
    x: np.ndarray  # [N, D] float32 node tokens
    # [E, 2] int64 directed graph neighbours (src, dst), deduplicated. Kept sparse so that a
    # tokenised dataset costs O(E) memory; `adj` densifies on demand.
    edges: np.ndarray
    degree: np.ndarray  # [N, 2] int64 (in-degree, out-degree)
    static: np.ndarray  # [S] float32 normalised whole-graph features
    unknown_ops: int = 0  # nodes with an op (or a fused-in op) outside the vocabulary
    unknown_op_names: tuple[str, ...] = ()

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def adj(self) -> np.ndarray:
        """[N, N] bool graph-aided attention mask: predecessors, successors and self."""
        n = self.num_nodes
        adj = np.eye(n, dtype=bool)
        adj[self.edges[:, 0], self.edges[:, 1]] = True
        adj[self.edges[:, 1], self.edges[:, 0]] = True
        return adj


def sinusoidal(values: np.ndarray, dim: int, base: float) -> np.ndarray:
    """Transformer-style encoding of scalars: [..., dim] with interleaved sin/cos pairs."""
    k = dim // 2
    freqs = base ** (-np.arange(k) / k)
    angles = values[..., None] * freqs
    out = np.empty((*values.shape, dim), dtype=np.float32)
    out[..., 0::2] = np.sin(angles)
    out[..., 1::2] = np.cos(angles)
    return out


def log_scale(values):
    """Signed log2(1 + |v|): octaves are what matters for sizes that span 1 to 1e10."""
    return np.sign(values) * np.log2(1.0 + np.abs(values))


def _numbers(value: Any) -> list[float]:
    """Flatten an attribute value into its numeric leaves; strings and None carry no size."""
    if isinstance(value, (bool, int, float, np.number)):
        return [float(value)]
    if isinstance(value, (list, tuple)):
        try:  # the common case, a flat list of numbers, without a call per element
            return [float(v) for v in value]
        except (TypeError, ValueError):
            return [x for v in value for x in _numbers(v)]
    return []


def _fit(values: list[float], slots: int) -> list[float]:
    values = values[:slots]
    return values + [np.nan] * (slots - len(values))


def _kernel_window(node: OpNode, attrs: dict) -> list[float]:
    if "pool_size" in attrs:
        return _numbers(attrs["pool_size"])
    for w in node.weights:
        if len(w.shape) >= 3:  # conv weights; dense/bias weights have no window
            axes = [c.upper() for c in attrs.get("kernel_layout", "") if c.isalpha()]
            if len(axes) == len(w.shape):
                return [float(d) for c, d in zip(axes, w.shape) if c in "DHW"]
            return [float(d) for d in w.shape[2:]]  # OIHW-like default
    return []


def _shape(shape: Sequence[int], slots: int) -> list[float]:
    dims = [float(d) for d in shape]
    if len(dims) > slots:
        # Fold the excess trailing dims into the last slot so the element count survives.
        dims = dims[: slots - 1] + [float(np.prod(dims[slots - 1 :]))]
    return dims


class Tokenizer:
    def __init__(self, config: TokenizerConfig | None = None, vocab: Vocabulary | None = None,
                 static_mean: Sequence[float] | None = None, static_std: Sequence[float] | None = None):
        self.config = config or TokenizerConfig()
        self.vocab = vocab or Vocabulary()
        s = len(STATIC_FEATURES)
        self.static_mean = np.zeros(s) if static_mean is None else np.asarray(static_mean, dtype=np.float64)
        self.static_std = np.ones(s) if static_std is None else np.asarray(static_std, dtype=np.float64)

    # ---- fitting and state ----
    def fit(self, graphs: Sequence[OpGraph]) -> "Tokenizer":
        graphs = list(graphs)
        if not graphs:
            raise ValueError("cannot fit a tokenizer on zero graphs")
        self.vocab = Vocabulary.fit(graphs)
        raw = np.stack([self._raw_static(g, self._node_scalars(g)) for g in graphs])
        self.static_mean = raw.mean(axis=0)
        std = raw.std(axis=0)
        # A feature constant over the training set (e.g. batch size 1) must not blow up.
        self.static_std = np.where(std > 1e-6, std, 1.0)
        return self

    def state_dict(self) -> dict:
        return {
            "format": STATE_FORMAT,
            "config": asdict(self.config),
            "vocab": self.vocab.to_list(),
            "static_features": list(STATIC_FEATURES),
            "static_mean": [float(v) for v in self.static_mean],
            "static_std": [float(v) for v in self.static_std],
        }

    @classmethod
    def from_state(cls, state: dict) -> "Tokenizer":
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"tokenizer state format is {state.get('format')!r}, expected {STATE_FORMAT!r}")
        if list(state["static_features"]) != list(STATIC_FEATURES):
            raise ValueError(f"tokenizer state has static features {state['static_features']}, "
                             f"this code computes {list(STATIC_FEATURES)}")
        config = {"fused_attrs": False, **state["config"]}
        return cls(TokenizerConfig(**config), Vocabulary(state["vocab"]),
                   state["static_mean"], state["static_std"])

    # ---- layout ----
    @property
    def token_dim(self) -> int:
        return 2 * len(self.vocab) + self.config.num_scalars * self.config.pe_dim

    @property
    def static_dim(self) -> int:
        return len(STATIC_FEATURES)

    def layout(self) -> dict[str, tuple[int, int]]:
        """Feature name -> [start, stop) columns of a token."""
        c, v = self.config, len(self.vocab)
        widths = [("op_type", v), ("contained_ops", v), ("kernel", KERNEL_SLOTS)]
        widths += [(f"attr.{k}", n) for k, n in c.attr_slots.items()]
        widths += [("num_weights", 1)]
        if c.input_shape_dims:
            widths += [("input_shape", c.input_shape_dims)]
        widths += [("output_shape", c.max_shape_dims)]
        if c.transcendentals:
            widths += [("transcendentals", 1)]
        widths += [(name, 1) for name in COST_FEATURES]
        spans, start = {}, 0
        for name, width in widths:
            if name not in ("op_type", "contained_ops"):
                width *= c.pe_dim
            spans[name] = (start, start + width)
            start += width
        return spans

    def cost_decoding(self) -> dict:
        """Where a token holds its node's FLOPs and bytes so that a model can read them back.

        Each is encoded as sin/cos pairs of log2(1 + value); the slowest pair turns less than
        half a circle over the 40 octaves a count spans, so atan2 of that pair divided by its
        frequency is the log2 value itself. Returns the (sin, cos) columns of that pair for
        "flops" and "bytes" (and "transcendentals" when tokenized) and its frequency.
        """
        c, spans = self.config, self.layout()
        k = c.pe_dim // 2
        frequency = float(c.pe_base ** (-(k - 1) / k))
        names = ("flops", "bytes", "transcendentals") if c.transcendentals else ("flops", "bytes")
        columns = {name: [spans[name][0] + c.pe_dim - 2, spans[name][0] + c.pe_dim - 1] for name in names}
        return {"columns": columns, "frequency": frequency}

    # ---- encoding ----
    @staticmethod
    def _raw_static(graph: OpGraph, scalars: np.ndarray) -> np.ndarray:
        # The graph's flops / bytes / params are the sums of its nodes' (OpGraph defines
        # them so): read off the node columns instead of walking every tensor again.
        total = dict(zip(COST_FEATURES, scalars[:, -len(COST_FEATURES):].sum(axis=0)))
        return np.log1p(np.array([
            graph.batch, total["flops"], total["params"], total["bytes"], graph.num_nodes, graph.depth(),
        ], dtype=np.float64))

    def _node_scalars(self, graph: OpGraph) -> np.ndarray:
        """[N, num_scalars] numeric slots in token order; NaN marks an absent value."""
        rows = [self._scalars(nd) for nd in graph.nodes]
        return np.array(rows, dtype=np.float64).reshape(len(rows), self.config.num_scalars)

    def _scalars(self, node: OpNode) -> list[float]:
        # Runs once per node of every graph predicted: absent attributes skip _numbers.
        c = self.config
        attrs = node.attrs if c.fused_attrs or not node.fused else {}
        row = _fit(_kernel_window(node, attrs)[-KERNEL_SLOTS:], KERNEL_SLOTS)
        for key, slots in c.attr_slots.items():
            value = attrs.get(key)
            row += _fit(_numbers(value), slots) if value is not None else [np.nan] * slots
        row.append(float(len(node.weights)))
        if c.input_shape_dims:
            shape = node.inputs[0].shape if node.inputs else []
            row += _fit(_shape(shape, c.input_shape_dims), c.input_shape_dims)
        shape = node.outputs[0].shape if node.outputs else []
        row += _fit(_shape(shape, c.max_shape_dims), c.max_shape_dims)
        if c.transcendentals:
            row.append(float(transcendental_evaluations(node)))
        row += [float(getattr(node, name)) for name in COST_FEATURES]
        return row

    def encode(self, graph: OpGraph) -> GraphTokens:
        c, v = self.config, len(self.vocab)
        n = graph.num_nodes
        op_idx = np.fromiter((self.vocab.lookup(nd.op) for nd in graph.nodes), dtype=np.int64, count=n)
        contained = [(i, self.vocab.lookup(name)) for i, nd in enumerate(graph.nodes) for name in nd.ops]
        unknown: set[str] = set()
        unknown_nodes = 0
        for nd in graph.nodes:
            missing = [name for name in (nd.op, *nd.ops) if name not in self.vocab]
            unknown.update(missing)
            unknown_nodes += bool(missing)

        scalars = self._node_scalars(graph)
        present = ~np.isnan(scalars)
        pe = sinusoidal(log_scale(np.where(present, scalars, 0.0)), c.pe_dim, c.pe_base)
        # An absent value (an op without strides, a rank-2 output's missing dims) is all
        # zeros, which no present value encodes to: each of its sin/cos pairs has norm 1.
        pe *= present[..., None]

        x = np.zeros((n, 2 * v + c.num_scalars * c.pe_dim), dtype=np.float32)
        x[np.arange(n), op_idx] = 1.0
        if contained:
            rows, cols = np.array(contained, dtype=np.int64).T
            x[rows, v + cols] = 1.0
        x[:, 2 * v:] = pe.reshape(n, -1)

        edges = np.unique(np.array(graph.edges, dtype=np.int64).reshape(-1, 2), axis=0)
        degree = np.stack([
            np.bincount(edges[:, 1], minlength=n),
            np.bincount(edges[:, 0], minlength=n),
        ], axis=1).astype(np.int64)
        static = ((self._raw_static(graph, scalars) - self.static_mean) / self.static_std).astype(np.float32)
        return GraphTokens(x, edges, degree, static, unknown_nodes, tuple(sorted(unknown)))

    def encode_many(self, graphs: Iterable[OpGraph]) -> list[GraphTokens]:
        return [self.encode(g) for g in graphs]


def padded_size(items: Sequence[GraphTokens]) -> int:
    """Number of floats of the padded [B, N, D] token tensor `collate` builds for `items`."""
    return len(items) * max(max(t.num_nodes for t in items), 1) * items[0].x.shape[1]


class Collator:
    """`collate` into one reused token buffer, grown when a batch needs more (see collate).
    Each call's "x" is overwritten by the next call: use a batch before collating another."""

    def __init__(self):
        self._buffer = np.empty(0, dtype=np.float32)

    def __call__(self, items: Sequence[GraphTokens]) -> dict[str, torch.Tensor]:
        needed = padded_size(items)
        if needed > self._buffer.size:
            # Doubling keeps the re-allocations (and their page faults) to a handful per run.
            self._buffer = np.empty(max(needed, 2 * self._buffer.size), dtype=np.float32)
        return collate(items, self._buffer)


def collate(items: Sequence[GraphTokens], x_buffer: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """Pad a list of graphs to the largest one; `mask` is True on real nodes.

    `x_buffer` (float32, at least `padded_size(items)` elements) holds the padded tokens
    instead of a fresh array, and the returned "x" is a view of it: reusing one buffer
    over many batches saves the page faults of a new multi-MB allocation per batch,
    which cost more than the copy itself.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    b = len(items)
    sizes = np.array([t.num_nodes for t in items])
    n = max(int(sizes.max()), 1)
    d = items[0].x.shape[1]

    if x_buffer is None:
        x = np.zeros((b, n, d), dtype=np.float32)
    else:
        if x_buffer.dtype != np.float32 or x_buffer.size < b * n * d:
            raise ValueError(f"x_buffer must be float32 with at least {b * n * d} elements, "
                             f"got {x_buffer.dtype} with {x_buffer.size}")
        x = x_buffer.reshape(-1)[: b * n * d].reshape(b, n, d)
    degree = np.zeros((b, n, 2), dtype=np.int64)
    adj = np.zeros((b, n, n), dtype=bool)
    for i, (t, size) in enumerate(zip(items, sizes)):
        x[i, :size] = t.x
        if x_buffer is not None:
            x[i, size:] = 0.0
        degree[i, :size] = t.degree
        adj[i, :size, :size] = t.adj
    mask = np.arange(n)[None, :] < sizes[:, None]

    return {
        "x": torch.from_numpy(x),
        "adj": torch.from_numpy(adj),
        "degree": torch.from_numpy(degree),
        "static": torch.from_numpy(np.stack([t.static for t in items])),
        "mask": torch.from_numpy(mask),
    }
