import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from nar_tvm import nasbench as cli_nasbench
from nar_tvm.cost_model import nasbench as nb
from nar_tvm.cost_model.checkpoint import CheckpointError
from nar_tvm.cost_model.metrics import kendall_tau

from nar_tvm.cost_model.nb201_space import DEFAULT_ACCURACY_CSV, DEFAULT_LATENCY_CSV

# NB201 arch 1: tokens 1..6 are the edges 0->1, 0->2, 1->2, 0->3, 1->3, 2->3.
CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
OPS = ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def onehot_types(tokens):
    return [nb.NODE_TYPES[i] for i in tokens.x[:, :len(nb.NODE_TYPES)].argmax(axis=1)]


def test_cell_tokens_node_by_node_and_edge_by_edge():
    t = nb.CellTokenizer().encode(CELL)
    assert t.x.shape == (8, nb.CellTokenizer().token_dim)
    assert onehot_types(t) == ["input", "nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3",
                               "skip_connect", "nor_conv_3x3", "skip_connect", "output"]
    assert (t.x[:, :len(nb.NODE_TYPES)].sum(axis=1) == 1).all()
    # Data flows from every op entering a cell node into every op leaving it.
    assert t.edges.tolist() == [[0, 1], [0, 2], [0, 4], [1, 3], [1, 5], [2, 6], [3, 6], [4, 7], [5, 7], [6, 7]]
    assert t.degree.tolist() == [[0, 3], [1, 2], [1, 1], [1, 1], [1, 1], [1, 1], [2, 1], [3, 0]]
    # 2 skips, 0 1x1, 3 3x3, 1 pool; 2 convs on the deepest path, 0 on the skip; 4 paths.
    np.testing.assert_allclose(t.static, [2 / 6, 0, 3 / 6, 1 / 6, 2 / 3, 0, 1, 1], rtol=1e-6)
    # Token slots differ only in their position codes: no two tokens look alike.
    assert len({row.tobytes() for row in t.x}) == 8


def test_none_edges_are_tokens_without_graph_edges():
    # 0->1 conv, 1->2 none, 0->2 none, 2->3 pool: node 2 is cut off, so its pool is dead too.
    cell = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"
    t = nb.CellTokenizer(nb.CellTokenizerConfig(canonical=False)).encode(cell)
    assert onehot_types(t) == ["input", "nor_conv_3x3", "none", "none", "skip_connect", "nor_conv_1x1",
                               "none", "output"]
    assert t.edges.tolist() == [[0, 1], [0, 4], [1, 5], [4, 7], [5, 7]]
    assert t.degree[[2, 3, 6]].sum() == 0
    # The execution view (latency) runs every edge, `none` included.
    execution = nb.CellTokenizer(nb.CellTokenizerConfig(prune_dead=False, canonical=False)).encode(cell)
    assert onehot_types(execution)[1:7] == list(nb.cell_ops(cell))
    assert len(execution.edges) == 3 + 4 + 3  # from the input, between ops, into the output


def test_disconnected_cell():
    cell = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|nor_conv_3x3~2|"
    t = nb.CellTokenizer().encode(cell)
    assert onehot_types(t)[1:7] == ["none"] * 6 and len(t.edges) == 0
    assert t.static[-1] == 0.0  # not connected


def test_isomorphic_relabelings_tokenise_identically():
    # With no 1->2 edge the intermediate nodes can swap: edges (0->1, 1->3) <-> (0->2, 2->3).
    a = "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|"
    b = "|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|skip_connect~1|nor_conv_1x1~2|"
    tok = nb.CellTokenizer()
    ta, tb = tok.encode(a), tok.encode(b)
    np.testing.assert_array_equal(ta.x, tb.x)
    np.testing.assert_array_equal(ta.edges, tb.edges)
    # With a 1->2 edge they cannot.
    c, d = a.replace("none~1", "skip_connect~1"), b.replace("none~1", "skip_connect~1")
    assert not np.array_equal(tok.encode(c).x, tok.encode(d).x)


def test_cell_round_trip_and_bad_cells():
    assert nb.ops_to_cell(nb.cell_ops(CELL)) == CELL
    for bad in ("|nor_conv_3x3~0|+|none~0|none~1|", "|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|"):
        with pytest.raises(ValueError):
            nb.cell_ops(bad)


def random_cells(n, seed):
    rng = np.random.default_rng(seed)
    return [nb.ops_to_cell(rng.choice(nb.NB201_OPS, 6)) for _ in range(n)]


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_load_table_custom_columns_and_join(tmp_path):
    cells = random_cells(5, 0)
    acc = write_csv(tmp_path / "acc.csv", ["arch_index", "cell", "my_label", "other"],
                    [[10 + i, c, 50 + i, i] for i, c in enumerate(cells)])
    t = nb.load_table(acc, ["my_label"])
    assert t.cells == cells and t.arch_index.tolist() == [10, 11, 12, 13, 14]
    assert list(t.columns) == ["my_label"] and t.column("my_label").tolist() == [50, 51, 52, 53, 54]
    # A latency table without cells takes them from the accuracy table, by arch_index.
    lat = write_csv(tmp_path / "lat.csv", ["arch_index", "phone_ms", "gpu_ms"],
                    [[14 - i, 1 + i, 2 + i] for i in range(5)])
    t = nb.load_table(lat, cells_from=acc)
    assert t.device_columns() == ["phone_ms", "gpu_ms"]
    assert t.cells == cells[::-1]


def test_load_table_errors_name_file_and_columns(tmp_path):
    acc = write_csv(tmp_path / "acc.csv", ["arch_index", "cell", "my_label"], [[0, CELL, 1.0]])
    with pytest.raises(nb.NasBenchDataError, match=r"acc\.csv.*missing column\(s\) nope.*arch_index, cell, my_label"):
        nb.load_table(acc, ["nope"])
    with pytest.raises(nb.NasBenchDataError, match="no such file"):
        nb.load_table(tmp_path / "absent.csv")
    lat = write_csv(tmp_path / "lat.csv", ["arch_index", "a_ms"], [[0, 1.0], [1, 2.0]])
    with pytest.raises(nb.NasBenchDataError, match="no 'cell' column"):
        nb.load_table(lat)
    with pytest.raises(nb.NasBenchDataError, match=r"no cell for arch_index \[1\]"):
        nb.load_table(lat, cells_from=acc)
    t = nb.load_table(acc)
    with pytest.raises(nb.NasBenchDataError, match="no column 'x'.*my_label"):
        t.column("x")


def test_cli_reports_missing_column(tmp_path, capsys):
    import argparse

    acc = write_csv(tmp_path / "acc.csv", ["arch_index", "cell", "val"], [[i, c, i] for i, c in enumerate(random_cells(300, 1))])
    parser = argparse.ArgumentParser()
    cli_nasbench.add_nasbench_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["nasbench", "evaluate", "--accuracy-csv", str(acc), "--label", "val",
                              "--eval-label", "test_acc"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "acc.csv" in err and "test_acc" in err and "arch_index, cell, val" in err


def test_protocol_split_is_seeded_and_disjoint():
    tr, va = nb.protocol_split(1000, 10, 200, seed=3)
    tr2, va2 = nb.protocol_split(1000, 10, 200, seed=3)
    assert (tr == tr2).all() and (va == va2).all()
    assert len(set(tr) | set(va)) == 210
    with pytest.raises(ValueError):
        nb.protocol_split(100, 10, 200, seed=0)


def synthetic_accuracy(cells):
    # A rank-able target: 3x3 convs help, a cut-off cell is hopeless.
    feats = np.stack([nb.cell_static_features(nb.prune_dead(nb.cell_ops(c))) for c in cells])
    return 60 + 20 * feats[:, 2] + 10 * feats[:, 4] - 5 * feats[:, 3] + 30 * feats[:, -1]


def test_accuracy_training_ranks_and_checkpoints(tmp_path):
    cells = random_cells(600, 2)
    y = synthetic_accuracy(cells)
    cfg = nb.AccuracyConfig(steps=60, min_epochs=1)
    predictor, history = nb.train_accuracy_predictor(cells[:100], y[:100], cells[100:150], y[100:150],
                                                     "synthetic", cfg, seed=0)
    tau = kendall_tau(predictor.predict(cells[150:]), y[150:])
    assert tau > 0.5, tau
    path = predictor.save(tmp_path / "nb.pt")
    loaded = nb.CellPredictor.load(path)
    np.testing.assert_allclose(loaded.predict(cells[:20]), predictor.predict(cells[:20]), rtol=1e-5)
    torch.save({"format": "something else"}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="format"):
        nb.CellPredictor.load(tmp_path / "bad.pt")


def test_real_accuracy_beats_random_on_a_subset():
    table = nb.load_table(DEFAULT_ACCURACY_CSV, [nb.ACCURACY_LABEL, nb.ACCURACY_EVAL_LABEL])
    tr, va = nb.protocol_split(len(table), 100, 50, seed=0)
    cfg = nb.AccuracyConfig(steps=40, min_epochs=1)
    predictor, _ = nb.train_accuracy_predictor(
        [table.cells[i] for i in tr], table.column(nb.ACCURACY_LABEL)[tr],
        [table.cells[i] for i in va], table.column(nb.ACCURACY_LABEL)[va], nb.ACCURACY_LABEL, cfg, seed=0)
    test = np.random.default_rng(1).choice(len(table), 2000, replace=False)
    tau = kendall_tau(predictor.predict([table.cells[i] for i in test]),
                      table.column(nb.ACCURACY_EVAL_LABEL)[test])
    # Random scores give tau ~ 0 (standard error ~0.015 on 2,000 cells).
    assert tau > 0.3, tau


def synthetic_latency_table(tmp_path, n=400, devices=12, seed=0):
    """Devices whose latency weighs the op counts differently, plus a per-device offset."""
    cells = random_cells(n, seed)
    counts = np.stack([[sum(op == o for op in nb.cell_ops(c)) for o in nb.NB201_OPS] for c in cells])
    rng = np.random.default_rng(seed)
    cost = rng.uniform(0.1, 2.0, size=(devices, len(nb.NB201_OPS)))
    lat = 1.0 + rng.uniform(1, 3, devices) + counts @ cost.T
    names = [f"dev{d}_ms" for d in range(devices)]
    write_csv(tmp_path / "cells.csv", ["arch_index", "cell"], [[i, c] for i, c in enumerate(cells)])
    write_csv(tmp_path / "lat.csv", ["arch_index", *names], [[i, *row] for i, row in enumerate(lat)])
    return cells, lat, names


def test_few_shot_adaptation_on_synthetic_devices(tmp_path):
    cells, lat, names = synthetic_latency_table(tmp_path)
    cfg = nb.LatencyConfig(pretrain_steps=200)
    model = nb.FewShotLatencyModel.pretrain(cells, lat[:, :-1], names[:-1], cfg, seed=0)
    shots, test = nb.shots_split(len(cells), 10, seed=0)
    head = model.adapt([cells[i] for i in shots], lat[shots, -1])
    m = nb.latency_metrics(model.predict(head, [cells[i] for i in test]), lat[test, -1])
    assert m["spearman"] > 0.8 and m["mape"] < 0.15, m


def test_designed_shots_span_the_codes_greedily(tmp_path):
    cells, lat, names = synthetic_latency_table(tmp_path)
    model = nb.FewShotLatencyModel.pretrain(cells, lat[:, :-1], names[:-1], nb.LatencyConfig(pretrain_steps=200), seed=0)
    learn, test = model.design_shots(cells, 10, seed=3)
    assert len(learn) == 10 and sorted(np.concatenate([learn, test]).tolist()) == list(range(len(cells)))
    assert learn.tolist() == sorted(learn.tolist())
    assert model.design_shots(cells, 10, seed=3)[0].tolist() == learn.tolist()

    # Against the plain formula: each greedy step takes the row that most increases the
    # determinant of the information matrix of [1, whitened code].
    z = model.codes(cells)
    x = np.hstack([np.ones((len(cells), 1)), (z - z.mean(axis=0)) @ model.device_prior()[1]])
    first = int(np.random.default_rng(3).integers(len(cells)))
    info = 1e-3 * np.eye(x.shape[1]) + np.outer(x[first], x[first])
    dets = [np.linalg.slogdet(info + np.outer(row, row))[1] if i != first else -np.inf for i, row in enumerate(x)]
    second = int(np.argmax(dets))
    assert {first, second} <= set(learn.tolist())

    def logdet(rows):
        return np.linalg.slogdet(1e-3 * np.eye(x.shape[1]) + x[rows].T @ x[rows])[1]
    random_logdets = [logdet(nb.shots_split(len(cells), 10, seed)[0]) for seed in range(20)]
    assert logdet(learn) > max(random_logdets)

    head = model.adapt([cells[i] for i in learn], lat[learn, -1])
    m = nb.latency_metrics(model.predict(head, [cells[i] for i in test]), lat[test, -1])
    assert m["spearman"] > 0.8 and m["mape"] < 0.15, m
    with pytest.raises(nb.NasBenchDataError, match="leaves nothing"):
        model.design_shots(cells[:5], 5)


def test_op_cost_model_recovers_additive_costs_and_adapt_falls_back_on_it(tmp_path):
    cells, lat, names = synthetic_latency_table(tmp_path)
    counts = nb.op_counts(cells)
    assert counts.shape == (len(cells), len(nb.LIVE_OPS)) and counts.sum(axis=1).max() <= 6
    # A device unlike every pretraining one: only pooling costs anything.
    odd = 2.0 + 3.0 * counts[:, nb.LIVE_OPS.index("avg_pool_3x3")]
    shots, test = nb.shots_split(len(cells), 10, seed=0)
    costs = nb.OpCostModel.fit(counts[shots], odd[shots])
    assert costs.base_ms == pytest.approx(2.0, abs=1e-6)
    expected = np.zeros(len(nb.LIVE_OPS))
    expected[nb.LIVE_OPS.index("avg_pool_3x3")] = 3.0
    assert costs.op_ms == pytest.approx(expected, abs=1e-6)

    model = nb.FewShotLatencyModel.pretrain(cells, lat[:, :-1], names[:-1], nb.LatencyConfig(pretrain_steps=100), seed=0)
    head = model.adapt([cells[i] for i in shots], odd[shots])
    assert head.mix == 0.0
    assert model.predict(head, [cells[i] for i in test]) == pytest.approx(odd[test], rel=1e-6)
    with pytest.raises(ValueError, match="at least 4"):
        model.adapt([cells[i] for i in shots[:3]], odd[shots[:3]])


def test_latency_from_scratch_and_cli(tmp_path, capsys):
    import argparse

    cells, lat, names = synthetic_latency_table(tmp_path, n=300)
    predict = nb.train_latency_predictor(cells[:100], lat[:100, 0], nb.LatencyConfig(steps=150), seed=0)
    m = nb.latency_metrics(predict(cells[100:]), lat[100:, 0])
    assert m["spearman"] > 0.7, m

    parser = argparse.ArgumentParser()
    cli_nasbench.add_nasbench_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["nasbench", "latency", "--latency-csv", str(tmp_path / "lat.csv"),
                              "--device", "dev4_ms", "--shots", "10", "--cells-csv", str(tmp_path / "cells.csv"),
                              "--pretrain-steps", "50"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "MAPE" in out and "Acc(10%)" in out and "Spearman" in out and "10 designed shots" in out
    args = parser.parse_args(["nasbench", "latency", "--latency-csv", str(tmp_path / "lat.csv"),
                              "--device", "dev4_ms", "--train-size", "20", "--shot-choice", "design",
                              "--cells-csv", str(tmp_path / "cells.csv")])
    assert args.func(args) == 2
    assert "--shot-choice design" in capsys.readouterr().err
    args = parser.parse_args(["nasbench", "latency", "--latency-csv", str(tmp_path / "lat.csv"),
                              "--device", "dev4_ms", "--train-size", "20", "--pretrained", str(tmp_path / "x.pt"),
                              "--cells-csv", str(tmp_path / "cells.csv")])
    assert args.func(args) == 2
    assert "--pretrained is for --shots" in capsys.readouterr().err
    args = parser.parse_args(["nasbench", "latency", "--latency-csv", str(tmp_path / "lat.csv"),
                              "--device", "gpu_ms", "--cells-csv", str(tmp_path / "cells.csv")])
    assert args.func(args) == 2
    assert "gpu_ms" in capsys.readouterr().err


def test_new_device_workflow_shots_then_predict_every_cell(tmp_path, capsys, monkeypatch):
    """`nasbench shots` lists what to measure; `latency --predict-out` learns from those rows only."""
    import argparse
    import gzip

    from nar_tvm.cost_model import nb201_space

    cells, lat, names = synthetic_latency_table(tmp_path, n=300)
    parser = argparse.ArgumentParser()
    cli_nasbench.add_nasbench_parser(parser.add_subparsers(dest="command"))
    pretraining = ["--pretrain-csv", str(tmp_path / "lat.csv"), "--pretrain-columns", *names[:-1],
                   "--cells-csv", str(tmp_path / "cells.csv"), "--pretrain-steps", "50"]
    args = parser.parse_args(["nasbench", "shots", "--shots", "6", "--out", str(tmp_path / "shots.csv"),
                              "--save-pretrained", str(tmp_path / "fewshot.pt"), *pretraining])
    assert args.func(args) == 0
    listed = nb.load_table(tmp_path / "shots.csv", [])
    model = nb.FewShotLatencyModel.pretrain(cells, lat[:, :-1], names[:-1], nb.LatencyConfig(pretrain_steps=50), seed=0)
    expected = model.design_shots(cells, 6, seed=0)[0]
    assert listed.arch_index.tolist() == expected.tolist() and listed.cells == [cells[i] for i in expected]
    assert capsys.readouterr().out.splitlines()[0] == f"{expected[0]}\t{cells[expected[0]]}"
    saved = nb.FewShotLatencyModel.load(tmp_path / "fewshot.pt")
    assert saved.devices == names[:-1] and saved.model.encoder.cfg == model.model.encoder.cfg
    assert (saved.cfg.rank, saved.cfg.ridge_grid, saved.cfg.shot_mixes) == (model.cfg.rank, model.cfg.ridge_grid,
                                                                           model.cfg.shot_mixes)
    assert saved.codes(cells) == pytest.approx(model.codes(cells), abs=1e-6)
    assert saved.design_shots(cells, 6, seed=0)[0].tolist() == expected.tolist()

    # The new device's own CSV holds only the measured architectures.
    write_csv(tmp_path / "mine.csv", ["arch_index", "new_ms"], [[i, lat[i, -1]] for i in expected])
    args = parser.parse_args(["nasbench", "latency", "--device", "new_ms", "--latency-csv", str(tmp_path / "mine.csv"),
                              "--predict-out", str(tmp_path / "pred.csv"), *pretraining])
    assert args.func(args) == 0
    assert "its 6 measured rows" in capsys.readouterr().out
    pred = nb.load_table(tmp_path / "pred.csv", ["predicted_new_ms"])
    assert pred.arch_index.tolist() == list(range(len(cells))) and pred.cells == cells
    head = model.adapt([cells[i] for i in expected], lat[expected, -1])
    assert pred.column("predicted_new_ms") == pytest.approx(model.predict(head, cells), rel=1e-5)
    args = parser.parse_args(["nasbench", "latency", "--device", "new_ms", "--latency-csv", str(tmp_path / "mine.csv"),
                              "--cells-csv", str(tmp_path / "cells.csv"), "--pretrained", str(tmp_path / "fewshot.pt"),
                              "--predict-out", str(tmp_path / "pred3.csv")])
    assert args.func(args) == 0
    assert "pretraining" not in capsys.readouterr().err
    assert nb.load_table(tmp_path / "pred3.csv", ["predicted_new_ms"]).column("predicted_new_ms") == pytest.approx(
        pred.column("predicted_new_ms"), rel=1e-5)
    # A model pretrained on the target itself would leak it; a damaged file is one line.
    write_csv(tmp_path / "dev0.csv", ["arch_index", names[0]], [[i, lat[i, 0]] for i in expected])
    args = parser.parse_args(["nasbench", "latency", "--device", names[0], "--latency-csv", str(tmp_path / "dev0.csv"),
                              "--cells-csv", str(tmp_path / "cells.csv"), "--pretrained", str(tmp_path / "fewshot.pt"),
                              "--predict-out", str(tmp_path / "pred4.csv")])
    assert args.func(args) == 2
    assert f"pretrained on the target device {names[0]!r}" in capsys.readouterr().err
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    args = parser.parse_args(["nasbench", "shots", "--pretrained", str(tmp_path / "broken.pt"),
                              "--cells-csv", str(tmp_path / "cells.csv")])
    assert args.func(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "broken.pt" in err

    # Without --pretrain-csv, a CSV holding only the new device pretrains on the shipped table.
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    with gzip.open(shipped / "latency.csv.gz", "wt", newline="") as f:
        csv.writer(f).writerows([["arch_index", *names[:3]], *[[i, *row[:3]] for i, row in enumerate(lat)]])
    monkeypatch.setattr(nb201_space, "DEFAULT_DATA_DIR", shipped)
    args = parser.parse_args(["nasbench", "latency", "--device", "new_ms", "--latency-csv", str(tmp_path / "mine.csv"),
                              "--cells-csv", str(tmp_path / "cells.csv"), "--pretrain-steps", "20",
                              "--predict-out", str(tmp_path / "pred2.csv")])
    assert args.func(args) == 0
    assert f"3 device(s) x 300 architectures from {shipped / 'latency.csv.gz'}" in capsys.readouterr().err

    args = parser.parse_args(["nasbench", "latency", "--device", "new_ms", "--latency-csv", str(tmp_path / "mine.csv"),
                              "--shots", "4", "--predict-out", str(tmp_path / "pred.csv"), *pretraining])
    assert args.func(args) == 2
    assert "--predict-out learns from every measured row" in capsys.readouterr().err


def test_device_selection():
    true = np.array([[1.0, 2.0], [3.0, 1.0], [2.0, 2.5]])
    pred = np.array([[1.0, 1.5], [2.0, 1.0], [3.0, 2.0]])  # last one wrong: picks 2.5 over 2.0
    r = nb.device_selection(pred, true)
    assert r["top1"] == pytest.approx(2 / 3)
    assert r["mean_regret"] == pytest.approx((0 + 0 + 0.25) / 3)


def test_whole_network_opgraph_for_one_cell():
    pytest.importorskip("tvm")
    graph = cli_nasbench.network_opgraph(CELL)
    convs = sum(n.op.endswith("conv2d") for n in graph.nodes)
    # Per cell 3 convs; 15 cells; plus stem and 2 reduction blocks of 3 convs each.
    assert convs == 15 * 3 + 1 + 2 * 3
    assert graph.nodes[0].inputs[0].shape == [1, 3, 32, 32]


def tiny_model_config(**kw):
    tok = nb.CellTokenizer()
    base = dict(token_dim=tok.token_dim, static_dim=tok.static_dim, d_model=8, n_layers=3, n_heads=2,
                ffn_ratio=2, ffn_groups=2, head_hidden=8, dropout=0.0, layer_scale_init=0.1, readout="sum")
    base.update(kw)
    return nb.NARFormerV2Config(**base)


@pytest.mark.parametrize("fusion", nb.FUSIONS)
def test_feature_fusion_shapes_widths_and_gradients(fusion):
    cfg = tiny_model_config()
    torch.manual_seed(0)
    model = nb.CellNARFormer(cfg, fusion)
    batch = nb.CellTokenizer().batch(random_cells(5, 3))
    out = model(**batch)
    assert out.shape == (5,)
    # "concat" reads every block's states side by side, the others one d_model-wide vector.
    width = cfg.d_model * (cfg.n_layers if fusion == "concat" else 1)
    assert model.readout_width == width
    assert model.head[0].in_features == width + cfg.d_model  # + the static features' encoding
    out.sum().backward()
    # Every block and every readout norm gets a gradient.
    for name, p in model.named_parameters():
        if "degree" in name:  # degree embeddings: only the rows of degrees present get one
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if fusion != "last" and name.startswith(("norm_layers", "blocks.0.")):
            assert p.grad.abs().sum() > 0, name


def test_fusion_last_is_the_plain_model_and_fusion_changes_the_readout():
    cfg = tiny_model_config()
    batch = nb.CellTokenizer().batch(random_cells(4, 4))
    torch.manual_seed(1)
    plain = nb.NARFormerV2(cfg)
    torch.manual_seed(1)
    last = nb.CellNARFormer(cfg, "last")
    torch.testing.assert_close(last(**batch), plain(**batch))
    # Same weights, readout over every block: a different function of the same cells.
    fused = nb.CellNARFormer(cfg, "sum")
    fused.load_state_dict(last.state_dict(), strict=False)
    assert not torch.allclose(fused(**batch), last(**batch))
    with pytest.raises(ValueError, match="fusion"):
        nb.CellNARFormer(cfg, "max")


def test_fused_ensemble_trains_saves_and_loads(tmp_path):
    cells = random_cells(300, 5)
    y = synthetic_accuracy(cells)
    cfg = nb.AccuracyConfig(steps=30, min_epochs=1, fusion="concat", ensemble=2,
                            model=tiny_model_config(token_dim=None, static_dim=None))
    predictor, history = nb.train_accuracy_predictor(cells[:80], y[:80], cells[80:120], y[80:120],
                                                     "synthetic", cfg, seed=0)
    assert {r["member"] for r in history} == {0, 1}
    assert len(predictor.provenance["best_epoch"]) == 2
    m0, m1 = predictor.model.members
    assert not torch.equal(m0.embed[0].weight, m1.embed[0].weight)  # independent initialisations
    loaded = nb.CellPredictor.load(predictor.save(tmp_path / "ens.pt"))
    assert loaded.model.fusion == "concat" and len(loaded.model.members) == 2
    np.testing.assert_allclose(loaded.predict(cells[:20]), predictor.predict(cells[:20]), rtol=1e-5)


def test_version_1_checkpoint_loads_as_one_member(tmp_path):
    cells = random_cells(100, 6)
    y = synthetic_accuracy(cells)
    cfg = nb.AccuracyConfig(steps=10, min_epochs=1, model=tiny_model_config(token_dim=None, static_dim=None, n_layers=2))
    predictor, _ = nb.train_accuracy_predictor(cells[:60], y[:60], cells[60:], y[60:], "synthetic", cfg, seed=0)
    member = predictor.model.members[0]
    # What version 1 wrote: the bare NARFormerV2's config and state dict.
    from dataclasses import asdict
    torch.save({"format": nb.CHECKPOINT_FORMAT, "version": 1, "model_config": asdict(member.cfg),
                "tokenizer": asdict(predictor.tokenizer.config), "state_dict": member.state_dict(),
                "label": "synthetic", "knots": predictor.knots.tolist(), "labels": predictor.labels.tolist(),
                "provenance": {}}, tmp_path / "v1.pt")
    loaded = nb.CellPredictor.load(tmp_path / "v1.pt")
    np.testing.assert_allclose(loaded.predict(cells[:20]), predictor.predict(cells[:20]), rtol=1e-5)


def test_cli_train_and_evaluate_a_fused_ensemble(tmp_path, capsys):
    import argparse

    cells = random_cells(400, 7)
    acc = write_csv(tmp_path / "acc.csv", ["arch_index", "cell", "val", "test"],
                    [[i, c, y, y + 1] for i, (c, y) in enumerate(zip(cells, synthetic_accuracy(cells)))])
    parser = argparse.ArgumentParser()
    cli_nasbench.add_nasbench_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["nasbench", "train", "--accuracy-csv", str(acc), "--label", "val", "--eval-label",
                              "test", "--epochs", "2", "--fusion", "concat", "--ensemble", "2",
                              "--out", str(tmp_path / "p.pt")])
    assert args.func(args) == 0
    assert "Kendall tau" in capsys.readouterr().out
    args = parser.parse_args(["nasbench", "evaluate", "--accuracy-csv", str(acc), "--eval-label", "test",
                              "--checkpoint", str(tmp_path / "p.pt")])
    assert args.func(args) == 0
    assert "Kendall tau" in capsys.readouterr().out
    assert nb.CellPredictor.load(tmp_path / "p.pt").model.fusion == "concat"


def test_shipped_tables_hold_every_architecture_and_helps_devices():
    acc = nb.load_table(DEFAULT_ACCURACY_CSV, [nb.ACCURACY_LABEL])
    lat = nb.load_table(DEFAULT_LATENCY_CSV, cells_from=DEFAULT_ACCURACY_CSV)
    assert len(acc) == len(lat) == 15625
    assert (acc.arch_index == np.arange(15625)).all() and (lat.arch_index == acc.arch_index).all()
    assert lat.cells == acc.cells
    for device in ("gold_6226_ms", "pixel2_ms", "titan_rtx_256_ms", "1080ti_1_ms", "samsung_a50_ms"):
        assert device in lat.device_columns()
        assert (lat.column(device) > 0).all()
    # The cell column parses as NAS-Bench-201 cells and the accuracy is a percentage.
    assert 0 < acc.column(nb.ACCURACY_LABEL).min() and acc.column(nb.ACCURACY_LABEL).max() < 100
