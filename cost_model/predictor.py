"""A trained cost model ready to use: tokenizer + network + what it was trained for."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from nar_tvm.passes.opgraph import OpGraph

from .fit import eval_mode
from .tokenizer import Collator, GraphTokens, Tokenizer


@dataclass
class PredictionResult:
    latency_ms: np.ndarray  # [G] float64
    # Per graph: nodes whose op type the model never saw in training. Their tokens fall
    # back to the unknown slot, so a non-zero count means the prediction is extrapolated.
    unknown_ops: np.ndarray  # [G] int64
    unknown_op_names: list[tuple[str, ...]] = field(default_factory=list)
    # The nominal 90% interval (uncertainty.py) and whether the graph is unlike the training
    # data; None where the checkpoint carries no interval fit.
    low_ms: np.ndarray | None = None
    high_ms: np.ndarray | None = None
    novel: np.ndarray | None = None
    # How far each graph's size lies outside the training graphs' (Uncertainty.size_factor):
    # 1 inside; a prediction for a graph outside is extrapolated and flagged novel.
    size_factor: np.ndarray | None = None


class LatencyPredictor:
    """`model` is any network of `architectures` (batched tokens in, log ms out)."""

    def __init__(self, tokenizer: Tokenizer, model: nn.Module,
                 platform: dict | None = None, provenance: dict | None = None):
        self.tokenizer = tokenizer
        self.model = model
        # Where the training latencies were measured (target, device, TVM version...):
        # a latency model only holds for the platform it was trained on.
        self.platform = dict(platform or {})
        self.provenance = dict(provenance or {})

    @property
    def calibration(self) -> dict | None:
        """The machine calibration this predictor carries (calibration.py), if any."""
        return self.provenance.get("calibration")

    @property
    def uncertainty(self):
        from .uncertainty import Uncertainty

        state = self.provenance.get("uncertainty")
        if state is None:
            return None
        if getattr(self, "_uncertainty_state", None) is not state:
            self._uncertainty, self._uncertainty_state = Uncertainty.from_state(state), state
        return self._uncertainty

    def predict(self, graphs: Sequence[OpGraph] | OpGraph, batch_size: int = 256,
                max_batch_nodes: int = 4096) -> PredictionResult:
        if isinstance(graphs, OpGraph):
            graphs = [graphs]
        graphs = list(graphs)
        tokens = self.tokenizer.encode_many(graphs)
        calibration = self.calibration
        if calibration:
            from .calibration import calibrated_log_ms

            latency_ms = np.exp(calibrated_log_ms(self, graphs, tokens, calibration))
        else:
            latency_ms = self.predict_tokens(tokens, batch_size, max_batch_nodes)
        result = PredictionResult(
            latency_ms=latency_ms,
            unknown_ops=np.array([t.unknown_ops for t in tokens], dtype=np.int64),
            unknown_op_names=[t.unknown_op_names for t in tokens],
        )
        uncertainty = self.uncertainty
        if uncertainty is not None:
            distance = uncertainty.novelty(graphs, self.tokenizer.vocab)
            result.size_factor = uncertainty.size_factor(graphs)
            result.novel = (result.unknown_ops > 0) | (distance > uncertainty.threshold) | (result.size_factor != 1.0)
            q = uncertainty.half_widths(result.novel)
            if calibration:
                # The shots' leave-one-out residuals: how well this machine is predicted.
                q = np.maximum(q, calibration.get("q", 0.0))
            result.low_ms, result.high_ms = latency_ms * np.exp(-q), latency_ms * np.exp(q)
        return result

    @property
    def predicts_kernels(self) -> bool:
        """Whether the model's latency is a sum of per-node kernel times (readout "kernels")."""
        return getattr(self.model, "kernel_head", None) is not None

    @torch.no_grad()
    def predict_kernels(self, graph: OpGraph) -> np.ndarray:
        """Predicted ms of each node's kernel, in node order: the terms the latency adds up."""
        if not self.predicts_kernels:
            raise ValueError("this model predicts whole graphs only; per-kernel times need readout='kernels'")
        with eval_mode(self.model) as device:
            batch = {k: v.to(device) for k, v in Collator()(self.tokenizer.encode_many([graph])).items()}
            kernels = self.model.forward_with_nodes(**batch).node_log_ms
        return np.exp(kernels[0, :graph.num_nodes].double().cpu().numpy())

    @torch.no_grad()
    def predict_tokens(self, tokens: Sequence[GraphTokens], batch_size: int = 256,
                       max_batch_nodes: int = 4096) -> np.ndarray:
        """Latency (ms) of already tokenised graphs, in their order.

        One forward pass per chunk of at most `batch_size` graphs and, unless a single
        graph is larger, `max_batch_nodes` padded nodes.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        log_ms = np.empty(len(tokens), dtype=np.float64)
        collate_reused = Collator()  # the model is done with a chunk before the next one is collated
        with eval_mode(self.model) as device:
            for idx in chunks_by_size([t.num_nodes for t in tokens], batch_size, max_batch_nodes):
                batch = {k: v.to(device) for k, v in collate_reused([tokens[i] for i in idx]).items()}
                log_ms[idx] = self.model(**batch).double().cpu().numpy()
        return np.exp(log_ms)


def chunks_by_size(sizes: Sequence[int], batch_size: int, max_batch_nodes: int) -> list[np.ndarray]:
    """Indices grouped by similar size: padding to the largest in a chunk then wastes
    little, and a node budget keeps the padded activations small enough to stay in cache
    (on one CPU thread, 64 graphs of 50-250 nodes in one pass are slower than 16)."""
    order = np.argsort(sizes, kind="stable")
    chunks, start = [], 0
    for end in range(1, len(order) + 1):
        if end == len(order) or end - start == batch_size \
                or (end - start + 1) * sizes[order[end]] > max_batch_nodes:
            chunks.append(order[start:end])
            start = end
    return chunks
