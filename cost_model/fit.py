"""The one training loop of the learning side, and what it needs around it.

Whole-network latency (`train.train`) and NAS-Bench-201 cells (`nasbench`) both fit
a network with this loop: AdamW, linear warm-up then linear decay, one loss per
batch, an optional validation score per epoch that keeps the best epoch's weights,
and optional early stopping. Callers differ only in how they batch, what the loss
is and how they score, which they pass in as functions.
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm


def warmup_then_linear_decay(warmup: int, total: int) -> Callable[[int], float]:
    """LambdaLR factor: linear warm-up over `warmup` steps, then linear decay to 0 at `total`."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


@contextmanager
def deterministic(seed: int):
    """Seeded, deterministic torch for the duration, leaving the caller's RNG and flags as they were."""
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # warn_only: an op without a deterministic kernel (on some accelerator) should
        # not abort a training run; on CPU every op used here has one.
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


@contextmanager
def eval_mode(model: nn.Module):
    """`model` in eval mode for the duration, its mode restored after; yields its device."""
    was_training = model.training
    model.eval()
    try:
        yield next(model.parameters()).device
    finally:
        model.train(was_training)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)  # epoch, lr, train_loss, the score, extra terms
    best_epoch: int = 0  # 0: no epoch beat the initial score (or there is no score)
    best_score: float | None = None
    stopped_early: bool = False


def fit(model: nn.Module, batches: Callable[[], Iterable[np.ndarray]],
        batch_loss: Callable[[np.ndarray], torch.Tensor | tuple[torch.Tensor, dict[str, float]]], *,
        epochs: int, steps_per_epoch: int, lr: float, weight_decay: float, warmup_fraction: float,
        evaluate: Callable[[], float] | None = None, maximize: bool = False,
        initial_score: float | None = None, patience: int | None = None,
        score_name: str = "val", progress: str | None = None) -> FitResult:
    """Train `model` in place and leave it in eval mode.

    `batches()` gives one epoch's batches (index arrays); `batch_loss(idx)` the loss of one,
    optionally with extra named terms to average into the epoch's record. With `evaluate`
    (called after every epoch; `maximize`: higher is better) the weights of the best epoch
    are kept, `initial_score` being the untrained model's (None: any first score is better),
    and `patience` epochs without a better score stop training. `progress`: a progress-bar
    label, None for no bar.
    """
    total = epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_then_linear_decay(max(1, int(warmup_fraction * total)), total))
    better = (lambda a, b: a > b) if maximize else (lambda a, b: a < b)
    result = FitResult(best_score=initial_score)
    if initial_score is None:
        best_state = None
        result.best_score = -math.inf if maximize else math.inf
    else:
        best_state = copy.deepcopy(model.state_dict())
    bar = tqdm(range(1, epochs + 1), desc=progress, disable=progress is None, leave=False)
    for epoch in bar:
        model.train()
        losses, extras = [], {}
        for idx in batches():
            out = batch_loss(idx)
            loss, terms = out if isinstance(out, tuple) else (out, {})
            for name, value in terms.items():
                extras.setdefault(name, []).append(value)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": float(np.mean(losses))}
        if evaluate is not None:
            record[score_name] = score = evaluate()
        record.update({name: float(np.mean(values)) for name, values in extras.items()})
        result.history.append(record)
        if evaluate is None:
            continue
        bar.set_postfix({"loss": f"{record['train_loss']:.4f}", score_name: f"{score:.4f}"})
        if better(score, result.best_score):
            result.best_epoch, result.best_score = epoch, score
            best_state = copy.deepcopy(model.state_dict())
        elif patience is not None and epoch - result.best_epoch >= patience:
            result.stopped_early = True
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return result
