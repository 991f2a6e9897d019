"""The latency predictors NAR-Former V2 is compared against, behind one interface.

Every method here, and NAR-Former V2 itself through `NeuralRegressor`, is fitted with
`fit(train_graphs, y, val_graphs, y_val)` (latencies in ms; validation is used only for
model selection) and answers `predict(graphs)` with latencies in ms, so that an
evaluation treats them all alike:

* `LogLinear`: least squares on log-latency from log FLOPs (and log memory access), the
  roofline-style estimate a cost model has to beat.
* `GradientBoostedTrees`: xgboost on whole-graph features (op-type counts, FLOPs,
  parameters, memory access, depth, node count), the kind of model MetaSchedule uses.
* `NNLP`: two GraphSAGE layers with mean aggregation, sum pooling and static features,
  the GNN NAR-Former V2 is compared against on NNLQP. It is trained by `train.train`,
  sharing its loss, optimiser and early stopping with the Transformers.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from nar_tvm.passes.opgraph import OpGraph

from .nnlp import NNLP, NNLPConfig  # noqa: F401  (re-exported: a baseline of this module)
from .train import TrainConfig, train


class LatencyRegressor(Protocol):
    def fit(self, train_graphs: Sequence[OpGraph], y, val_graphs: Sequence[OpGraph], y_val) -> "LatencyRegressor":
        ...

    def predict(self, graphs: Sequence[OpGraph]) -> np.ndarray:
        ...


def _log_targets(graphs: Sequence[OpGraph], y) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if len(y) != len(graphs):
        raise ValueError(f"{len(graphs)} graphs but {len(y)} targets")
    if not np.all(np.isfinite(y) & (y > 0)):
        raise ValueError("latencies must be positive and finite")
    return np.log(y)


# ------------------------------------------------------------------ linear
LINEAR_FEATURES = ("flops", "memory_access", "params", "num_nodes")


class LogLinear:
    """log(ms) = a + sum_k b_k log(feature_k): a power law in each feature.

    No hyper-parameters, so the validation set is not needed.
    """

    def __init__(self, features: Sequence[str] = ("flops",)):
        unknown = set(features) - set(LINEAR_FEATURES)
        if unknown or not features:
            raise ValueError(f"features must be a non-empty subset of {LINEAR_FEATURES}, got {list(features)}")
        self.features = tuple(features)
        self.coef: np.ndarray | None = None

    def _design(self, graphs: Sequence[OpGraph]) -> np.ndarray:
        cols = [[np.log(max(float(getattr(g, f)), 1.0)) for f in self.features] for g in graphs]
        return np.hstack([np.ones((len(graphs), 1)), np.array(cols, dtype=np.float64).reshape(len(graphs), -1)])

    def fit(self, train_graphs, y, val_graphs=None, y_val=None) -> "LogLinear":
        self.coef, *_ = np.linalg.lstsq(self._design(train_graphs), _log_targets(train_graphs, y), rcond=None)
        return self

    def predict(self, graphs: Sequence[OpGraph]) -> np.ndarray:
        if self.coef is None:
            raise RuntimeError("fit() first")
        return np.exp(self._design(graphs) @ self.coef)


# ------------------------------------------------------------------- trees
def whole_graph_features(graph: OpGraph, op_types: Sequence[str]) -> np.ndarray:
    """Counts of each op type (as node type and as fused-in op), then log sizes and shape."""
    counts = dict.fromkeys(op_types, 0)
    for nd in graph.nodes:
        for name in {nd.op, *nd.ops}:
            if name in counts:
                counts[name] += 1
    sizes = [graph.flops, graph.params, graph.memory_access, graph.batch]
    return np.array([*counts.values(), *np.log1p(sizes), graph.depth(), graph.num_nodes], dtype=np.float64)


class GradientBoostedTrees:
    """xgboost regression of log-latency; the number of trees is chosen on validation."""

    def __init__(self, max_rounds: int = 2000, learning_rate: float = 0.05, max_depth: int = 4,
                 early_stopping_rounds: int = 100, seed: int = 0):
        self.max_rounds = max_rounds
        self.early_stopping_rounds = early_stopping_rounds
        self.params = dict(objective="reg:squarederror", eta=learning_rate, max_depth=max_depth,
                           subsample=0.8, colsample_bytree=0.8, seed=seed, nthread=1, tree_method="hist")
        self.op_types: list[str] = []
        self.booster = None

    def _matrix(self, graphs: Sequence[OpGraph]) -> np.ndarray:
        return np.stack([whole_graph_features(g, self.op_types) for g in graphs])

    def fit(self, train_graphs, y, val_graphs, y_val) -> "GradientBoostedTrees":
        import xgboost

        self.op_types = sorted({name for g in train_graphs for nd in g.nodes for name in (nd.op, *nd.ops)})
        dtrain = xgboost.DMatrix(self._matrix(train_graphs), label=_log_targets(train_graphs, y))
        dval = xgboost.DMatrix(self._matrix(val_graphs), label=_log_targets(val_graphs, y_val))
        self.booster = xgboost.train(self.params, dtrain, num_boost_round=self.max_rounds,
                                     evals=[(dval, "val")], early_stopping_rounds=self.early_stopping_rounds,
                                     verbose_eval=False)
        return self

    @property
    def best_iteration(self) -> int:
        return int(self.booster.best_iteration)

    def predict(self, graphs: Sequence[OpGraph]) -> np.ndarray:
        import xgboost

        if self.booster is None:
            raise RuntimeError("fit() first")
        # Only the trees up to the best validation round; those after it overfit.
        log_ms = self.booster.predict(xgboost.DMatrix(self._matrix(graphs)),
                                      iteration_range=(0, self.best_iteration + 1))
        return np.exp(log_ms.astype(np.float64))


# ------------------------------------------------------------------ neural
class NeuralRegressor:
    """A network trained by train.train (NAR-Former V2 and its variants, or NNLP)."""

    def __init__(self, model_cfg=None, train_cfg: TrainConfig | None = None, progress: bool = False,
                 node_weight: float = 0.0):
        self.model_cfg = model_cfg
        self.train_cfg = train_cfg or TrainConfig()
        self.progress = progress
        self.node_weight = node_weight
        self.predictor = None
        self.history = None

    def fit(self, train_graphs, y, val_graphs, y_val, node_targets=None) -> "NeuralRegressor":
        """`node_targets`: the training graphs' kernel times, used with a `node_weight` (train.train)."""
        self.predictor, self.history = train(train_graphs, y, val_graphs, y_val, model_cfg=self.model_cfg,
                                             train_cfg=self.train_cfg, progress=self.progress,
                                             node_weight=self.node_weight, node_targets=node_targets)
        return self

    def predict(self, graphs: Sequence[OpGraph]) -> np.ndarray:
        if self.predictor is None:
            raise RuntimeError("fit() first")
        return self.predictor.predict(list(graphs)).latency_ms
