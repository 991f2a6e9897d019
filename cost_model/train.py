"""Training NAR-Former V2 on measured latencies."""
from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass, field, replace
from typing import Sequence

import numpy as np
import torch
from torch import nn

from nar_tvm.passes.opgraph import OpGraph

from .architectures import build_model, state_width
from .fit import deterministic, fit
from .metrics import mape, regression_report
from .model import NARFormerV2Config, start_at_constant
from .predictor import LatencyPredictor
from .tokenizer import Collator, Tokenizer

# "rse" is the paper's relative squared error (+ "sr", its shuffled relative term);
# "log_mse" is squared error on log-latency, which treats over- and under-prediction by
# the same factor alike and keeps its gradient where RSE's fades (see rse_loss).
LOSSES = ("rse", "rse+sr", "log_mse")


@dataclass
class TrainConfig:
    """The defaults are the validated recipe (recipes.TRAINING): lr from the latency report's
    validation search, and a budget of 120 epochs because shorter runs were all still
    improving on validation."""
    epochs: int = 120
    batch_size: int = 32
    lr: float = 3e-3
    warmup_fraction: float = 0.1
    weight_decay: float = 0.0
    seed: int = 0
    loss: str = "log_mse"
    sr_weight: float = 0.1
    # Each run of this many random batches is re-cut by graph size, so that a batch's
    # graphs are alike in size and padding them to the largest wastes little compute
    # (attention's cost grows with the square of it). 1: plain random batches.
    size_bucket_batches: int = 8
    # Epochs without a better validation MAPE before stopping; None trains all epochs.
    patience: int | None = 30
    device: str = "cpu"

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.size_bucket_batches < 1:
            raise ValueError("epochs, batch_size and size_bucket_batches must be positive")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")


@dataclass
class TrainHistory:
    init_val_mape: float  # of the initial model: the best constant predictor
    best_val_mape: float
    best_epoch: int = 0  # 0: no epoch beat the initial model
    epochs: list[dict] = field(default_factory=list)  # epoch, lr, train_loss, val_mape
    stopped_early: bool = False


def rse_loss(log_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """NAR-Former V2's relative squared error ((pred - y) / y)^2, from log predictions."""
    return (torch.exp(log_pred - torch.log(y)) - 1.0).square().mean()


def log_mse_loss(log_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared error of log-latency: (log(pred / y))^2, symmetric in the ratio."""
    return (log_pred - torch.log(y)).square().mean()


def sr_loss(log_pred: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shuffled relative loss: pair each sample with a shuffled partner and ask the
    predicted difference within the pair to match the measured one (L1).

    The paper takes differences of raw targets; with latencies spanning orders of
    magnitude that is dominated by the slowest networks, so the differences here are
    of log-latency, i.e. the pair's latency ratio, scale-free like the RSE term.
    """
    perm = torch.randperm(len(y), generator=generator).to(y.device)
    log_y = torch.log(y)
    return ((log_pred - log_pred[perm]) - (log_y - log_y[perm])).abs().mean()


def _best_constant_log_ms(y: np.ndarray, loss: str) -> float:
    """The constant log-latency that minimises the loss's main term on the training targets."""
    if loss == "log_mse":
        return float(np.log(y).mean())
    return float(np.log((1 / y).sum() / (1 / y ** 2).sum()))


def _epoch_batches(rng: np.random.Generator, sizes: np.ndarray, n_batches: int, bucket: int) -> list[np.ndarray]:
    order = rng.permutation(len(sizes))
    if bucket == 1:
        return np.array_split(order, n_batches)
    bounds = np.linspace(0, len(order), n_batches + 1).round().astype(int)
    batches = []
    for first in range(0, n_batches, bucket):
        window = order[bounds[first]:bounds[min(first + bucket, n_batches)]]
        window = window[np.argsort(sizes[window], kind="stable")]
        batches += np.array_split(window, min(bucket, n_batches - first))
    # Otherwise every window would go from its small graphs to its large ones.
    return [batches[i] for i in rng.permutation(len(batches))]


def _targets(graphs: Sequence[OpGraph], targets, what: str) -> np.ndarray:
    y = np.asarray(targets, dtype=np.float64).reshape(-1)
    if len(y) != len(graphs):
        raise ValueError(f"{what}: {len(graphs)} graphs but {len(y)} targets")
    if len(y) == 0:
        raise ValueError(f"{what}: no samples")
    if not np.all(np.isfinite(y) & (y > 0)):
        raise ValueError(f"{what}: latencies must be positive and finite")
    return y


def _node_log_ms(graph: OpGraph, times) -> np.ndarray:
    """log ms of each node's kernel as measured (NaN where unknown), in node order."""
    if times is None:
        return np.full(graph.num_nodes, np.nan)
    if len(times) != graph.num_nodes:
        raise ValueError(f"graph {graph.name!r}: {len(times)} node times for {graph.num_nodes} nodes")
    ms = np.array([np.nan if t is None else t for t in times], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ms > 0, np.log(ms), np.nan)


def _pad(rows: list[np.ndarray], width: int) -> torch.Tensor:
    out = torch.full((len(rows), width), float("nan"))
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.from_numpy(r)
    return out


def train(
    train_graphs: Sequence[OpGraph],
    train_targets,
    val_graphs: Sequence[OpGraph],
    val_targets,
    model_cfg=None,
    train_cfg: TrainConfig | None = None,
    tokenizer: Tokenizer | None = None,
    progress: bool = True,
    node_weight: float = 0.0,
    node_targets: Sequence[Sequence[float | None] | None] | None = None,
) -> tuple[LatencyPredictor, TrainHistory]:
    """Fit a latency predictor (targets in ms); the model kept is the one with the best
    validation MAPE. `model_cfg` picks the network, a NARFormerV2Config (the default) or
    a baselines.NNLPConfig, so that every neural model shares this loop, loss and early
    stopping. A tokenizer without a vocabulary (or None) is fitted, in place, on the
    training graphs; a fitted one is used as it is.

    `node_weight` > 0 adds an auxiliary loss on measured per-kernel times, `node_targets`:
    per training graph, the ms of each node's kernel in node order (None for a node or a
    whole graph without a measurement; dataset.Sample.node_ms gives them for fused graphs).
    A per-node output learns each node's kernel log-time, so node states carry cost, not
    only the graph total. The auxiliary output is dropped after training; predictions come
    from the graph readout. With `node_weight` 0 the kernel times are not used.
    """
    train_cfg = train_cfg or TrainConfig()
    train_cfg.validate()
    y_train = _targets(train_graphs, train_targets, "training set")
    y_val = _targets(val_graphs, val_targets, "validation set")

    tokenizer = tokenizer or Tokenizer()
    if len(tokenizer.vocab) <= 1:
        tokenizer.fit(train_graphs)
    train_tokens = tokenizer.encode_many(train_graphs)
    val_tokens = tokenizer.encode_many(val_graphs)
    model_cfg = replace(model_cfg or NARFormerV2Config(),
                        token_dim=tokenizer.token_dim, static_dim=tokenizer.static_dim)
    if getattr(model_cfg, "cost_prior", None) is not None:
        model_cfg = replace(model_cfg, cost_prior=_cost_prior(tokenizer, train_tokens))
    if node_weight < 0:
        raise ValueError(f"node_weight must be >= 0, got {node_weight}")
    node_log_ms = None
    if node_weight > 0:
        if node_targets is None or len(node_targets) != len(train_graphs):
            got = "none" if node_targets is None else len(node_targets)
            raise ValueError(f"node_weight > 0 needs node_targets for each of the {len(train_graphs)} "
                             f"training graphs, got {got}")
        node_log_ms = [_node_log_ms(g, t) for g, t in zip(train_graphs, node_targets)]
        if not any(np.isfinite(t).any() for t in node_log_ms):
            raise ValueError("node_weight > 0 but node_targets hold no kernel time")

    device = torch.device(train_cfg.device)
    rng = np.random.default_rng(train_cfg.seed)
    n_batches = -(-len(train_tokens) // train_cfg.batch_size)
    sizes = np.array([t.num_nodes for t in train_tokens])

    with deterministic(train_cfg.seed):
        model = build_model(model_cfg).to(device)
        if node_log_ms is not None and getattr(model, "kernel_head", None) is None:
            model.node_out = nn.Linear(state_width(model_cfg), 1).to(device)
        # Start every graph at the constant that minimises the training loss. The RSE
        # bounds the penalty for under-prediction, so through exp() its gradient fades
        # for graphs predicted far too fast; from a higher start (random, or the
        # geometric mean) the small graphs' huge over-prediction errors push all
        # predictions down into that flat region and training stalls.
        start_at_constant(model, _best_constant_log_ms(y_train, train_cfg.loss), float(sizes.mean()))
        predictor = LatencyPredictor(tokenizer, model)
        shuffle_gen = torch.Generator().manual_seed(train_cfg.seed)
        collate_reused = Collator()  # each batch is done with (backward included) before the next

        def batch_loss(batch_idx):
            batch = {k: v.to(device) for k, v in collate_reused([train_tokens[i] for i in batch_idx]).items()}
            y = torch.as_tensor(y_train[batch_idx], dtype=torch.float32, device=device)
            if node_log_ms is None:
                log_pred = model(**batch)
            else:
                log_pred, node_pred = model.forward_with_nodes(**batch)
            loss = log_mse_loss(log_pred, y) if train_cfg.loss == "log_mse" else rse_loss(log_pred, y)
            if train_cfg.loss == "rse+sr":
                loss = loss + train_cfg.sr_weight * sr_loss(log_pred, y, shuffle_gen)
            terms = {}
            if node_log_ms is not None:
                target = _pad([node_log_ms[i] for i in batch_idx], node_pred.shape[1]).to(device)
                known = torch.isfinite(target)
                if known.any():
                    node_loss = (node_pred[known] - target[known]).square().mean()
                    terms["node_loss"] = node_loss.item()
                    loss = loss + node_weight * node_loss
            return loss, terms

        init_val_mape = mape(predictor.predict_tokens(val_tokens), y_val)
        fitted = fit(model, lambda: _epoch_batches(rng, sizes, n_batches, train_cfg.size_bucket_batches),
                     batch_loss, epochs=train_cfg.epochs, steps_per_epoch=n_batches, lr=train_cfg.lr,
                     weight_decay=train_cfg.weight_decay, warmup_fraction=train_cfg.warmup_fraction,
                     evaluate=lambda: mape(predictor.predict_tokens(val_tokens), y_val),
                     initial_score=init_val_mape, patience=train_cfg.patience, score_name="val_mape",
                     progress="train" if progress else None)
        history = TrainHistory(init_val_mape=init_val_mape, best_val_mape=fitted.best_score,
                               best_epoch=fitted.best_epoch, epochs=fitted.history,
                               stopped_early=fitted.stopped_early)
        model.node_out = None
        predictor.provenance = {
            "trainer": "nar_tvm.cost_model.train",
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch_version": str(torch.__version__),
            "train_config": asdict(train_cfg),
            "n_train": len(train_tokens),
            "n_val": len(val_tokens),
            "epochs_run": len(history.epochs),
            "best_epoch": history.best_epoch,
            "val_report": regression_report(predictor.predict_tokens(val_tokens), y_val),
        }
    return predictor, history


def _cost_prior(tokenizer, tokens) -> dict:
    """The cost prior's decoding, centred on the training nodes' mean log cost so that the
    model starts where it would without the prior (start_at_constant)."""
    from .model import TRANSCENDENTAL_COST, node_log_cost

    prior = tokenizer.cost_decoding()
    if "transcendentals" in prior["columns"]:
        prior["transcendental_cost"] = TRANSCENDENTAL_COST
    x = torch.from_numpy(np.concatenate([t.x for t in tokens]))[None]
    return {**prior, "offset": float(node_log_cost(x, prior).mean())}
