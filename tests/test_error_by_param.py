"""benchmarks/error_by_param.py: a held-out family's error grouped by generator parameter."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import cost_prior_runs  # noqa: E402
import error_by_param  # noqa: E402


def test_groups_pool_seeds_by_geometric_mean(monkeypatch, labelled_store):
    models = {"a": ("cifar", 8, [2, 2], 10.0), "b": ("imagenet", 16, [2, 2], 10.0), "c": ("imagenet", 8, [3, 2], 20.0)}
    store = labelled_store("zoo-x", {job: ("densenet", ms, {"stem": stem, "growth": growth, "blocks": blocks, "batch": 1})
                                     for job, (stem, growth, blocks, ms) in models.items()})
    run = {"split": "ood:densenet", "prior": True, "transcendentals": "fused ops", "dataset": "zoo-x",
           "measured_before": "2026-12-04T13:00"}
    rows = [{**run, "seed": 0, "predicted_ms": {"test": {"a": 5.0, "b": 10.0, "c": 20.0}}},
            {**run, "seed": 1, "predicted_ms": {"test": {"a": 20.0, "b": 12.0, "c": 16.0}}},
            {**run, "seed": 2}]  # no per-model predictions: not counted
    monkeypatch.setattr(cost_prior_runs, "recorded", lambda: [cost_prior_runs.with_defaults(r) for r in rows])
    text = error_by_param.error_by_param("ood:densenet", store, "2026-12-04T13:00")
    assert "(seeds 0, 1; MAPE 0.317)" in text
    # a: 5 and 20 against 10 -> geometric mean 1.00, MAPE 0.75; b, c: 1.0, 1.2 and 1.0, 0.8.
    assert '| stem | "cifar" | 1 | 1.00 | 0.750 |' in text
    assert '| stem | "imagenet" | 2 | 0.99 | 0.100 |' in text
    # Numbers in order of size; a parameter with one value, or a list per stage, in its own rows only when it varies.
    assert text.index("| growth | 8 |") < text.index("| growth | 16 |")
    assert "| batch |" not in text and '| blocks | [2, 2] | 2 |' in text
    with pytest.raises(SystemExit, match="no run of ood:vit"):
        error_by_param.error_by_param("ood:vit", store, "2026-12-04T13:00")
