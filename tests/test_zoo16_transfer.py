"""benchmarks/zoo16_transfer.py: the interval width of a sixteen-family checkpoint comes from the
recorded leave-one-family-out runs of its own configuration, and only from those."""
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import cost_prior_runs  # noqa: E402
import zoo16_transfer  # noqa: E402


def test_held_out_residuals_are_the_configurations_own(monkeypatch, labelled_store):
    store = labelled_store("zoo-x", {"a": ("vit", 10.0), "b": ("vit", 20.0), "c": ("vgg", 10.0)})
    monkeypatch.setattr(zoo16_transfer, "STORE", store)
    monkeypatch.setattr(zoo16_transfer, "LOFO_BEFORE", "2026-12-04T13:00")
    count = {"prior": True, "transcendentals": "fused ops", "dataset": "zoo-x", "measured_before": "2026-12-04T13:00"}
    rows = [{**count, "split": "ood:vit", "seed": 0, "predicted_ms": {"test": {"a": 5.0, "b": 20.0}}},
            {**count, "split": "ood:vit", "seed": 1, "predicted_ms": {"test": {"a": 20.0, "b": 40.0}}},
            # Another configuration, a row without per-model predictions, another snapshot: none count.
            {**count, "split": "ood:vgg", "seed": 0, "input_shapes": True, "predicted_ms": {"test": {"c": 1.0}}},
            {**count, "split": "ood:vgg", "seed": 1},
            {**count, "split": "ood:vgg", "seed": 2, "measured_before": None, "predicted_ms": {"test": {"c": 1.0}}}]
    monkeypatch.setattr(cost_prior_runs, "recorded", lambda: [cost_prior_runs.with_defaults(r) for r in rows])
    method = cost_prior_runs.configuration_label(cost_prior_runs.with_defaults(rows[0]), cost_prior_runs.BASE_METHOD)
    residuals = zoo16_transfer.held_out_residuals(method)
    assert list(residuals) == ["vit"]
    assert residuals["vit"] == pytest.approx([math.log(2), 0.0, math.log(2), math.log(2)])
    with pytest.raises(SystemExit, match="no leave-one-family-out runs of 'NNLP"):
        zoo16_transfer.held_out_residuals("NNLP (GraphSAGE)")
