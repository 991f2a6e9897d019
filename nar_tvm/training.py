"""Dataset -> trained checkpoint -> evaluation, the glue behind `nar-tvm train|evaluate`.

Reads the store with no TVM: training runs wherever torch does.
"""
from __future__ import annotations

from collections import defaultdict
import numpy as np

from nar_tvm.cost_model import (LatencyPredictor, NARFormerV2Config, Tokenizer, TokenizerConfig, TrainConfig,
                                load_checkpoint, regression_report, train)
from nar_tvm.cost_model.uncertainty import fit_uncertainty

from .dataset import TRAINING_LABELS, Sample, load_samples, make_split


def graphs_of(samples: list[Sample], level: str):
    return [s.graph(level) for s in samples]


def latencies_of(samples: list[Sample]) -> np.ndarray:
    return np.array([s.latency_ms for s in samples], dtype=np.float64)


def train_on_dataset(dataset, level: str = "op", split: str = "in-domain", seed: int = 0,
                     platform_id: str | None = None, model_cfg: NARFormerV2Config | None = None,
                     train_cfg: TrainConfig | None = None, progress: bool = True, node_weight: float = 0.0,
                     labels: str = TRAINING_LABELS, tokenizer_cfg: TokenizerConfig | None = None,
                     measured_before: str | None = None):
    """Train on the split's train part, select on its val part; the test part is not touched.
    `node_weight`: see cost_model.train (the samples' measured kernel times of fused graphs);
    `labels`, `measured_before`: which of a model's measured runs is its latency, and which
    records count (dataset.load_samples)."""
    samples = load_samples(dataset, platform_id, labels, measured_before)
    parts = make_split(samples, split, seed)
    train_cfg = train_cfg or TrainConfig(seed=seed)
    node_targets = [s.node_ms(level) for s in parts["train"]] if node_weight > 0 else None
    train_graphs, val_graphs = graphs_of(parts["train"], level), graphs_of(parts["val"], level)
    predictor, history = train(train_graphs, latencies_of(parts["train"]), val_graphs, latencies_of(parts["val"]),
                               model_cfg=model_cfg, train_cfg=train_cfg, progress=progress, node_weight=node_weight,
                               node_targets=node_targets, tokenizer=Tokenizer(tokenizer_cfg) if tokenizer_cfg else None)
    predictor.platform = dict(samples[0].record["platform"], platform_id=samples[0].record["platform_id"])
    # What the split itself can measure of the intervals: the width on its validation models and
    # the novelty reference. The width for unlike graphs takes a run per family left out
    # (benchmarks/calibration_report.py), so such graphs get no interval until it is fitted.
    predictor.provenance["uncertainty"] = fit_uncertainty(
        predictor, train_graphs, val_graphs, latencies_of(parts["val"]),
        source=f"q: validation split ({len(parts['val'])} models); q_novel: not measured "
               "(training.train_on_dataset), so graphs unlike the training data get no interval").to_state()
    predictor.provenance.update(dataset=str(dataset), split=split, split_seed=seed, level=level,
                                best_val_mape=history.best_val_mape, node_weight=node_weight, labels=labels,
                                families=sorted({s.family for s in parts["train"]}),
                                **({"measured_before": measured_before} if measured_before else {}))
    return predictor, history, parts


def evaluate_predictor(predictor: LatencyPredictor, samples: list[Sample], level: str | None = None) -> dict:
    """Metrics overall and per family."""
    level = level or predictor.provenance.get("level", "op")
    pred = predictor.predict(graphs_of(samples, level)).latency_ms
    true = latencies_of(samples)
    by_family = defaultdict(list)
    for i, s in enumerate(samples):
        by_family[s.family].append(i)
    return {
        "overall": regression_report(pred, true),
        "families": {f: regression_report(pred[idx], true[idx]) for f, idx in sorted(by_family.items())},
        "pred": pred, "true": true,
    }


def evaluate_checkpoint(checkpoint, dataset, split: str = "in-domain", part: str = "test", seed: int | None = None,
                        platform_id: str | None = None, labels: str | None = None) -> dict:
    """`labels`: default, the rule the checkpoint was trained with."""
    predictor = load_checkpoint(checkpoint)
    labels = labels or predictor.provenance.get("labels", "first")
    samples = load_samples(dataset, platform_id or predictor.platform.get("platform_id"), labels)
    if seed is None:
        seed = int(predictor.provenance.get("split_seed", 0))
    chosen = make_split(samples, split, seed)[part]
    return evaluate_predictor(predictor, chosen)

