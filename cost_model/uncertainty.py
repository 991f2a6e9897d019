"""Prediction intervals and the "unlike the training data" flag.

Intervals are split-conformal in log space: the half-width `q` is the 90% quantile of
|log(measured / predicted)| on models the predictor never trained on, so `[p e^-q, p e^q]`
covers about 90% of new models drawn like those. Two widths are kept, because error is not
one distribution: `q` from the validation split (models like the training data) and
`q_novel` from leave-one-family-out runs (families the predictor never saw). For `q_novel`
the unit drawn is a family, not a model: a family's models share its error (efficientnet held
out is under-predicted nearly everywhere), so pooling them as if independent sets the width
by the many easy families and leaves the few hard ones mostly outside. Each family's own 90%
width is taken, and `q_novel` is the conformal quantile of those (family_conformal_quantile):
about 90% of new families then see about 90% of their models covered. A graph gets
`q_novel` when it is flagged as novel: an op type outside the vocabulary, or an op mix
farther from every training graph than almost any training graph is from its nearest
neighbour. After calibration on a new machine, the shots' leave-one-out residuals widen
`q` where that machine is harder to predict.

The novelty descriptor is each graph's op-type mix (share of nodes that run each op name
of the vocabulary), compared in L1 distance: cheap, needs only the graph, and it separates
families (a network with SiLU epilogues on every kernel has a visibly different mix). An op
name hides what kind of convolution a node runs, and a grouped convolution (ResNeXt's) costs
per FLOP unlike both the dense and the depthwise ones the zoo has, so descriptor 2 adds the
share of nodes running a depthwise and a grouped convolution (from the node's groups and input
channels; graphs without operator attributes count as dense).

An op mix is blind to size: ResNet-50 at 224 px has the mix of the zoo's small ResNets and ten
times the FLOPs of the largest graph the predictor trained on. A graph whose FLOPs or memory
traffic lie outside the training graphs' range is novel too, since its latency is extrapolated
(the range costs four numbers in the checkpoint; about 1 in 200 in-domain test graphs falls
outside it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from nar_tvm.passes.opgraph import OpGraph

from .tokenizer import Vocabulary

COVERAGE = 0.9
# Training descriptors kept in a checkpoint: enough to cover every family's variety,
# few enough that the novelty check costs microseconds per graph.
MAX_REFERENCE_GRAPHS = 400
# A graph is novel when farther from every reference graph than this quantile of the training
# graphs' own nearest-neighbour distances. Candidates for the choice the calibration report
# makes by leave-one-family-out (coverage of the families left out, in-domain coverage).
NOVELTY_QUANTILES = (0.5, 0.75, 0.9, 0.95, 0.99)
NOVELTY_QUANTILE = 0.95


def conformal_quantile(abs_log_residuals: Sequence[float], coverage: float = COVERAGE) -> float:
    """The finite-sample split-conformal quantile: the ceil((n+1) coverage)-th smallest."""
    r = np.sort(np.abs(np.asarray(abs_log_residuals, dtype=np.float64)))
    if not len(r):
        raise ValueError("no residuals to take a quantile of")
    k = min(math.ceil((len(r) + 1) * coverage), len(r))
    return float(r[k - 1])


def family_conformal_quantile(abs_log_residuals_by_family: Mapping[str, Sequence[float]],
                              coverage: float = COVERAGE) -> float:
    """The conformal quantile over families of each family's own conformal quantile: the width
    for a family not yet seen, when a family's models err together. With ten families it is
    the largest of their ten widths (ceil(11 x 0.9) = 10)."""
    if not abs_log_residuals_by_family:
        raise ValueError("no families to take a quantile of")
    return conformal_quantile([conformal_quantile(r, coverage) for r in abs_log_residuals_by_family.values()],
                              coverage)


# 1: op-type mix; 2: op-type mix and the shares of depthwise and grouped convolutions.
DESCRIPTOR = 2
CONV_KINDS = ("depthwise", "grouped")


def conv_kind(node) -> str | None:
    """The kind of convolution a node runs ("dense", "depthwise" or "grouped"), None if none."""
    if not any("conv" in name for name in (node.op, *node.ops)):
        return None
    groups = node.attrs.get("groups")
    if not isinstance(groups, int) or groups <= 1 or not node.inputs:
        return "dense"
    layout = node.attrs.get("data_layout") or "NCHW"
    shape = node.inputs[0].shape
    channels = shape[layout.index("C")] if "C" in layout and len(shape) == len(layout) else None
    return "depthwise" if groups == channels else "grouped"


def op_mix(graphs: Sequence[OpGraph], vocab: Vocabulary, descriptor: int = DESCRIPTOR) -> np.ndarray:
    """[G, V (+ 2)] share of each graph's nodes that run each vocabulary op name (unknown: slot 0),
    then, for descriptor 2, the shares running a depthwise and a grouped convolution."""
    if descriptor not in (1, 2):
        raise ValueError(f"unknown novelty descriptor {descriptor}; this code knows 1 and 2")
    extra = len(CONV_KINDS) if descriptor == 2 else 0
    out = np.zeros((len(graphs), len(vocab) + extra), dtype=np.float32)
    for g, graph in enumerate(graphs):
        for node in graph.nodes:
            for name in set(node.ops or [node.op]) | {node.op}:
                out[g, vocab.lookup(name)] += 1.0
            kind = conv_kind(node) if extra else None
            if kind in CONV_KINDS:
                out[g, len(vocab) + CONV_KINDS.index(kind)] += 1.0
        out[g] /= max(graph.num_nodes, 1)
    return out


# Graph sizes whose training range bounds where a prediction interpolates.
EXTENT_MEASURES = ("flops", "memory_access")


def graph_sizes(graphs: Sequence[OpGraph]) -> np.ndarray:
    """[G, 2] FLOPs and bytes of memory traffic of each graph."""
    return np.array([[float(getattr(g, m)) for m in EXTENT_MEASURES] for g in graphs], dtype=np.float64)


def size_extent(graphs: Sequence[OpGraph]) -> np.ndarray:
    """[2, 2] (smallest, largest) of each size measure over the graphs."""
    sizes = graph_sizes(graphs)
    return np.stack([sizes.min(axis=0), sizes.max(axis=0)], axis=1)


def _nearest_l1(queries: np.ndarray, reference: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    d = np.abs(queries[:, None, :] - reference[None, :, :]).sum(-1)
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    return d.min(axis=1)


@dataclass
class Uncertainty:
    q: float  # log half-width for graphs like the training data
    # For graphs flagged as novel; None: not measured (it takes a training run per family left
    # out), and such graphs get no interval rather than the in-domain one, which would be a guess.
    q_novel: float | None
    reference: np.ndarray  # [R, V] op mixes of training graphs
    threshold: float  # nearest-reference L1 distance above which a graph is novel
    source: str = ""
    descriptor: int = DESCRIPTOR  # what `reference` holds (op_mix's descriptor)
    # [2, 2] training range (smallest, largest) of each EXTENT_MEASURES; None: not recorded.
    extent: np.ndarray | None = None

    def to_state(self) -> dict:
        state = {"q": self.q, "q_novel": self.q_novel, "threshold": self.threshold, "source": self.source,
                 "coverage": COVERAGE, "descriptor": self.descriptor,
                 "reference": [[round(float(v), 5) for v in row] for row in self.reference]}
        if self.extent is not None:
            state["extent"] = {m: [float(lo), float(hi)] for m, (lo, hi) in zip(EXTENT_MEASURES, self.extent)}
        return state

    @classmethod
    def from_state(cls, state: dict) -> "Uncertainty":
        # States written before the descriptor was versioned hold plain op mixes; before the
        # extent was recorded, size is not checked.
        extent = state.get("extent")
        return cls(float(state["q"]), None if state.get("q_novel") is None else float(state["q_novel"]),
                   np.asarray(state["reference"], dtype=np.float32), float(state["threshold"]),
                   state.get("source", ""), int(state.get("descriptor", 1)),
                   None if extent is None else np.array([extent[m] for m in EXTENT_MEASURES], dtype=np.float64))

    def novelty(self, graphs: Sequence[OpGraph], vocab: Vocabulary) -> np.ndarray:
        return _nearest_l1(op_mix(graphs, vocab, self.descriptor), self.reference)

    def size_factor(self, graphs: Sequence[OpGraph]) -> np.ndarray:
        """[G] how far each graph's size lies outside the training range: 1 inside it; above 1,
        the largest ratio of a measure to the training maximum; below 1, the smallest ratio
        to the training minimum."""
        if self.extent is None:
            return np.ones(len(graphs))
        sizes = graph_sizes(graphs)
        over = (sizes / self.extent[:, 1]).max(axis=1)
        under = (np.maximum(sizes, 1.0) / self.extent[:, 0]).min(axis=1)
        return np.where(over > 1.0, over, np.where(under < 1.0, under, 1.0))

    def half_widths(self, novel: np.ndarray) -> np.ndarray:
        """Each graph's log half-width; NaN for a novel graph where q_novel was not measured."""
        wide = math.nan if self.q_novel is None else max(self.q_novel, self.q)
        return np.where(novel, wide, self.q)


def reference_mixes(train_graphs: Sequence[OpGraph], vocab: Vocabulary, seed: int = 0,
                    quantile: float = NOVELTY_QUANTILE) -> tuple[np.ndarray, float]:
    """Op mixes of (a sample of) the training graphs, and the novelty threshold they imply."""
    mixes, thresholds = reference_thresholds(train_graphs, vocab, seed, (quantile,))
    return mixes, thresholds[quantile]


def reference_thresholds(train_graphs: Sequence[OpGraph], vocab: Vocabulary, seed: int = 0,
                         quantiles: Sequence[float] = NOVELTY_QUANTILES) -> tuple[np.ndarray, dict[float, float]]:
    """Op mixes of (a sample of) the training graphs, and the novelty threshold at each quantile."""
    mixes = op_mix(train_graphs, vocab)
    if len(mixes) > MAX_REFERENCE_GRAPHS:
        keep = np.random.default_rng(seed).choice(len(mixes), MAX_REFERENCE_GRAPHS, replace=False)
        mixes = mixes[np.sort(keep)]
    if len(mixes) < 2:
        raise ValueError("the novelty check needs at least two training graphs")
    nearest = _nearest_l1(mixes, mixes, exclude_self=True)
    return mixes, {q: float(np.quantile(nearest, q)) for q in quantiles}


def fit_uncertainty(predictor, train_graphs: Sequence[OpGraph], val_graphs: Sequence[OpGraph],
                    val_ms: Sequence[float], novel_residuals_by_family: Mapping[str, Sequence[float]] | None = None,
                    source: str = "", novelty_quantile: float = NOVELTY_QUANTILE) -> Uncertainty:
    """Interval widths from held-out residuals (`novel_residuals_by_family`: |log(measured /
    predicted)| of each family's models when it was left out of training), and the novelty
    reference from training graphs."""
    pred = predictor.predict(list(val_graphs)).latency_ms
    q = conformal_quantile(np.log(np.asarray(val_ms) / pred))
    q_novel = None if novel_residuals_by_family is None else family_conformal_quantile(novel_residuals_by_family)
    reference, threshold = reference_mixes(train_graphs, predictor.tokenizer.vocab, quantile=novelty_quantile)
    return Uncertainty(q, q_novel, reference, threshold, source, extent=size_extent(train_graphs))
