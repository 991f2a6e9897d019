"""Few-shot calibration: adapt a trained predictor to a machine from K measured models.

A predictor is exact only for the machine that measured its data; the next machine of the
same CPU model is typically 8-27% slower, and not uniformly (a machine with a smaller cache
loses more on convolutions than on element-wise kernels). Given K models measured on the
new machine, several adaptations are fitted and the one with the lowest leave-one-out error
on those K shots is kept, so nothing but the shots decides:

- `scale`: one log-space offset, latency x c. Needs one shot; cannot overfit.
- `affine`: log-space slope and offset, for machines whose slowdown grows with model size
  (cache-bound large models). The slope is pulled towards 1 so that few shots stay safe.
- `kernel-classes` (kernel-sum checkpoints only): one scale per class of kernel (conv,
  matmul, pool, other) plus the remainder, each pulled towards their common mean: a small
  per-machine embedding of where this machine is slow.
- `head`: the network's output layers fine-tuned on the shots, weights pulled towards the
  trained ones.

Everything here is torch and numpy; nothing imports tvm.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from nar_tvm.passes.opgraph import OpGraph, OpNode

from .fit import eval_mode
from .predictor import chunks_by_size
from .tokenizer import Collator, GraphTokens
from .uncertainty import COVERAGE, conformal_quantile

METHODS = ("scale", "affine", "kernel-classes", "head")
KERNEL_CLASSES = ("conv", "matmul", "pool", "other")
_MATMUL_WORDS = ("matmul", "dense", "linear")
# Prior strengths, relative to one shot's squared log error: a shot must be this strongly
# against the prior before a parameter leaves it.
AFFINE_SLOPE_PRIOR = 1.0
CLASS_SCALE_PRIOR = 0.05
HEAD_WEIGHT_PRIOR = 1e-2
HEAD_STEPS = 60
SELECTION_SLACK = 0.1
# Fewer shots than this give no interval width of their own: the predictor's stands.
MIN_INTERVAL_SHOTS = 5
HEAD_LR = 3e-3


def kernel_class(node: OpNode) -> str:
    names = node.ops or [node.op]
    if any("conv" in n for n in names):
        return "conv"
    if any(w in n for n in names for w in _MATMUL_WORDS):
        return "matmul"
    if any("pool" in n for n in names):
        return "pool"
    return "other"


@dataclass
class Features:
    """What the calibrations read of a batch of graphs, from one forward pass."""

    log_ms: np.ndarray  # [G] the uncalibrated prediction
    class_ms: np.ndarray | None  # [G, len(KERNEL_CLASSES) + 1]: kernel ms per class, then remainder


def features(predictor, graphs: Sequence[OpGraph], tokens: Sequence[GraphTokens] | None = None) -> Features:
    tokens = predictor.tokenizer.encode_many(graphs) if tokens is None else tokens
    if not predictor.predicts_kernels:
        return Features(np.log(predictor.predict_tokens(tokens)), None)
    log_ms = np.empty(len(tokens))
    class_ms = np.zeros((len(tokens), len(KERNEL_CLASSES) + 1))
    index = {c: i for i, c in enumerate(KERNEL_CLASSES)}
    collate = Collator()
    with eval_mode(predictor.model) as device, torch.no_grad():
        # The predictor's own size-bucketed chunks: one forward pass gives both outputs.
        for chunk in chunks_by_size([t.num_nodes for t in tokens], 256, 4096):
            batch = {k: v.to(device) for k, v in collate([tokens[i] for i in chunk]).items()}
            graph_log, kernel_log = predictor.model.forward_with_nodes(**batch)
            graph_log, kernel_log = graph_log.double().cpu().numpy(), kernel_log.double().cpu().numpy()
            for row, g in enumerate(chunk):
                kernels = np.exp(kernel_log[row, :graphs[g].num_nodes])
                classes = [index[kernel_class(node)] for node in graphs[g].nodes]
                np.add.at(class_ms[g], classes, kernels)
                log_ms[g] = graph_log[row]
                class_ms[g, -1] = max(math.exp(graph_log[row]) - kernels.sum(), 0.0)
    return Features(log_ms, class_ms)


def calibrated_log_ms(predictor, graphs: Sequence[OpGraph], tokens: Sequence[GraphTokens],
                      calibration: dict | None) -> np.ndarray:
    """log ms of `graphs` under `calibration` (None: as trained). Only the per-class method
    needs the per-node split; the others adjust the plain prediction."""
    method = calibration["method"] if calibration else "none"
    if method == "kernel-classes":
        return apply(method, calibration["params"], features(predictor, graphs, tokens))
    log_ms = np.log(predictor.predict_tokens(tokens))
    return apply(method, calibration["params"] if calibration else {}, Features(log_ms, None))


# --------------------------------------------------------------------- fitting
def _fit_scale(f: Features, log_y: np.ndarray) -> dict:
    return {"log_scale": float(np.mean(log_y - f.log_ms))}


def _fit_affine(f: Features, log_y: np.ndarray) -> dict:
    # Least squares on (slope - 1, offset) around the centred prediction, ridge on the slope.
    x = f.log_ms - f.log_ms.mean()
    t = log_y - f.log_ms
    slope_minus_1 = float((x @ (t - t.mean())) / (x @ x + AFFINE_SLOPE_PRIOR))
    return {"slope": 1.0 + slope_minus_1, "centre": float(f.log_ms.mean()),
            "offset": float(t.mean())}


def _fit_classes(f: Features, log_y: np.ndarray) -> dict:
    from scipy.optimize import minimize

    parts = f.class_ms
    used = parts.sum(axis=0) > 0

    def loss(theta):
        pred = np.log(np.maximum(parts @ np.exp(theta), 1e-12))
        r = pred - log_y
        dev = theta[used] - theta[used].mean()
        ratio = parts * np.exp(theta) / np.maximum(parts @ np.exp(theta), 1e-12)[:, None]
        grad = (r[:, None] * ratio).sum(axis=0)
        grad_prior = np.zeros_like(theta)
        grad_prior[used] = 2 * CLASS_SCALE_PRIOR * (dev - dev.mean())
        return float(r @ r / 2 + CLASS_SCALE_PRIOR * dev @ dev), grad + grad_prior

    start = np.full(parts.shape[1], np.mean(log_y - f.log_ms))
    theta = minimize(loss, start, jac=True, method="L-BFGS-B").x
    theta[~used] = theta[used].mean() if used.any() else 0.0
    return {"log_scales": [float(v) for v in theta]}


def _head_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if n.split(".")[0] in ("head", "kernel_head")]


def _fit_head(predictor, tokens: Sequence[GraphTokens], log_y: np.ndarray, seed: int = 0):
    """A copy of the model whose output layers are fine-tuned on the shots."""
    model = copy.deepcopy(predictor.model).eval()
    params = _head_parameters(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for _, p in params:
        p.requires_grad_(True)
    start = [p.detach().clone() for _, p in params]
    batch = Collator()(list(tokens))
    target = torch.as_tensor(log_y, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        opt = torch.optim.Adam([p for _, p in params], lr=HEAD_LR)
        for _ in range(HEAD_STEPS):
            opt.zero_grad()
            out = model(**batch)
            prior = sum(((p - p0) ** 2).sum() for (_, p), p0 in zip(params, start))
            loss = ((out - target) ** 2).mean() + HEAD_WEIGHT_PRIOR * prior
            loss.backward()
            opt.step()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def apply(method: str, params: dict, f: Features) -> np.ndarray:
    """Calibrated log ms of graphs whose features are `f` (the `head` method changes the
    weights instead, so its features are already calibrated)."""
    if method in ("none", "head"):
        return f.log_ms
    if method == "scale":
        return f.log_ms + params["log_scale"]
    if method == "affine":
        return params["centre"] + params["slope"] * (f.log_ms - params["centre"]) + params["offset"]
    if method == "kernel-classes":
        if f.class_ms is None:
            raise ValueError("kernel-classes calibration needs a kernel-sum checkpoint")
        return np.log(np.maximum(f.class_ms @ np.exp(np.asarray(params["log_scales"])), 1e-12))
    raise ValueError(f"unknown calibration method {method!r}; known: none, {', '.join(METHODS)}")


def _subset(f: Features, idx) -> Features:
    return Features(f.log_ms[idx], None if f.class_ms is None else f.class_ms[idx])


def _fit_predict(method: str, predictor, f: Features, tokens, log_y, train, test) -> tuple[dict, np.ndarray]:
    if method == "scale":
        params = _fit_scale(_subset(f, train), log_y[train])
    elif method == "affine":
        params = _fit_affine(_subset(f, train), log_y[train])
    elif method == "kernel-classes":
        params = _fit_classes(_subset(f, train), log_y[train])
    elif method == "head":
        model = _fit_head(predictor, [tokens[i] for i in train], log_y[train])
        with torch.no_grad():
            out = model(**Collator()([tokens[i] for i in test])).double().numpy()
        return {}, out
    else:
        raise ValueError(f"unknown calibration method {method!r}")
    return params, apply(method, params, _subset(f, test))


def applicable_methods(predictor, shots: int) -> list[str]:
    methods = ["scale"]
    if shots >= 4:
        methods.append("affine")
        if predictor.predicts_kernels:
            methods.append("kernel-classes")
        methods.append("head")
    return methods


@dataclass
class CalibrationFit:
    method: str
    params: dict
    loo_mape: dict[str, float]  # method -> leave-one-out MAPE on the shots ("none" included)
    loo_log_residuals: list[float]  # chosen method, one per shot: log(measured / predicted)
    model: torch.nn.Module | None = None  # the fine-tuned network, for `head`
    shots: list[str] = field(default_factory=list)
    # One per shot: the leave-one-out residual of the method the other shots would have chosen.
    # The chosen method's own residuals are optimistic: it was chosen for making them small.
    selection_log_residuals: list[float] = field(default_factory=list)

    def half_width(self, coverage: float = COVERAGE) -> float:
        """The least log half-width of a calibrated prediction's interval: the split-conformal
        quantile of the selection-aware leave-one-out residuals (0 with under MIN_INTERVAL_SHOTS,
        too few to say anything about this machine's spread)."""
        residuals = self.selection_log_residuals
        return conformal_quantile(residuals, coverage) if len(residuals) >= MIN_INTERVAL_SHOTS else 0.0


def fit(predictor, graphs: Sequence[OpGraph], measured_ms: Sequence[float],
        methods: Sequence[str] | None = None) -> CalibrationFit:
    """Fit every applicable method to the shots and keep the lowest leave-one-out MAPE."""
    measured = np.asarray(measured_ms, dtype=np.float64)
    if len(graphs) != len(measured) or not len(measured):
        raise ValueError(f"calibration needs one measured latency per graph ({len(graphs)} graphs, "
                         f"{len(measured)} latencies)")
    if not (np.isfinite(measured).all() and (measured > 0).all()):
        raise ValueError("calibration latencies must be positive and finite")
    log_y = np.log(measured)
    tokens = predictor.tokenizer.encode_many(graphs)
    f = features(predictor, graphs, tokens)
    methods = list(methods or applicable_methods(predictor, len(graphs)))
    n = len(graphs)
    loo_log: dict[str, np.ndarray] = {"none": f.log_ms.copy()}
    for method in methods:
        preds = np.empty(n)
        for i in range(n):
            train = [j for j in range(n) if j != i] if n > 1 else [i]
            preds[i] = _fit_predict(method, predictor, f, tokens, log_y, train, [i])[1][0]
        loo_log[method] = preds
    abs_err = {m: np.abs(np.exp(p - log_y) - 1) for m, p in loo_log.items()}
    loo_mape = {m: float(e.mean()) for m, e in abs_err.items()}
    ranked = ["none", *methods]
    best = _select(ranked, loo_mape)
    # Shot i's residual under the method the rule picks from the other shots' errors, so that
    # the interval pays for the choice as well as for the fit.
    others = [_select(ranked, {m: float(np.delete(e, i).mean()) for m, e in abs_err.items()}) if n > 1 else best
              for i in range(n)]
    selection_residuals = [float(log_y[i] - loo_log[m][i]) for i, m in enumerate(others)]
    everything = list(range(n))
    params, model = {}, None
    if best == "head":
        model = _fit_head(predictor, tokens, log_y)
    elif best != "none":
        params = _fit_predict(best, predictor, f, tokens, log_y, everything, everything)[0]
    return CalibrationFit(best, params, loo_mape, [float(v) for v in log_y - loo_log[best]], model,
                          [g.name for g in graphs], selection_residuals)


def _select(ranked: Sequence[str], mape: dict[str, float]) -> str:
    """The simplest method (`ranked` order) within SELECTION_SLACK of the lowest error: with ten
    shots a richer method's small lead is as likely luck as skill, and its misses on new models
    are larger than a scale's."""
    lowest = min(mape.values())
    return next(m for m in ranked if mape[m] <= lowest * (1 + SELECTION_SLACK) + 1e-12)
