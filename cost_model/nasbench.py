"""NAS-Bench-201 on the learning side: cell tokens, tables, and the accuracy and latency protocols.

A cell is tokenised as NAR-Former V2 does for cell search spaces: its six edge operations
become nodes between an input and an output node (8 tokens, fixed order), and the cell
DAG gives the graph edges that the graph-aided attention follows. The same NARFormerV2
network used for whole-network latency reads these tokens; for accuracy, `CellNARFormer`
adds the paper's multi-layer feature fusion as a switch (`AccuracyConfig.fusion`) and
`CellEnsemble` averages independently trained members (`AccuracyConfig.ensemble`).

Two views of a cell, because accuracy and latency see different things:
- `prune_dead=True` (accuracy): an edge that cannot change the cell's output (a `none`,
  or any op leaving a node cut off from the input or entering a node the output does not
  depend on) is a `none` token with no graph edges, so cells that compute the same function
  tokenise identically.
- `prune_dead=False` (latency): NAS-Bench-201's reference network runs every edge,
  `none` included (a multiply by zero), so every token keeps its DAG edges.
Either way, when the edge between the two intermediate nodes is `none` they can be swapped
without changing the cell; the tokenizer picks one of the two labelings canonically, which
makes the model exactly invariant to that isomorphism (the consistency the papers encourage
with a loss holds by construction).

Tables are CSVs keyed by `arch_index`; the cell strings come from a `cell` column, from
another table joined on `arch_index`, or both. Nothing here imports tvm.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn


from .architectures import make_config
from .checkpoint import CheckpointError, read_payload, write_payload
from .nb201_space import DEFAULT_DATA_DIR, NB201_OPS, open_table, parse_nb201_cell  # noqa: F401
from .metrics import acc_within, kendall_tau, mape, spearman
from .model import NARFormerV2, NARFormerV2Config
from .tokenizer import GraphTokens, collate, sinusoidal
from .fit import deterministic, eval_mode, fit

# (source node, target node) of the six edges, in the order the cell string lists them.
CELL_EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NODE_TYPES = ("input", *NB201_OPS, "output")
NUM_TOKENS = len(CELL_EDGES) + 2
LIVE_OPS = tuple(op for op in NB201_OPS if op != "none")
# Static features: live-op counts, then conv depth along the deepest and the shallowest
# input->output path, the number of such paths, and whether any exists at all.
STATIC_FEATURES = (*(f"n_{op}" for op in LIVE_OPS), "max_convs", "min_convs", "n_paths", "connected")
ACCURACY_LABEL = "cifar10_valid_val_acc"
ACCURACY_EVAL_LABEL = "cifar10_test_acc"
CHECKPOINT_FORMAT = "nar-tvm.nasbench201-predictor"
# Version 2: the network is a CellEnsemble (fusion and member count stored); version 1
# checkpoints (one plain NARFormerV2) still load, as a one-member ensemble.
CHECKPOINT_VERSION = 2
FEWSHOT_FORMAT = "nar-tvm.nasbench201-fewshot-latency"
FEWSHOT_VERSION = 1


class NasBenchDataError(ValueError):
    """A table that is missing, lacks a column, or has values the protocol cannot use."""


# ------------------------------------------------------------------------------ cells
def cell_ops(cell: str) -> tuple[str, ...]:
    """The six edge ops of a cell string, in CELL_EDGES order."""
    nodes = parse_nb201_cell(cell)
    edges = {(src, dst): op for dst, inc in enumerate(nodes, start=1) for op, src in inc}
    if len(nodes) != 3 or sorted(edges) != sorted(CELL_EDGES):
        raise ValueError(f"{cell!r} is not a NAS-Bench-201 cell: it needs 3 nodes with incoming edges "
                         "from every earlier node")
    return tuple(edges[e] for e in CELL_EDGES)


def ops_to_cell(ops: Sequence[str]) -> str:
    parts = ["|".join(f"{op}~{src}" for op, (src, d) in zip(ops, CELL_EDGES) if d == dst)
             for dst in (1, 2, 3)]
    return "+".join(f"|{p}|" for p in parts)


def prune_dead(ops: Sequence[str]) -> tuple[str, ...]:
    """Edges that cannot change the output become `none`."""
    reach_in = [True, False, False, False]
    for (src, dst), op in zip(CELL_EDGES, ops):
        reach_in[dst] |= op != "none" and reach_in[src]
    reach_out = [False, False, False, True]
    for (src, dst), op in reversed(list(zip(CELL_EDGES, ops))):
        reach_out[src] |= op != "none" and reach_out[dst]
    return tuple(op if reach_in[src] and reach_out[dst] else "none"
                 for (src, dst), op in zip(CELL_EDGES, ops))


# Swapping intermediate nodes 1 and 2 maps edge i to edge _SWAP[i]; valid when 1->2 is none.
_SWAP = (1, 0, 2, 3, 5, 4)


def canonical_ops(ops: Sequence[str]) -> tuple[str, ...]:
    ops = tuple(ops)
    if ops[2] != "none":
        return ops
    return min(ops, tuple(ops[_SWAP[i]] for i in range(6)))


def _paths(ops: Sequence[str]) -> list[int]:
    """Conv count along each input->output path of non-none edges."""
    paths_to = {0: [0]}
    for node in (1, 2, 3):
        paths_to[node] = [c + op.startswith("nor_conv") for (src, dst), op in zip(CELL_EDGES, ops)
                          if dst == node and op != "none" for c in paths_to[src]]
    return paths_to[3]


def live_op_counts(ops: Sequence[str]) -> list[int]:
    """How many of the six edges run each op of LIVE_OPS."""
    return [sum(op == name for op in ops) for name in LIVE_OPS]


def cell_static_features(ops: Sequence[str]) -> np.ndarray:
    # Fixed scales (6 edges, at most 3 convs and 4 paths in series/parallel) instead of
    # statistics of a training set: a 156-cell sample would give noisy ones.
    paths = _paths(ops)
    counts = [c / 6.0 for c in live_op_counts(ops)]
    return np.array(counts + [
        max(paths, default=0) / 3.0, min(paths, default=0) / 3.0, len(paths) / 4.0, float(bool(paths)),
    ], dtype=np.float32)


@dataclass
class CellTokenizerConfig:
    prune_dead: bool = True
    canonical: bool = True
    # Width of each sinusoidal position code (token slot, source node, target node).
    pe_dim: int = 8


class CellTokenizer:
    """Cell string -> 8-token GraphTokens: input, the six edge ops, output.

    Token features: node-type one-hot (input, the five ops, output) followed by sinusoidal
    codes of the token's slot and of the cell nodes its edge leaves and enters (the input
    token counts as leaving node 0, the output token as entering node 3).
    """

    def __init__(self, config: CellTokenizerConfig | None = None):
        self.config = config or CellTokenizerConfig()
        if self.config.pe_dim < 2 or self.config.pe_dim % 2:
            raise ValueError(f"pe_dim must be a positive even number, got {self.config.pe_dim}")
        pe = self.config.pe_dim
        ends = [(0, 0), *CELL_EDGES, (3, 3)]
        pos = np.array([[i, s, d] for i, (s, d) in enumerate(ends)], dtype=np.float64)
        # Positions are small integers: base 10 spreads 8 slots over distinct angles.
        self._position = sinusoidal(pos, pe, 10.0).reshape(NUM_TOKENS, 3 * pe)

    @property
    def token_dim(self) -> int:
        return len(NODE_TYPES) + 3 * self.config.pe_dim

    @property
    def static_dim(self) -> int:
        return len(STATIC_FEATURES)

    def view(self, cell: str) -> tuple[str, ...]:
        """The six ops this tokenizer encodes for `cell` (after pruning and canonical relabeling)."""
        ops = cell_ops(cell)
        if self.config.prune_dead:
            ops = prune_dead(ops)
        return canonical_ops(ops) if self.config.canonical else ops

    def graph_edges(self, ops: Sequence[str]) -> list[tuple[int, int]]:
        """Token-level (src, dst) edges: data flowing out of one op token into another."""
        skip = (lambda op: op == "none") if self.config.prune_dead else (lambda op: False)
        tok = {e: i + 1 for i, e in enumerate(CELL_EDGES)}
        out_token = NUM_TOKENS - 1
        edges = []
        for e, op in zip(CELL_EDGES, ops):
            if skip(op):
                continue
            src, dst = e
            if src == 0:
                edges.append((0, tok[e]))
            edges += [(tok[f], tok[e]) for f, fop in zip(CELL_EDGES, ops) if f[1] == src and not skip(fop)]
            if dst == 3:
                edges.append((tok[e], out_token))
        return sorted(edges)

    def encode(self, cell: str) -> GraphTokens:
        ops = self.view(cell)
        types = ["input", *ops, "output"]
        x = np.zeros((NUM_TOKENS, self.token_dim), dtype=np.float32)
        x[np.arange(NUM_TOKENS), [NODE_TYPES.index(t) for t in types]] = 1.0
        x[:, len(NODE_TYPES):] = self._position
        edges = np.array(self.graph_edges(ops), dtype=np.int64).reshape(-1, 2)
        degree = np.stack([np.bincount(edges[:, 1], minlength=NUM_TOKENS),
                           np.bincount(edges[:, 0], minlength=NUM_TOKENS)], axis=1).astype(np.int64)
        return GraphTokens(x, edges, degree, cell_static_features(ops))

    def encode_many(self, cells: Sequence[str]) -> list[GraphTokens]:
        # 15,625 cells map to a few thousand distinct views: encode each view once.
        cache: dict[tuple[str, ...], GraphTokens] = {}
        out = []
        for cell in cells:
            view = self.view(cell)
            if view not in cache:
                cache[view] = self.encode(cell)
            out.append(cache[view])
        return out

    def batch(self, cells: Sequence[str]) -> dict[str, torch.Tensor]:
        """All cells collated into one batch: every cell has 8 tokens, so no padding is wasted."""
        return collate(self.encode_many(cells))


# ----------------------------------------------------------------------------- tables
@dataclass
class NB201Table:
    """Rows of a NAS-Bench-201 table: arch indices, cell strings and numeric columns."""
    path: str
    arch_index: np.ndarray  # [N] int64
    cells: list[str]
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [N] float64

    def __len__(self) -> int:
        return len(self.arch_index)

    def column(self, name: str) -> np.ndarray:
        if name not in self.columns:
            raise NasBenchDataError(f"{self.path}: no column {name!r}; columns present: "
                                    f"{', '.join(self.columns) or '(none)'}")
        return self.columns[name]

    def device_columns(self) -> list[str]:
        return [c for c in self.columns if c.endswith("_ms")]


def _read_csv(path: str | os.PathLike) -> tuple[list[str], list[dict]]:
    path = Path(path)
    if not path.is_file():
        raise NasBenchDataError(f"{path}: no such file")
    with open_table(path) as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        header = list(reader.fieldnames or [])
    if not rows:
        raise NasBenchDataError(f"{path}: no data rows (header: {', '.join(header) or '(empty)'})")
    return header, rows


def _require(path, header: Sequence[str], needed: Sequence[str]) -> None:
    missing = [c for c in needed if c not in header]
    if missing:
        raise NasBenchDataError(f"{path}: missing column(s) {', '.join(missing)}; "
                                f"columns present: {', '.join(header)}")


def load_table(path: str | os.PathLike, columns: Sequence[str] | None = None,
               cells_from: str | os.PathLike | None = None) -> NB201Table:
    """Read `arch_index`, the cells and numeric `columns` (default: every other column).

    Cells come from the file's own `cell` column when it has one, else from `cells_from`
    (a table with `arch_index` and `cell`), joined on arch_index.
    """
    header, rows = _read_csv(path)
    _require(path, header, ["arch_index"])
    if columns is None:
        columns = [c for c in header if c not in ("arch_index", "cell")]
    _require(path, header, list(columns))
    try:
        arch = np.array([int(r["arch_index"]) for r in rows], dtype=np.int64)
    except ValueError as exc:
        raise NasBenchDataError(f"{path}: arch_index must be integers ({exc})") from exc
    if len(np.unique(arch)) != len(arch):
        raise NasBenchDataError(f"{path}: arch_index has duplicates")
    values = {}
    for c in columns:
        try:
            values[c] = np.array([float(r[c]) for r in rows], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise NasBenchDataError(f"{path}: column {c!r} is not numeric ({exc})") from exc

    if "cell" in header:
        cells = [r["cell"] for r in rows]
    elif cells_from is not None:
        cell_header, cell_rows = _read_csv(cells_from)
        _require(cells_from, cell_header, ["arch_index", "cell"])
        by_index = {int(r["arch_index"]): r["cell"] for r in cell_rows}
        absent = [int(a) for a in arch if int(a) not in by_index]
        if absent:
            raise NasBenchDataError(f"{cells_from}: no cell for arch_index {absent[:5]} "
                                    f"({len(absent)} of the rows of {path})")
        cells = [by_index[int(a)] for a in arch]
    else:
        raise NasBenchDataError(f"{path}: no 'cell' column and no table to take cells from "
                                f"(columns present: {', '.join(header)})")
    for i, c in enumerate(cells):
        try:
            cell_ops(c)
        except ValueError as exc:
            raise NasBenchDataError(f"{path}: row {i + 1}: {exc}") from exc
    return NB201Table(str(path), arch, cells, values)


# ------------------------------------------------------------------- shared training
def _standard(y: np.ndarray) -> tuple[float, float]:
    std = float(y.std())
    return float(y.mean()), std if std > 1e-12 else 1.0


LABEL_TRANSFORMS = ("standard", "normal_scores")


def label_targets(y: np.ndarray, transform: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training targets for labels `y`, and knots (score, label) of the increasing
    piecewise-linear map from the model's scores back to label units.

    "normal_scores" trains on the normal quantiles of the labels' ranks: accuracies have a
    long tail of broken cells (10% against ~90%), which under a plain MSE would outweigh
    the ordering of the crowded top that Kendall tau mostly counts.
    """
    y = np.asarray(y, dtype=np.float64)
    if transform == "standard":
        m, s = _standard(y)
        return (y - m) / s, np.array([-1.0, 1.0]), np.array([m - s, m + s])
    if transform == "normal_scores":
        t = stats.norm.ppf((stats.rankdata(y) - 0.5) / len(y))
        knots, inverse = np.unique(t, return_inverse=True)
        labels = np.bincount(inverse, weights=y) / np.bincount(inverse)
        if len(knots) < 2:
            raise ValueError("normal-score targets need at least two distinct labels")
        return t, knots, labels
    raise ValueError(f"label transform must be one of {LABEL_TRANSFORMS}, got {transform!r}")


def scores_to_labels(scores: np.ndarray, knots: np.ndarray, labels: np.ndarray) -> np.ndarray:
    # Linear beyond the outer knots (with the overall slope), so that the order of scores
    # outside the training range survives: clipping would tie them.
    slope = (labels[-1] - labels[0]) / (knots[-1] - knots[0])
    out = np.interp(scores, knots, labels)
    out = np.where(scores < knots[0], labels[0] + (scores - knots[0]) * slope, out)
    return np.where(scores > knots[-1], labels[-1] + (scores - knots[-1]) * slope, out)


def _take(batch: dict[str, torch.Tensor], idx) -> dict[str, torch.Tensor]:
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    return {k: v[idx] for k, v in batch.items()}


def _predict(model: nn.Module, batch: dict[str, torch.Tensor], chunk: int = 4096) -> np.ndarray:
    n = batch["x"].shape[0]
    with eval_mode(model), torch.no_grad():
        out = [model(**_take(batch, np.arange(s, min(n, s + chunk)))) for s in range(0, n, chunk)]
    return torch.cat(out).double().numpy()


def pairwise_rank_loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Logistic loss on every ordered pair of the batch: the predicted order should match."""
    diff = pred[:, None] - pred[None, :]
    sign = torch.sign(y[:, None] - y[None, :])
    pairs = sign != 0
    if not pairs.any():
        return pred.sum() * 0.0
    return F.softplus(-sign[pairs] * diff[pairs]).mean()


FUSIONS = ("last", "sum", "concat")


class CellNARFormer(NARFormerV2):
    """NARFormerV2 with NAR-Former V2's multi-layer feature fusion for cells.

    `fusion="last"` is NARFormerV2 unchanged (the readout sees the last block's node
    states). "sum" and "concat" read out every block's node states, each through its own
    LayerNorm and pooled over the cell: "sum" adds the pooled vectors (readout width
    d_model), "concat" concatenates them (width n_layers * d_model, so the head's first
    layer is wider). Shallow blocks see a token's near neighbourhood, deep ones the whole
    cell; fusing them keeps both in the readout.
    """

    def __init__(self, cfg: NARFormerV2Config, fusion: str = "last"):
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        super().__init__(cfg)
        self.fusion = fusion
        if fusion == "last":
            return
        d = cfg.d_model
        # The last block keeps norm_out; the earlier ones get their own.
        self.norm_layers = nn.ModuleList(nn.LayerNorm(d) for _ in range(cfg.n_layers - 1))
        if fusion == "concat":
            self.head[0] = nn.Linear(self.readout_width + (d if cfg.use_static else 0), cfg.head_hidden)

    @property
    def readout_width(self) -> int:
        """Width of the pooled node states the head reads (before the static features)."""
        return self.cfg.d_model * (self.cfg.n_layers if self.fusion == "concat" else 1)

    def forward(self, x: torch.Tensor, adj: torch.Tensor, degree: torch.Tensor,
                static: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.fusion == "last":
            return super().forward(x, adj, degree, static, mask)
        states = self.block_states(x, adj, degree, mask)
        pooled = [self.pool(h, norm, mask) for h, norm in zip(states, [*self.norm_layers, self.norm_out])]
        out = torch.cat(pooled, dim=-1) if self.fusion == "concat" else torch.stack(pooled).sum(dim=0)
        return self.regress(out, static, mask)


class CellEnsemble(nn.Module):
    """Independently initialised (and independently early-stopped) members; the score is
    their mean. One member is a plain CellNARFormer behind a wrapper."""

    def __init__(self, cfg: NARFormerV2Config, fusion: str = "last", members: int = 1):
        super().__init__()
        if members < 1:
            raise ValueError(f"an ensemble needs at least one member, got {members}")
        self.cfg, self.fusion = cfg, fusion
        self.members = nn.ModuleList(CellNARFormer(cfg, fusion) for _ in range(members))

    def forward(self, **batch) -> torch.Tensor:
        return torch.stack([m(**batch) for m in self.members]).mean(dim=0)


def _fit(model: nn.Module, batch: dict[str, torch.Tensor], y: np.ndarray, loss_fn: Callable,
         *, epochs: int, batch_size: int, lr: float, weight_decay: float, seed: int,
         warmup_fraction: float = 0.05, evaluate: Callable[[nn.Module], float] | None = None) -> list[dict]:
    """Train `model` in place with fit.fit on plain random batches of the collated cells;
    with `evaluate` (higher is better), keep its best epoch. Records: epoch, train_loss, val."""
    n = len(y)
    rng = np.random.default_rng(seed)
    n_batches = max(1, -(-n // batch_size))
    y_t = torch.as_tensor(y, dtype=torch.float32)
    result = fit(model, lambda: np.array_split(rng.permutation(n), n_batches),
                 lambda idx: loss_fn(model(**_take(batch, idx)), y_t[idx]),
                 epochs=epochs, steps_per_epoch=n_batches, lr=lr, weight_decay=weight_decay,
                 warmup_fraction=warmup_fraction, evaluate=None if evaluate is None else lambda: evaluate(model),
                 maximize=True)
    return [{k: r[k] for k in ("epoch", "train_loss", "val") if k in r} for r in result.history]


# --------------------------------------------------------------------------- accuracy
@dataclass
class AccuracyConfig:
    model: NARFormerV2Config = field(default_factory=lambda: NARFormerV2Config(
        d_model=32, n_layers=2, n_heads=4, ffn_ratio=4, ffn_groups=4, head_hidden=32,
        dropout=0.1, layer_scale_init=0.1, readout="sum"))
    tokenizer: CellTokenizerConfig = field(default_factory=CellTokenizerConfig)
    # Optimiser steps (epochs follow), but at least `min_epochs` passes over the training set:
    # 6,000 steps is 1,200 epochs of 156 cells, and 245 epochs is 12,005 steps of 1,563 cells
    # (both chosen on validation tau). `epochs` overrides both.
    steps: int = 6000
    min_epochs: int = 245
    epochs: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    rank_weight: float = 1.0
    label_transform: str = "normal_scores"
    val_size: int = 200
    # Readout over the last block only ("last") or every block's node states ("sum", "concat").
    fusion: str = "last"
    # Independently initialised members, each early-stopped on the validation rows; scores averaged.
    ensemble: int = 1


class CellPredictor:
    """Tokenizer + network + the label's standardisation: cells in, label units out."""

    def __init__(self, tokenizer: CellTokenizer, model: CellEnsemble, label: str,
                 knots: np.ndarray, labels: np.ndarray, provenance: dict | None = None):
        self.tokenizer, self.model, self.label = tokenizer, model, label
        self.knots, self.labels = np.asarray(knots, dtype=np.float64), np.asarray(labels, dtype=np.float64)
        self.provenance = dict(provenance or {})

    def predict(self, cells: Sequence[str]) -> np.ndarray:
        return scores_to_labels(_predict(self.model, self.tokenizer.batch(cells)), self.knots, self.labels)

    def save(self, path: str | os.PathLike) -> Path:
        payload = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "model_config": asdict(self.model.cfg), "tokenizer": asdict(self.tokenizer.config),
            "fusion": self.model.fusion, "members": len(self.model.members),
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "label": self.label, "knots": self.knots.tolist(), "labels": self.labels.tolist(),
            "provenance": self.provenance,
        }
        return write_payload(payload, path, ("model_config", "tokenizer", "provenance"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CellPredictor":
        path = Path(path)
        payload = read_payload(path, CHECKPOINT_FORMAT, (1, CHECKPOINT_VERSION))
        try:
            model_cfg = make_config("nar-former-v2", payload.get("model_config", {}))
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        try:
            model = CellEnsemble(model_cfg, payload.get("fusion", "last"), int(payload.get("members", 1)))
            state = payload["state_dict"]
            if payload["version"] == 1:
                state = {f"members.0.{k}": v for k, v in state.items()}
            model.load_state_dict(state)
            tokenizer = CellTokenizer(CellTokenizerConfig(**payload["tokenizer"]))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: config and weights do not fit together: {exc}") from exc
        model.eval()
        return cls(tokenizer, model, payload["label"], payload["knots"], payload["labels"],
                   payload.get("provenance"))


def protocol_split(n: int, train_size: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `train_size` rows of a seeded permutation train; the next `val_size` validate."""
    if train_size < 2 or train_size + val_size > n:
        raise NasBenchDataError(f"train size {train_size} + validation size {val_size} does not fit in {n} rows "
                         "(and training needs at least 2)")
    perm = np.random.default_rng(seed).permutation(n)
    return perm[:train_size], perm[train_size:train_size + val_size]


def train_accuracy_predictor(cells: Sequence[str], y: np.ndarray, val_cells: Sequence[str],
                             val_y: np.ndarray, label: str, cfg: AccuracyConfig | None = None,
                             seed: int = 0) -> tuple[CellPredictor, list[dict]]:
    """Fit on (cells, y); keep the epoch with the best validation Kendall tau.

    With `cfg.ensemble` > 1, each member is initialised and shuffled with its own seed and
    keeps its own best epoch; the history is the concatenation of the members' histories
    (each record names its member) and `val_kendall_tau` is the ensemble's."""
    cfg = cfg or AccuracyConfig()
    tokenizer = CellTokenizer(cfg.tokenizer)
    targets, knots, labels = label_targets(y, cfg.label_transform)
    batch = tokenizer.batch(cells)
    val_batch = tokenizer.batch(val_cells)
    model_cfg = replace(cfg.model, token_dim=tokenizer.token_dim, static_dim=tokenizer.static_dim)

    def loss_fn(pred, target):
        return F.mse_loss(pred, target) + cfg.rank_weight * pairwise_rank_loss(pred, target)

    epochs = cfg.epochs or max(1, cfg.min_epochs, math.ceil(cfg.steps / math.ceil(len(targets) / cfg.batch_size)))
    with deterministic(seed):
        model = CellEnsemble(model_cfg, cfg.fusion, cfg.ensemble)
    history, best_epochs = [], []
    for k, member in enumerate(model.members):
        member_seed = seed + 1000 * k  # member 0: the single model's seed
        with deterministic(member_seed):
            if k:
                member.load_state_dict(CellNARFormer(model_cfg, cfg.fusion).state_dict())
            h = _fit(member, batch, targets, loss_fn, epochs=epochs,
                     batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=member_seed,
                     evaluate=lambda m: kendall_tau(_predict(m, val_batch), val_y))
        history += [{**r, "member": k} for r in h]
        best_epochs.append(max(h, key=lambda r: r["val"])["epoch"])
    model.eval()
    val_tau = kendall_tau(_predict(model, val_batch), val_y)
    return CellPredictor(tokenizer, model, label, knots, labels, {
        "n_train": len(y), "n_val": len(val_y), "seed": seed,
        "best_epoch": best_epochs[0] if len(best_epochs) == 1 else best_epochs,
        "val_kendall_tau": val_tau}), history


def accuracy_protocol(table: NB201Table, label: str, eval_label: str, train_size: int, seed: int,
                      cfg: AccuracyConfig | None = None) -> tuple[CellPredictor, dict]:
    """The paper's protocol on one seed: train on `label`, select on 200 validation rows,
    report Kendall tau against `eval_label` over every row of the table."""
    cfg = cfg or AccuracyConfig()
    y, y_eval = table.column(label), table.column(eval_label)
    tr, va = protocol_split(len(table), train_size, cfg.val_size, seed)
    predictor, _ = train_accuracy_predictor([table.cells[i] for i in tr], y[tr],
                                            [table.cells[i] for i in va], y[va], label, cfg, seed)
    pred = predictor.predict(table.cells)
    return predictor, {
        "seed": seed, "train_size": train_size, "best_epoch": predictor.provenance["best_epoch"],
        "val_kendall_tau": predictor.provenance["val_kendall_tau"],
        "kendall_tau": kendall_tau(pred, y_eval), "spearman": spearman(pred, y_eval),
    }


# ---------------------------------------------------------------------------- latency
@dataclass
class LatencyConfig:
    model: NARFormerV2Config = field(default_factory=lambda: NARFormerV2Config(
        d_model=32, n_layers=2, n_heads=4, ffn_ratio=2, ffn_groups=4, head_hidden=32,
        dropout=0.0, layer_scale_init=0.1, readout="sum"))
    tokenizer: CellTokenizerConfig = field(default_factory=lambda: CellTokenizerConfig(prune_dead=False))
    # From-scratch training on one device: optimiser steps, whatever the training-set size.
    steps: int = 600
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-3
    # Multi-device pretraining: optimiser steps, whatever the number of architectures.
    # Chosen on HELP's meta-validation devices against 400 (benchmarks/nasbench201_report.md).
    pretrain_steps: int = 2000
    pretrain_batch_size: int = 128
    rank: int = 8
    # Prior strengths (noise variance / prior variance) tried when fitting a new device's
    # embedding, chosen by leave-one-out on its shots.
    ridge_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    # Weights of the pretrained prediction against the shots-only op-cost model, in log space,
    # chosen by leave-one-out on the shots; (1.0,) keeps the pretrained prediction alone.
    shot_mixes: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


def latency_metrics(pred_ms, true_ms) -> dict[str, float]:
    return {"mape": mape(pred_ms, true_ms), "acc@10%": acc_within(pred_ms, true_ms, 0.10),
            "spearman": spearman(pred_ms, true_ms)}


def _positive(y, what: str) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if not np.all(np.isfinite(y) & (y > 0)):
        raise NasBenchDataError(f"{what}: latencies must be positive and finite")
    return y


def train_latency_predictor(cells: Sequence[str], y_ms, cfg: LatencyConfig | None = None,
                            seed: int = 0) -> Callable[[Sequence[str]], np.ndarray]:
    """One device from scratch: NARFormerV2 on log-latency for a fixed number of steps.

    No early stopping: with 10 measurements there is nothing to hold out, so every
    training-set size gets the same schedule. Returns cells -> predicted ms.
    """
    cfg = cfg or LatencyConfig()
    log_y = np.log(_positive(y_ms, "training latencies"))
    mean, std = _standard(log_y)
    tokenizer = CellTokenizer(cfg.tokenizer)
    batch_size = min(cfg.batch_size, len(log_y))
    epochs = max(1, round(cfg.steps / -(-len(log_y) // batch_size)))
    with deterministic(seed):
        model = NARFormerV2(replace(cfg.model, token_dim=tokenizer.token_dim, static_dim=tokenizer.static_dim))
        _fit(model, tokenizer.batch(cells), (log_y - mean) / std, F.mse_loss, epochs=epochs,
             batch_size=batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=seed)
    return lambda new_cells: np.exp(_predict(model, tokenizer.batch(new_cells)) * std + mean)


class MultiDeviceModel(nn.Module):
    """NARFormerV2 encoder to a `rank`-dim architecture code z; device d predicts
    standardised log-latency z . e_d + b_d with a learned device embedding e_d."""

    def __init__(self, cfg: NARFormerV2Config, n_devices: int, rank: int):
        super().__init__()
        self.encoder = NARFormerV2(cfg)
        self.encoder.head[-1] = nn.Linear(cfg.head_hidden, rank)
        self.embedding = nn.Embedding(n_devices, rank)
        self.bias = nn.Parameter(torch.zeros(n_devices))

    def code(self, **batch) -> torch.Tensor:
        return self.encoder(**batch)

    def forward(self, **batch) -> torch.Tensor:
        return self.code(**batch) @ self.embedding.weight.T + self.bias


def op_counts(cells: Sequence[str]) -> np.ndarray:
    """[cells, live ops]: how many of a cell's six edges run each op other than `none`."""
    return np.array([live_op_counts(cell_ops(c)) for c in cells], dtype=np.float64)


@dataclass
class OpCostModel:
    """Latency as a fixed cost plus a non-negative cost per op of each kind, fitted on one
    device's measurements alone.

    NAS-Bench-201's network stacks the same cell, and every edge of a cell works on tensors of
    one shape, so an op costs about the same whichever edge it sits on, and the network's
    latency is close to additive in the op counts on every device of the public table. It
    needs no other device, so it stays sound on a target unlike every pretraining device,
    where the pretrained prior can only reach the directions those devices span."""
    base_ms: float
    op_ms: np.ndarray  # [len(LIVE_OPS)]

    @classmethod
    def fit(cls, counts: np.ndarray, y_ms: np.ndarray) -> "OpCostModel":
        from scipy.optimize import nnls

        design = np.hstack([np.ones((len(counts), 1)), counts])
        w, _ = nnls(design, np.asarray(y_ms, dtype=np.float64))
        return cls(float(w[0]), w[1:])

    def log_ms(self, counts: np.ndarray) -> np.ndarray:
        # All-zero costs (possible with few, odd shots) would give log(0): floor at a microsecond.
        return np.log(np.maximum(self.base_ms + counts @ self.op_ms, 1e-3))


@dataclass
class DeviceHead:
    """A device fitted on few measurements: log ms = mix * (intercept + z . weight)
    + (1 - mix) * the op-cost model's log ms."""
    intercept: float
    weight: np.ndarray
    ridge: float
    op_costs: OpCostModel | None = None
    mix: float = 1.0


class FewShotLatencyModel:
    """Pretrained on fully measured devices; adapts to a new one from a few measurements."""

    def __init__(self, tokenizer: CellTokenizer, model: MultiDeviceModel, devices: list[str],
                 log_mean: np.ndarray, log_std: np.ndarray, cfg: LatencyConfig):
        self.tokenizer, self.model, self.devices = tokenizer, model, devices
        self.log_mean, self.log_std, self.cfg = log_mean, log_std, cfg
        self._codes: dict[str, np.ndarray] = {}

    @classmethod
    def pretrain(cls, cells: Sequence[str], y_ms: np.ndarray, devices: Sequence[str],
                 cfg: LatencyConfig | None = None, seed: int = 0) -> "FewShotLatencyModel":
        """`y_ms`: [cells, devices] latencies of every pretraining device on every cell."""
        cfg = cfg or LatencyConfig()
        log_y = np.log(_positive(y_ms, "pretraining latencies"))
        if log_y.ndim != 2 or log_y.shape != (len(cells), len(devices)):
            raise ValueError(f"y_ms has shape {log_y.shape}, expected ({len(cells)}, {len(devices)})")
        mean, std = log_y.mean(axis=0), log_y.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        tokenizer = CellTokenizer(cfg.tokenizer)
        with deterministic(seed):
            model = MultiDeviceModel(replace(cfg.model, token_dim=tokenizer.token_dim,
                                             static_dim=tokenizer.static_dim), len(devices), cfg.rank)
            batch_size = min(cfg.pretrain_batch_size, len(cells))
            epochs = max(1, math.ceil(cfg.pretrain_steps / math.ceil(len(cells) / batch_size)))
            _fit(model, tokenizer.batch(cells), (log_y - mean) / std, F.mse_loss,
                 epochs=epochs, batch_size=batch_size, lr=cfg.lr,
                 weight_decay=cfg.weight_decay, seed=seed)
        return cls(tokenizer, model, list(devices), mean, std, cfg)

    def save(self, path: str | os.PathLike) -> Path:
        """The pretrained model, so that the shots designed with it and the adaptation to
        them use the same codes (a design is specific to the model it was made for)."""
        payload = {
            "format": FEWSHOT_FORMAT, "version": FEWSHOT_VERSION,
            "model_config": asdict(self.model.encoder.cfg), "tokenizer": asdict(self.tokenizer.config),
            "rank": self.cfg.rank, "ridge_grid": list(self.cfg.ridge_grid), "shot_mixes": list(self.cfg.shot_mixes),
            "pretrain_steps": self.cfg.pretrain_steps, "devices": list(self.devices),
            "log_mean": self.log_mean.tolist(), "log_std": self.log_std.tolist(),
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
        }
        return write_payload(payload, path, ("model_config", "tokenizer", "devices", "log_mean", "log_std"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FewShotLatencyModel":
        path = Path(path)
        payload = read_payload(path, FEWSHOT_FORMAT, (FEWSHOT_VERSION,))
        try:
            model_cfg = make_config("nar-former-v2", payload["model_config"])
            tokenizer = CellTokenizer(CellTokenizerConfig(**payload["tokenizer"]))
            cfg = LatencyConfig(model=model_cfg, tokenizer=tokenizer.config, rank=int(payload["rank"]),
                                pretrain_steps=int(payload["pretrain_steps"]),
                                ridge_grid=tuple(payload["ridge_grid"]), shot_mixes=tuple(payload["shot_mixes"]))
            model = MultiDeviceModel(model_cfg, len(payload["devices"]), cfg.rank)
            model.load_state_dict(payload["state_dict"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: config and weights do not fit together: {exc}") from exc
        model.eval()
        return cls(tokenizer, model, list(payload["devices"]), np.asarray(payload["log_mean"]),
                   np.asarray(payload["log_std"]), cfg)

    def codes(self, cells: Sequence[str]) -> np.ndarray:
        missing = [c for c in dict.fromkeys(cells) if c not in self._codes]
        if missing:
            batch = self.tokenizer.batch(missing)
            with torch.no_grad():
                self.model.eval()
                z = torch.cat([self.model.code(**_take(batch, np.arange(s, min(len(missing), s + 4096))))
                               for s in range(0, len(missing), 4096)]).double().numpy()
            self._codes.update(zip(missing, z))
        return np.stack([self._codes[c] for c in cells])

    def device_prior(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and a square root of the covariance of the pretraining devices' embeddings,
        in log ms: a new device is expected to look like one more draw from them."""
        e = self.model.embedding.weight.detach().double().numpy() * self.log_std[:, None]
        mean = e.mean(axis=0)
        cov = np.cov(e, rowvar=False).reshape(len(mean), len(mean))
        # A little isotropic spread, so that directions no pretraining device varied in stay reachable.
        cov += 1e-2 * np.trace(cov) / len(mean) * np.eye(len(mean)) + 1e-12 * np.eye(len(mean))
        return mean, np.linalg.cholesky(cov)

    def design_shots(self, cells: Sequence[str], shots: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Which `shots` of `cells` to measure on a new device (sorted row indices), and the rest.

        `adapt_prior` fits the device by linear regression on the architecture codes in the
        prior's whitened coordinates, so the measurements that pin its embedding down best are
        those whose codes span those coordinates: a greedy D-optimal design, each step adding the
        cell of highest leverage given the cells already chosen (intercept included). A random
        sample bunches where most architectures are and leaves directions in which devices differ
        unmeasured. No target measurement is used; `seed` picks the first cell.
        Cost: `shots` passes over the cells' codes (a second for all of NAS-Bench-201).
        """
        n = len(cells)
        _check_shots(n, shots)
        z = self.codes(cells)
        _, root = self.device_prior()
        x = np.hstack([np.ones((n, 1)), (z - z.mean(axis=0)) @ root])
        chosen = [int(np.random.default_rng(seed).integers(n))]
        # The small ridge keeps the information matrix invertible while fewer cells than
        # dimensions are chosen.
        information = 1e-3 * np.eye(x.shape[1]) + np.outer(x[chosen[0]], x[chosen[0]])
        for _ in range(shots - 1):
            leverage = np.einsum("ij,jk,ik->i", x, np.linalg.inv(information), x)
            leverage[chosen] = -np.inf
            pick = int(np.argmax(leverage))
            chosen.append(pick)
            information += np.outer(x[pick], x[pick])
        learn = np.sort(chosen)
        return learn, np.setdiff1d(np.arange(n), learn)

    def adapt(self, cells: Sequence[str], y_ms, mixes: Sequence[float] | None = None) -> DeviceHead:
        """Fit a new device from its shots: the pretrained prior's embedding (`adapt_prior`),
        the shots-only `OpCostModel`, and the weight between them (from `mixes`, default
        `cfg.shot_mixes`) with the lowest leave-one-out squared log error on the shots."""
        mixes = tuple(self.cfg.shot_mixes if mixes is None else mixes)
        y_ms = _positive(y_ms, "adaptation latencies")
        head = self.adapt_prior(cells, y_ms)
        if mixes == (1.0,):
            return head
        if len(y_ms) < 4:
            raise ValueError("choosing between the pretrained and the op-cost model needs at least 4 "
                             "measurements (each left out in turn, the prior fits on the others)")
        log_y, counts = np.log(y_ms), op_counts(cells)
        loo_prior, loo_costs = np.empty(len(y_ms)), np.empty(len(y_ms))
        for i in range(len(y_ms)):
            keep = np.arange(len(y_ms)) != i
            held = self.adapt_prior([c for c, k in zip(cells, keep) if k], y_ms[keep])
            loo_prior[i] = held.intercept + self.codes([cells[i]])[0] @ held.weight
            loo_costs[i] = OpCostModel.fit(counts[keep], y_ms[keep]).log_ms(counts[[i]])[0]
        errors = [np.mean((a * loo_prior + (1 - a) * loo_costs - log_y) ** 2) for a in mixes]
        head.mix = float(mixes[int(np.argmin(errors))])
        head.op_costs = OpCostModel.fit(counts, y_ms)
        return head

    def adapt_prior(self, cells: Sequence[str], y_ms) -> DeviceHead:
        """Fit a new device's embedding by Bayesian linear regression on the architecture
        codes: prior from the pretraining devices' embeddings, intercept free, prior strength
        chosen by leave-one-out error on the shots themselves."""
        log_y = np.log(_positive(y_ms, "adaptation latencies"))
        k = len(log_y)
        if k < 3:
            raise ValueError("adaptation needs at least 3 measurements")
        z = self.codes(cells)
        w0, root = self.device_prior()
        # In whitened coordinates u (w = w0 + root @ u) the prior is isotropic: plain ridge.
        # Centering removes the free intercept.
        zw = (z - z.mean(axis=0)) @ root
        r = log_y - z @ w0
        rc = r - r.mean()
        best = None
        for lam in self.cfg.ridge_grid:
            a = zw.T @ zw + lam * np.eye(zw.shape[1])
            u = np.linalg.solve(a, zw.T @ rc)
            leverage = np.einsum("ij,ji->i", zw, np.linalg.solve(a, zw.T)) + 1.0 / k  # + the intercept's
            loo = float(np.mean(((rc - zw @ u) / np.clip(1.0 - leverage, 1e-6, None)) ** 2))
            if best is None or loo < best[0]:
                best = (loo, lam, u)
        _, lam, u = best
        w = w0 + root @ u
        return DeviceHead(float(np.mean(log_y - z @ w)), w, lam)

    def device_head(self, device: str) -> DeviceHead:
        """The head of a pretraining device, in log ms."""
        d = self.devices.index(device)
        e = self.model.embedding.weight[d].detach().double().numpy()
        b = float(self.model.bias[d].detach())
        return DeviceHead(float(self.log_mean[d] + self.log_std[d] * b), self.log_std[d] * e, 0.0)

    def predict(self, head: DeviceHead, cells: Sequence[str]) -> np.ndarray:
        log_ms = head.intercept + self.codes(cells) @ head.weight
        if head.op_costs is not None and head.mix < 1.0:
            log_ms = head.mix * log_ms + (1.0 - head.mix) * head.op_costs.log_ms(op_counts(cells))
        return np.exp(log_ms)


def _check_shots(n: int, shots: int) -> None:
    if not 0 < shots < n:
        raise NasBenchDataError(f"{shots} shots out of {n} rows leaves nothing to learn from or to test on")


def shots_split(n: int, shots: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`shots` rows of a seeded permutation to learn from, every other row to test on."""
    _check_shots(n, shots)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:shots]), np.sort(perm[shots:])


def device_selection(pred_ms: np.ndarray, true_ms: np.ndarray) -> dict[str, float]:
    """Per architecture (row), pick the device (column) predicted fastest; compare with the
    measured fastest. Regret: how much slower the pick is, as a fraction of the best."""
    pred_ms, true_ms = np.asarray(pred_ms, dtype=np.float64), np.asarray(true_ms, dtype=np.float64)
    if pred_ms.shape != true_ms.shape or pred_ms.ndim != 2:
        raise ValueError(f"pred {pred_ms.shape} and true {true_ms.shape} must be the same [archs, devices]")
    rows = np.arange(len(true_ms))
    pick, best = pred_ms.argmin(axis=1), true_ms.argmin(axis=1)
    regret = true_ms[rows, pick] / true_ms[rows, best] - 1.0
    return {"top1": float((pick == best).mean()), "mean_regret": float(regret.mean()),
            "max_regret": float(regret.max())}
