"""The command line end to end, on tiny models and a tiny checkpoint."""
import io
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from nar_tvm.api import extract
from nar_tvm.cli import main
from nar_tvm.cost_model import NARFormerV2Config, TrainConfig, save_checkpoint, train
from nar_tvm.cost_model.synthetic import random_graph, synthetic_latency_ms
from nar_tvm.dataset import DatasetStore


def export(module, shape, path, dynamic=False):
    buf = io.BytesIO()
    kwargs = {"dynamic_axes": {"x": {0: "N"}}} if dynamic else {}
    torch.onnx.export(module.eval(), (torch.randn(*shape),), buf, dynamo=False, opset_version=17,
                      input_names=["x"], **kwargs)
    path.write_bytes(buf.getvalue())
    return path


def convnet(width):
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 4))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "small": export(convnet(4), (1, 3, 8, 8), root / "small.onnx"),
        "big": export(convnet(16), (1, 3, 16, 16), root / "big.onnx", dynamic=True),
        "gelu": export(nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU()), (1, 3, 8, 8), root / "gelu.onnx"),
    }


@pytest.fixture(scope="module")
def checkpoint(models, tmp_path_factory):
    """A predictor trained on real extracted graphs with FLOP-proportional targets."""
    graphs = [extract(convnet(w).eval(), example_inputs=(torch.randn(1, 3, r, r),), name=f"c{w}-{r}")
              for w in (2, 4, 8, 16) for r in (8, 12, 16)]
    y = np.array([1e-5 * g.flops + 0.05 for g in graphs])
    predictor, _ = train(graphs[::2], y[::2], graphs[1::2], y[1::2],
                         NARFormerV2Config(d_model=32, n_layers=1, head_hidden=32, dropout=0.05, readout="sum"),
                         TrainConfig(epochs=5, batch_size=4, lr=1e-3, loss="rse", patience=20, size_bucket_batches=1),
                         progress=False)
    predictor.provenance["level"] = "op"
    from nar_tvm.platform import PlatformSpec, fingerprint, platform_id

    fp = fingerprint(PlatformSpec())
    predictor.platform = dict(fp, platform_id=platform_id(fp))
    return save_checkpoint(predictor, tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_inspect_json_counts_ops(capsys, models):
    code, out, _ = run(capsys, "inspect", models["small"], "--json")
    info = json.loads(out)
    assert code == 0 and info["op_counts"]["relax.nn.conv2d"] == 2 and info["op_counts"]["relax.nn.relu"] == 2
    assert info["level"] == "op" and info["batch"] == 1
    code, out, _ = run(capsys, "inspect", models["small"], "--level", "fused", "--json")
    assert json.loads(out)["nodes"] < info["nodes"]


def test_predict_batch_and_unknown_ops(capsys, models, checkpoint):
    code, out, _ = run(capsys, "predict", models["big"], "--input-shape", "x=2,3,16,16",
                       "--checkpoint", checkpoint, "--json")
    assert code == 0 and json.loads(out)[0]["latency_ms"] > 0
    code, out, _ = run(capsys, "predict", models["small"], models["gelu"], "--checkpoint", checkpoint, "--json")
    preds = json.loads(out)
    assert code == 0 and [p["name"] for p in preds] == ["small", "gelu"]
    assert all(p["latency_ms"] > 0 for p in preds)
    assert preds[0]["unknown_ops"] == 0
    # opset 17 spells GELU as x * (erf(x / sqrt 2) + 1) / 2: ops the convnets never had.
    assert preds[1]["unknown_ops"] == 4
    assert set(preds[1]["unknown_op_names"]) == {"relax.divide", "relax.erf", "relax.multiply"}
    code, out, _ = run(capsys, "predict", models["gelu"], "--checkpoint", checkpoint)
    assert "4 nodes of op types unseen in training" in out and "relax.erf" in out


def test_predict_in_worker_processes_gives_the_same_predictions(capsys, models, checkpoint):
    files = [models["small"], models["gelu"], models["small"]]
    code, out, _ = run(capsys, "predict", *files, "--checkpoint", checkpoint, "--json")
    one = json.loads(out)
    code, out, _ = run(capsys, "predict", *files, "--checkpoint", checkpoint, "--json", "--jobs", "2")
    assert code == 0 and json.loads(out) == one
    # A worker's error reaches the user as the same one line.
    code, _, err = run(capsys, "predict", models["small"], models["big"], "--checkpoint", checkpoint, "--jobs", "2")
    assert code == 2 and "dynamic shape" in err and "--input-shape x=N,3,16,16" in err
    code, _, err = run(capsys, "predict", models["small"], "--checkpoint", checkpoint, "--jobs", "0")
    assert code == 2 and "jobs must be at least 1" in err


def test_predict_errors_are_clear(capsys, models, checkpoint, tmp_path, monkeypatch):
    import nar_tvm.api

    monkeypatch.setattr(nar_tvm.api, "DEFAULT_CHECKPOINT", tmp_path / "absent.pt")
    code, _, err = run(capsys, "predict", models["small"])
    assert code == 2 and "no trained default checkpoint" in err and "--checkpoint" in err
    code, _, err = run(capsys, "predict", models["big"], "--checkpoint", checkpoint)
    assert code == 2 and "dynamic shape" in err and "--input-shape x=N,3,16,16" in err
    code, _, err = run(capsys, "predict", models["small"], "--checkpoint", checkpoint, "--level", "fused")
    assert code == 2 and "trained on 'op' graphs" in err
    (tmp_path / "bad.pt").write_bytes(b"nope")
    code, _, err = run(capsys, "predict", models["small"], "--checkpoint", tmp_path / "bad.pt")
    assert code == 2 and "bad.pt" in err


def test_a_folder_stands_for_its_onnx_files_and_bad_paths_fail_before_the_checkpoint_loads(
        capsys, models, checkpoint, tmp_path):
    import shutil

    folder = tmp_path / "candidates"
    folder.mkdir()
    for name in ("b_small", "a_gelu"):
        shutil.copy(models["small" if "small" in name else "gelu"], folder / f"{name}.onnx")
    (folder / "notes.txt").write_text("not a model")
    code, out, _ = run(capsys, "predict", folder, models["small"], "--checkpoint", checkpoint, "--json")
    preds = json.loads(out)
    assert code == 0 and [p["name"] for p in preds] == ["a_gelu", "b_small", "small"]
    assert preds[1]["latency_ms"] == preds[2]["latency_ms"]  # the same network under two names
    # Each error names the path, and comes before the (here unreadable) checkpoint is opened.
    (tmp_path / "bad.pt").write_bytes(b"nope")
    (tmp_path / "empty").mkdir()
    for command in ("predict", "compare", "inspect"):
        for path, problem in ((tmp_path / "missing.onnx", "missing.onnx: no such file"),
                              (tmp_path / "empty", "empty: a folder with no .onnx files in it")):
            extra = [] if command == "inspect" else ["--checkpoint", tmp_path / "bad.pt"]
            code, out, err = run(capsys, command, models["small"], path, *extra)
            assert code == 2 and out == "" and problem in one_line(err)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_predict_keep_going_reports_a_bad_model_and_predicts_the_rest(capsys, models, checkpoint, jobs):
    files = [models["small"], models["big"], models["gelu"]]
    code, out, err = run(capsys, "predict", *files, "--checkpoint", checkpoint, "--json", "--jobs", jobs)
    assert code == 2 and out == "" and "dynamic shape" in one_line(err)
    _, out, _ = run(capsys, "predict", models["small"], models["gelu"], "--checkpoint", checkpoint, "--json")
    good = json.loads(out)
    code, out, err = run(capsys, "predict", *files, "--checkpoint", checkpoint, "--json", "--jobs", jobs,
                         "--keep-going")
    assert code == 1 and json.loads(out) == good and [p["name"] for p in good] == ["small", "gelu"]
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"{models['big']}: error: ") and "dynamic shape" in lines[0]
    assert lines[1] == "nar-tvm predict: 1 of 3 models failed (listed above)"


def test_predict_out_file_resumes_an_interrupted_batch(capsys, models, checkpoint, tmp_path):
    import shutil

    third = shutil.copy(models["small"], tmp_path / "third.onnx")
    results = tmp_path / "results.jsonl"
    code, out, _ = run(capsys, "predict", models["small"], models["gelu"], "--checkpoint", checkpoint,
                       "--out", results)
    first = [json.loads(line) for line in results.read_text().splitlines()]
    assert code == 0 and [r["model"] for r in first] == [str(models["small"]), str(models["gelu"])]
    assert len(out.strip().splitlines()) == 2 and f"{first[0]['latency_ms']:.3f} ms predicted" in out
    # A crash cut the last line short: that model is predicted again, the others are not.
    results.write_text(results.read_text()[:-20])
    code, out, err = run(capsys, "predict", models["small"], models["gelu"], third, "--checkpoint", checkpoint,
                         "--out", results)
    assert code == 0 and "1 of the 3 models are in" in err and "predicting the other 2" in err
    assert [line.split(":")[0] for line in out.strip().splitlines()] == ["gelu", "third"]
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.endswith("}")]
    assert [r["model"] for r in rows] == [str(models["small"]), str(models["gelu"]), str(third)]
    assert rows[1] == first[1] and rows[2]["latency_ms"] == first[0]["latency_ms"]
    code, out, err = run(capsys, "predict", models["small"], third, "--checkpoint", checkpoint, "--out", results)
    assert code == 0 and out == "" and "predicting the other 0" in err


def test_predict_warns_on_other_platform(capsys, models, checkpoint, tmp_path):
    from nar_tvm.cost_model import load_checkpoint

    predictor = load_checkpoint(checkpoint)
    predictor.platform["cpu"] = "Some Other CPU"
    other = save_checkpoint(predictor, tmp_path / "other.pt")
    code, out, err = run(capsys, "predict", models["small"], "--checkpoint", other)
    assert code == 0 and "warning: platform differs" in err and "Some Other CPU" in err


def test_compare_measures_and_predicts(capsys, models, checkpoint):
    code, out, _ = run(capsys, "compare", models["small"], "--checkpoint", checkpoint, "--repeat", "3", "--json")
    res = json.loads(out)["models"][0]
    assert code == 0 and res["measured_ms"] > 0 and res["predicted_ms"] > 0
    assert res["error"] == pytest.approx((res["predicted_ms"] - res["measured_ms"]) / res["measured_ms"])
    assert any("conv2d" in k for k, _, _ in res["top_kernels"])
    # A whole-graph model has no per-kernel times to set beside the measured ones.
    assert all(predicted is None for _, _, predicted in res["top_kernels"])


def test_a_measurement_on_a_shared_core_is_flagged_by_compare_and_dataset_stats(capsys, monkeypatch, checkpoint,
                                                                               tmp_path):
    import nar_tvm.compare
    from nar_tvm.measure import shared_core_warning

    measured = {"median_ms": 10.0, "cv": 0.01, "compile_s": 1.0, "cpu_share": 0.25}
    starved = nar_tvm.compare.Comparison("m", 2.5, 10.0, 0.01, 1.0, [], shared_core_warning(measured))
    monkeypatch.setattr(nar_tvm.compare, "compare", lambda *a, **k: [starved])
    code, out, _ = run(capsys, "compare", "zoo:resnet:0", "--checkpoint", checkpoint)
    assert code == 0 and "    warning: the timing got 25% of a core's time" in out and "(up to 4.0x)" in out
    code, out, _ = run(capsys, "compare", "zoo:resnet:0", "--checkpoint", checkpoint, "--json")
    assert json.loads(out)["models"][0]["shared_core"] == starved.shared_core

    _synthetic_dataset(tmp_path / "d")
    store = DatasetStore(tmp_path / "d")
    for share in (0.25, 0.95):  # measurements from before the field have none: not counted
        store.append({"job": f"shared{share}", "status": "ok", "platform_id": "p", "platform": {"threads": 1},
                      "model": {"family": "fa", "name": "x"}, "graphs": {},
                      "measurement": {**measured, "cpu_share": share}})
    code, out, _ = run(capsys, "dataset", "stats", tmp_path / "d")
    assert code == 0 and "timed on a core other work shared (< 90% of it), so inflated: 1 measurement\n" in out


def test_predicted_kernel_times_are_summed_per_kernel_name(checkpoint):
    from nar_tvm.kernel_errors import predicted_kernel_ms
    from nar_tvm.cost_model import load_checkpoint
    from nar_tvm.cost_model.synthetic import synthetic_dataset

    graphs, y = synthetic_dataset(40, seed=0)
    predictor, _ = train(graphs[:30], y[:30], graphs[30:], y[30:],
                         NARFormerV2Config(d_model=16, n_layers=1, n_heads=2, ffn_groups=4, head_hidden=16,
                                           dropout=0.05, readout="kernels"),
                         TrainConfig(epochs=2, batch_size=8, lr=1e-3, loss="rse", patience=20, size_bucket_batches=1),
                         progress=False)
    g = random_graph(np.random.default_rng(1), 4)
    for nd, kernel in zip(g.nodes, ["conv", "act", "act", None]):
        nd.kernel = kernel
    per_node = predictor.predict_kernels(g)
    assert per_node.shape == (4,) and np.all(per_node > 0)
    totals = predicted_kernel_ms(predictor, g)
    assert set(totals) == {"conv", "act"}  # a node without a kernel name is left out
    assert totals["act"] == pytest.approx(per_node[1] + per_node[2])
    # The graph's latency is its kernels' sum plus a positive remainder.
    assert predictor.predict(g).latency_ms[0] > per_node.sum()
    whole_graph = load_checkpoint(checkpoint)
    assert predicted_kernel_ms(whole_graph, g) == {}
    with pytest.raises(ValueError, match="per-kernel times need readout='kernels'"):
        whole_graph.predict_kernels(g)


def test_kernel_error_is_pooled_by_kernel_kind():
    from nar_tvm.kernel_errors import error_by_kernel_kind, kernel_kind
    from nar_tvm.passes.opgraph import OpGraph, OpNode, TensorSpec

    x = TensorSpec([1, 16, 8, 8])

    def node(kernel, ops, groups=None):
        attrs = {} if groups is None else {"groups": groups, "data_layout": "NCHW"}
        return OpNode(op=f"kernel:{ops[0]}", attrs=attrs, inputs=[x], outputs=[x], ops=ops, kernel=kernel)

    graph = OpGraph(nodes=[node("fused_conv2d", ["conv2d", "add", "relu"], groups=1),
                           node("fused_conv2d1", ["conv2d", "add"], groups=4),
                           node("fused_matmul_erf", ["matmul", "divide", "erf", "multiply"]),
                           node("fused_conv2d", ["conv2d", "add", "relu"], groups=1),  # the same kernel again
                           node("sigmoid", ["tir_sigmoid"])],
                    edges=[(i, i + 1) for i in range(4)], level="fused", inputs=[x])
    assert [kernel_kind(n) for n in graph.nodes] == ["conv2d", "conv2d (grouped)", "matmul + erf", "conv2d",
                                                     "sigmoid"]
    measured = {"fused_conv2d": 4.0, "fused_conv2d1": 2.0, "fused_matmul_erf": 3.0, "sigmoid": 1.0}
    predicted = {"fused_conv2d": 2.0, "fused_conv2d1": 1.5, "fused_matmul_erf": 1.0}  # no prediction for sigmoid
    pooled = error_by_kernel_kind([(graph, measured, predicted), (graph, measured, predicted)], scale=2.0)
    assert pooled == {"conv2d": {"kernels": 2, "measured_ms": 8.0, "predicted_ms": 8.0},
                      "conv2d (grouped)": {"kernels": 2, "measured_ms": 4.0, "predicted_ms": 6.0},
                      "matmul + erf": {"kernels": 2, "measured_ms": 6.0, "predicted_ms": 4.0}}


def _synthetic_dataset(root):
    """Synthetic graphs with made-up latencies: exercises train/evaluate, claims nothing."""
    rng = np.random.default_rng(0)
    store = DatasetStore(root)
    for fam in ("fa", "fb"):
        for i in range(15):
            g = random_graph(rng, int(rng.integers(4, 12)), name=f"{fam}{i}")
            store.append({"job": f"{fam}{i}", "status": "ok", "platform_id": "p", "platform": {"threads": 1},
                          "model": {"family": fam, "name": g.name},
                          "graphs": {"op": g.to_dict(), "fused": g.to_dict()},
                          "measurement": {"median_ms": synthetic_latency_ms(g, rng), "cv": 0.01, "compile_s": 1}})


def test_train_evaluate_and_dataset_stats(capsys, tmp_path):
    _synthetic_dataset(tmp_path / "d")
    ckpt = tmp_path / "m.pt"
    code, out, _ = run(capsys, "train", tmp_path / "d", "--out", ckpt, "--epochs", "3", "--width", "32",
                       "--layers", "1", "--labels", "first")
    assert code == 0 and ckpt.is_file() and "validation MAPE" in out
    code, out, _ = run(capsys, "evaluate", ckpt, tmp_path / "d", "--json")
    res = json.loads(out)
    assert code == 0 and set(res["families"]) == {"fa", "fb"} and res["overall"]["n"] == 4
    # The GNN baseline is a full cost model too: it trains, saves and evaluates the same way.
    gnn = tmp_path / "gnn.pt"
    code, out, _ = run(capsys, "train", tmp_path / "d", "--out", gnn, "--model", "nnlp", "--epochs", "3",
                       "--width", "16", "--readout", "kernels")
    assert code == 0 and "validation MAPE" in out
    from nar_tvm.cost_model import load_checkpoint
    from nar_tvm.cost_model.nnlp import NNLP

    loaded = load_checkpoint(gnn)
    assert isinstance(loaded.model, NNLP) and loaded.model.cfg.hidden == 16 and loaded.model.cfg.readout == "kernels"
    assert loaded.provenance["level"] == "fused" and loaded.provenance["labels"] == "min"  # the default
    assert load_checkpoint(ckpt).provenance["labels"] == "first"
    priced = tmp_path / "priced.pt"
    code, out, _ = run(capsys, "train", tmp_path / "d", "--out", priced, "--epochs", "2", "--width", "32",
                       "--layers", "1", "--readout", "kernels", "--cost-prior", "--transcendentals", "--input-shapes")
    loaded = load_checkpoint(priced)
    assert code == 0 and loaded.tokenizer.config.transcendentals and loaded.tokenizer.config.input_shape_dims == 4
    assert loaded.tokenizer.layout()["input_shape"][1] - loaded.tokenizer.layout()["input_shape"][0] == 4 * 8
    assert set(loaded.model.cfg.cost_prior["columns"]) == {"flops", "bytes", "transcendentals"}
    code, _, err = run(capsys, "train", tmp_path / "d", "--out", priced, "--transcendentals")
    assert code == 2 and "--transcendentals prices transcendental evaluations in the cost prior: add --cost-prior" in err
    code, out, _ = run(capsys, "evaluate", gnn, tmp_path / "d", "--json")
    assert code == 0 and json.loads(out)["overall"]["n"] == 4
    code, out, _ = run(capsys, "dataset", "stats", tmp_path / "d", "--json")
    assert json.loads(out)["families"]["fa"]["count"] == 15
    # A folder without shards is named as not a dataset, not reported as an empty one.
    code, out, err = run(capsys, "dataset", "stats", tmp_path)
    assert code == 2 and out == "" and f"{tmp_path}: not a dataset (no shard-*.jsonl.gz files" in one_line(err)
    code, _, err = run(capsys, "train", tmp_path / "d", "--out", ckpt, "--split", "ood:nope")
    assert code == 2 and "family 'nope' is not in the dataset" in err
    code, _, err = run(capsys, "train", tmp_path / "d", "--out", gnn, "--model", "nnlp", "--readout", "mean")
    assert code == 2 and "model 'nnlp' has no readout 'mean'" in err
    code, _, err = run(capsys, "dataset", "stats", tmp_path / "missing")
    assert code == 2 and "no such dataset" in err


def test_trained_checkpoints_carry_the_in_domain_interval_and_the_novelty_flag(capsys, tmp_path):
    """`nar-tvm train` fits what it can measure from its own split: the interval width on the
    validation models and the novelty reference; a graph unlike the training data is flagged
    and gets no interval, since the width for such graphs needs a run per family left out."""
    from nar_tvm.api import predict
    from nar_tvm.cli import _prediction_line
    from nar_tvm.cost_model import load_checkpoint
    from nar_tvm.cost_model.uncertainty import conformal_quantile
    from nar_tvm.dataset import load_samples, make_split
    from nar_tvm.passes.opgraph import OpGraph, OpNode, TensorSpec

    _synthetic_dataset(tmp_path / "d")
    ckpt = tmp_path / "m.pt"
    code, _, _ = run(capsys, "train", tmp_path / "d", "--out", ckpt, "--epochs", "2", "--width", "32", "--layers", "1")
    predictor = load_checkpoint(ckpt)
    unc = predictor.uncertainty
    assert code == 0 and unc.q_novel is None and "q_novel: not measured" in unc.source
    val = make_split(load_samples(tmp_path / "d"), "in-domain", 0)["val"]
    res = predictor.predict([s.graph("fused") for s in val])
    measured = np.array([s.latency_ms for s in val])
    assert unc.q == pytest.approx(conformal_quantile(np.log(measured / res.latency_ms)))
    # A validation graph smaller than every training graph is flagged (size) and gets no interval.
    assert res.novel.tolist() == (res.size_factor != 1.0).tolist() and 0 < res.novel.sum() < len(val)
    assert np.allclose(res.high_ms[~res.novel] / res.latency_ms[~res.novel], np.exp(unc.q))
    assert np.isnan(res.high_ms[res.novel]).all() and np.isnan(res.low_ms[res.novel]).all()
    odd = OpGraph(nodes=[OpNode(op="relax.nn.softmax", inputs=[TensorSpec([1, 8])], outputs=[TensorSpec([1, 8])],
                                ops=["relax.nn.softmax"]) for _ in range(3)],
                  edges=[(0, 1), (1, 2)], level="fused", inputs=[TensorSpec([1, 8])], name="odd")
    got = predict(odd, predictor=predictor)
    assert got.novel and got.low_ms is None and got.high_ms is None and got.latency_ms > 0
    assert ("UNLIKE THE TRAINING DATA (no interval: the checkpoint measured none for such graphs)  "
            "(3 nodes of op types unseen in training: relax.nn.softmax)") in _prediction_line(got)


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("spec, problem", [
    ("zoo:nofamily:1", "unknown zoo family 'nofamily'"),
    ("zoo:resnet:abc", "seed 'abc' is not a non-negative integer"),
    ("zoo:resnet:-1", "seed '-1' is not a non-negative integer"),
    ("zoo:resnet", "expected zoo:FAMILY:SEED"),
    ("zoo:", "expected zoo:FAMILY:SEED"),
    ("zoo:resnet:1:2", "expected zoo:FAMILY:SEED"),
])
def test_bad_zoo_specs_name_the_valid_form_and_families(capsys, checkpoint, spec, problem):
    from nar_tvm import zoo
    from nar_tvm.compare import model_bytes
    from nar_tvm.loaders import ModelLoadError

    for command in (["predict", spec, "--checkpoint", checkpoint], ["inspect", spec],
                    ["compare", spec, "--checkpoint", checkpoint]):
        code, out, err = run(capsys, *command)
        line = one_line(err)
        assert code == 2 and out == ""
        assert line.startswith(f"nar-tvm {command[0]}: error: {spec!r}: ") and problem in line
        assert "zoo:FAMILY:SEED" in line and all(family in line for family in zoo.FAMILIES)
    # compare's worker reads zoo specs through the same parser.
    with pytest.raises(ModelLoadError, match="zoo:FAMILY:SEED") as exc:
        model_bytes(spec)
    assert problem in str(exc.value)


def test_predict_and_inspect_take_zoo_specs(capsys, checkpoint):
    code, out, _ = run(capsys, "predict", "zoo:vgg:0", "--checkpoint", checkpoint, "--json")
    (pred,) = json.loads(out)
    assert code == 0 and pred["name"] == "vgg-0" and pred["latency_ms"] > 0
    code, out, _ = run(capsys, "inspect", "zoo:vgg:0", "--json")
    assert code == 0 and json.loads(out)["nodes"] == pred["nodes"]


def _foreign_checkpoints(root):
    """Files a user might pass as --checkpoint by mistake, and the reason each must be refused with."""
    root.mkdir()
    (root / "random.pt").write_bytes(bytes(np.random.default_rng(0).integers(0, 0x7f, 4096, dtype=np.uint8)))
    (root / "notes.txt").write_text("not a checkpoint\n")
    (root / "empty.pt").write_bytes(b"")
    torch.save({"weights": torch.zeros(3)}, root / "state_dict.pt")
    torch.save(nn.Linear(2, 2), root / "module.pt")
    (root / "folder.pt").mkdir()
    return {
        root / "random.pt": "not a readable checkpoint: the file starts with",
        root / "notes.txt": "not a readable checkpoint: the file starts with b'not '",
        root / "empty.pt": "the file is empty",
        root / "state_dict.pt": "not a nar-tvm checkpoint: a dict with no 'format' field (keys: weights)",
        root / "module.pt": "it holds a pickled torch.nn.modules.linear.Linear",
        root / "folder.pt": "is a directory",
    }


def test_foreign_checkpoints_are_refused_in_one_line(capsys, models, tmp_path):
    for path, reason in _foreign_checkpoints(tmp_path / "ckpts").items():
        code, out, err = run(capsys, "predict", models["small"], "--checkpoint", path)
        line = one_line(err)
        assert code == 2 and out == ""
        assert line.startswith(f"nar-tvm predict: error: {path}: ") and reason in line, line
        assert "weights_only" not in line


def test_compile_takes_o_as_out(tmp_path):
    from nar_tvm.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["compile", "model.onnx", "-o", "lib.so"])
    assert args.out == "lib.so" and args.func.__name__ == "cmd_compile"
    assert parser.parse_args(["compile", "model.onnx", "--out", "lib.so"]).out == "lib.so"
    with pytest.raises(SystemExit):
        parser.parse_args(["compile", "model.onnx"])


def test_deferred_parsers_keep_their_defaults(capsys):
    from nar_tvm.cli import build_parser
    from nar_tvm.cost_model import nasbench as nb
    from nar_tvm.dataset import TRAINING_LABELS

    parser = build_parser()
    args = parser.parse_args(["train", "data", "--out", "m.pt"])
    assert args.labels == TRAINING_LABELS and args.level == "fused" and args.func.__name__ == "cmd_train"
    args = parser.parse_args(["evaluate", "m.pt", "data", "--labels", "first"])
    assert args.labels == "first" and args.part == "test"
    args = parser.parse_args(["nasbench", "train", "--fusion", "sum"])
    assert (args.label, args.eval_label, args.fusion) == (nb.ACCURACY_LABEL, nb.ACCURACY_EVAL_LABEL, "sum")
    args = parser.parse_args(["nasbench", "latency", "--device", "gold_6226_ms"])
    assert args.pretrain_steps == nb.LatencyConfig.pretrain_steps
    with pytest.raises(SystemExit):
        parser.parse_args(["nasbench", "train", "--fusion", "nope"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["nasbench", "train", "--help"])
    assert f"(default {nb.AccuracyConfig.fusion})" in " ".join(capsys.readouterr().out.split())


def test_parser_builds_without_heavy_imports():
    import subprocess
    import sys

    code = ("import sys, nar_tvm.cli; nar_tvm.cli.build_parser(); "
            "print(sorted(m for m in ('tvm','torch','scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_remeasure_refuses_a_seed_range_it_would_ignore(capsys, tmp_path):
    code, out, err = run(capsys, "profile", "--families", "vgg", "--per-family", "60", "--remeasure", "1.0",
                         "--out", tmp_path / "d")
    assert code == 2 and out == "" and "--per-family and --start-seed do not apply to it" in one_line(err)
    assert not (tmp_path / "d").exists()
