"""Baselines of cost_model.baselines on synthetic graphs: fast, no TVM, no dataset."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from nar_tvm.cost_model import NARFormerV2Config, TrainConfig, Tokenizer, collate, train
from nar_tvm.cost_model.baselines import (GradientBoostedTrees, LogLinear, NeuralRegressor, NNLP, NNLPConfig,
                                          whole_graph_features)
from nar_tvm.cost_model.synthetic import synthetic_dataset as dataset
from nar_tvm.cost_model.train import _epoch_batches, log_mse_loss

QUICK = TrainConfig(epochs=4, batch_size=16, lr=2e-3, patience=None, loss="log_mse", size_bucket_batches=1)
TINY_NNLP = NNLPConfig(hidden=16, head_hidden=16, dropout=0.05)
TINY_NAR = NARFormerV2Config(d_model=16, n_heads=2, ffn_groups=4, head_hidden=16, dropout=0.05, readout="sum")




@pytest.fixture(scope="module")
def data():
    tr_g, tr_y = dataset(96, seed=1)
    va_g, va_y = dataset(24, seed=2)
    return tr_g, tr_y, va_g, va_y


@pytest.mark.parametrize("make", [
    lambda: LogLinear(),
    lambda: LogLinear(("flops", "memory_access")),
    lambda: GradientBoostedTrees(max_rounds=50, early_stopping_rounds=10),
    lambda: NeuralRegressor(TINY_NNLP, QUICK),
    lambda: NeuralRegressor(replace(TINY_NAR, use_graph_attention=False), QUICK),
], ids=["flops", "flops+memory", "gbt", "nnlp", "transformer"])
def test_baseline_fits_and_predicts_positive_latencies(make, data):
    tr_g, tr_y, va_g, va_y = data
    pred = make().fit(tr_g, tr_y, va_g, va_y).predict(va_g)
    assert pred.shape == (len(va_g),)
    assert np.isfinite(pred).all() and (pred > 0).all()


def test_log_linear_recovers_a_power_law_exactly(data):
    graphs = data[0]
    y = np.array([3e-6 * g.flops ** 0.8 for g in graphs])
    model = LogLinear().fit(graphs, y)
    np.testing.assert_allclose(model.coef, [np.log(3e-6), 0.8], rtol=1e-9)
    np.testing.assert_allclose(model.predict(data[2]), [3e-6 * g.flops ** 0.8 for g in data[2]], rtol=1e-9)

    y2 = np.array([2e-4 * g.flops ** 0.5 * g.memory_access ** 0.3 for g in graphs])
    two = LogLinear(("flops", "memory_access")).fit(graphs, y2)
    np.testing.assert_allclose(two.coef, [np.log(2e-4), 0.5, 0.3], rtol=1e-8)


def test_log_linear_rejects_unknown_features():
    with pytest.raises(ValueError):
        LogLinear(("latency",))


def test_whole_graph_features_count_ops_and_sizes(data):
    g = data[0][0]
    ops = ["relax.nn.conv2d", "relax.matmul", "not-an-op"]
    f = whole_graph_features(g, ops)
    assert f[:3].tolist() == [g.op_counts()["relax.nn.conv2d"], 1, 0]
    assert f[3] == pytest.approx(np.log1p(g.flops))
    assert f[-2:].tolist() == [g.depth(), g.num_nodes]


def test_gbt_stops_early_on_validation(data):
    tr_g, tr_y, va_g, va_y = data
    gbt = GradientBoostedTrees(max_rounds=3000, learning_rate=0.3, early_stopping_rounds=20).fit(tr_g, tr_y, va_g, va_y)
    # It stopped on validation, well short of the rounds allowed, and predicts with the best round.
    assert gbt.best_iteration < 3000 - 20
    assert gbt.booster.num_boosted_rounds() == gbt.best_iteration + 21
    # A different validation set selects a different number of trees.
    noisy = va_y * np.exp(np.random.default_rng(0).normal(0, 1.0, len(va_y)))
    other = GradientBoostedTrees(max_rounds=3000, learning_rate=0.3, early_stopping_rounds=20).fit(tr_g, tr_y, va_g, noisy)
    assert other.best_iteration != gbt.best_iteration


def test_nnlp_batched_forward_equals_one_graph_at_a_time():
    graphs, _ = dataset(5, seed=3, sizes=(3, 40))
    assert len({g.num_nodes for g in graphs}) > 1
    tok = Tokenizer().fit(graphs)
    torch.manual_seed(0)
    model = NNLP(replace(TINY_NNLP, token_dim=tok.token_dim, static_dim=tok.static_dim)).eval()
    tokens = tok.encode_many(graphs)
    with torch.no_grad():
        batched = model(**collate(tokens))
        single = torch.cat([model(**collate([t])) for t in tokens])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_nnlp_mean_aggregates_over_neighbours_without_self():
    graphs, _ = dataset(1, seed=4)
    tok = Tokenizer().fit(graphs)
    torch.manual_seed(0)
    model = NNLP(replace(TINY_NNLP, token_dim=tok.token_dim, static_dim=tok.static_dim, n_layers=1)).eval()
    batch = collate(tok.encode_many(graphs))
    layer = model.layers[0]
    seen = {}
    layer.register_forward_hook(lambda m, args, out: seen.update(h=args[0], src=args[1], dst=args[2],
                                                                  count=args[3], out=out))
    with torch.no_grad():
        model(**batch)
    n = graphs[0].num_nodes
    expected = torch.zeros(n, n)
    for s, d in graphs[0].to_dict()["edges"]:
        expected[s, d] = expected[d, s] = 1.0
    neighbours = torch.zeros(n, n)
    neighbours[seen["dst"], seen["src"]] = 1.0
    torch.testing.assert_close(neighbours, expected)
    assert len(seen["src"]) == int(expected.sum())  # each pair once, no self pairs
    torch.testing.assert_close(seen["count"][:, 0], expected.sum(1).clamp(min=1))
    # The scatter computes GraphSAGE's dense mean aggregation.
    h = seen["h"]
    dense = torch.relu(layer.self_lin(h) + layer.neigh_lin(expected @ h / expected.sum(1, keepdim=True).clamp(min=1)))
    torch.testing.assert_close(seen["out"], dense, rtol=1e-5, atol=1e-6)


def test_train_builds_the_network_its_config_names(data):
    predictor, history = train(*data, model_cfg=TINY_NNLP, train_cfg=QUICK, progress=False)
    assert isinstance(predictor.model, NNLP)
    assert history.best_val_mape <= history.init_val_mape


def test_log_mse_loss_is_squared_log_ratio():
    y = torch.tensor([1.0, 10.0])
    pred = torch.tensor([2.0, 5.0])
    assert log_mse_loss(pred.log(), y).item() == pytest.approx(np.log(2.0) ** 2, rel=1e-6)


def test_log_mse_training_starts_at_the_geometric_mean(data):
    tr_g, tr_y, va_g, va_y = data
    cfg = replace(QUICK, epochs=1, lr=1e-12, warmup_fraction=0.0)
    predictor, _ = train(tr_g, tr_y, va_g, va_y, model_cfg=TINY_NNLP, train_cfg=cfg, progress=False)
    np.testing.assert_allclose(predictor.predict(va_g).latency_ms, np.exp(np.log(tr_y).mean()), rtol=1e-4)


def test_size_buckets_keep_every_sample_once_and_group_by_size():
    rng = np.random.default_rng(0)
    sizes = rng.integers(5, 200, size=103)
    plain = np.concatenate(_epoch_batches(np.random.default_rng(1), sizes, 7, 1))
    for bucket in (1, 3, 7):
        batches = _epoch_batches(np.random.default_rng(1), sizes, 7, bucket)
        assert len(batches) == 7
        assert sorted(np.concatenate(batches).tolist()) == list(range(103))
    bucketed = _epoch_batches(np.random.default_rng(1), sizes, 7, 7)
    padded = sum(len(b) * sizes[b].max() for b in bucketed)
    assert padded < sum(len(b) * sizes[b].max() for b in np.array_split(plain, 7))
