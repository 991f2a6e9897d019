"""Latency-prediction metrics as reported by NNLQP and NAR-Former V2."""
from __future__ import annotations

import numpy as np

# scipy.stats is imported by the two rank metrics that use it: it costs more start-up time than
# the rest of the learning side, and predicting needs no metric.


def _pair(pred, true) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    true = np.asarray(true, dtype=np.float64).reshape(-1)
    if pred.shape != true.shape:
        raise ValueError(f"pred has {pred.size} values, true has {true.size}")
    if pred.size == 0:
        raise ValueError("metrics need at least one sample")
    return pred, true


def relative_error(pred, true) -> np.ndarray:
    pred, true = _pair(pred, true)
    return np.abs(pred - true) / np.abs(true)


def mape(pred, true) -> float:
    """Mean absolute percentage error, as a fraction (0.05 is 5%)."""
    return float(relative_error(pred, true).mean())


def rmse(pred, true) -> float:
    pred, true = _pair(pred, true)
    return float(np.sqrt(np.mean((pred - true) ** 2)))


def acc_within(pred, true, delta: float) -> float:
    """Acc(delta): the fraction of samples whose relative error is at most delta."""
    return float((relative_error(pred, true) <= delta).mean())


def _rank_correlation(name: str, pred, true) -> float:
    """A scipy.stats rank correlation; NaN where ranks say nothing (one sample, or every
    prediction or label equal), as scipy returns, but without its warning: a report's
    per-family rows often hold a single model, and the warning named none of them."""
    from scipy import stats

    pred, true = _pair(pred, true)
    if pred.size < 2 or np.ptp(pred) == 0 or np.ptp(true) == 0:
        return float("nan")
    return float(getattr(stats, name)(pred, true).statistic)


def kendall_tau(pred, true) -> float:
    return _rank_correlation("kendalltau", pred, true)


def spearman(pred, true) -> float:
    return _rank_correlation("spearmanr", pred, true)


def regression_report(pred, true) -> dict[str, float]:
    return {
        "n": int(np.size(true)),
        "mape": mape(pred, true),
        "rmse": rmse(pred, true),
        "acc@5%": acc_within(pred, true, 0.05),
        "acc@10%": acc_within(pred, true, 0.10),
        "kendall_tau": kendall_tau(pred, true),
        "spearman": spearman(pred, true),
    }
