"""Few-shot calibration and prediction intervals, on synthetic graphs with known answers."""
import math

import numpy as np
import pytest

from nar_tvm.cost_model import LatencyPredictor, Tokenizer, calibration
from nar_tvm.cost_model.model import NARFormerV2, NARFormerV2Config
from nar_tvm.cost_model.synthetic import synthetic_dataset
from nar_tvm.cost_model.uncertainty import Uncertainty, conformal_quantile, fit_uncertainty, op_mix
from nar_tvm.passes.opgraph import OpGraph, OpNode, TensorSpec


@pytest.fixture(scope="module")
def graphs():
    return synthetic_dataset(30, seed=3)[0]


def predictor_for(graphs, readout="kernels"):
    import torch

    tok = Tokenizer().fit(graphs)
    torch.manual_seed(0)
    cfg = NARFormerV2Config(token_dim=tok.token_dim, static_dim=tok.static_dim, d_model=16, n_heads=2,
                            ffn_groups=2, head_hidden=16, dropout=0.05, readout=readout)
    return LatencyPredictor(tok, NARFormerV2(cfg).eval())


def test_a_uniformly_slower_machine_is_fitted_exactly_by_a_scale(graphs):
    pred = predictor_for(graphs)
    base = pred.predict(graphs[:10]).latency_ms
    fit = calibration.fit(pred, graphs[:10], base * 1.25)
    # Every method can express a pure scale, and leave-one-out finds it from 9 shots each.
    assert fit.loo_mape["none"] == pytest.approx(0.2, abs=1e-6)
    assert fit.loo_mape["scale"] < 1e-6 and fit.method == "scale"
    assert fit.params["log_scale"] == pytest.approx(math.log(1.25))
    assert max(abs(r) for r in fit.loo_log_residuals) < 1e-6
    assert set(fit.loo_mape) == {"none", "scale", "affine", "kernel-classes", "head"}


def test_kernel_classes_recover_a_machine_slow_only_at_convolutions(graphs):
    pred = predictor_for(graphs)
    f = calibration.features(pred, graphs)
    # The class split adds up to the prediction: the calibration starts where the model is.
    assert np.allclose(np.log(f.class_ms.sum(axis=1)), f.log_ms, atol=1e-6)
    conv = calibration.KERNEL_CLASSES.index("conv")
    assert (f.class_ms[:, conv] > 0).mean() > 0.5
    scales = np.ones(f.class_ms.shape[1])
    scales[conv] = 2.0
    measured = f.class_ms @ scales
    fit = calibration.fit(pred, graphs[:20], measured[:20], methods=["scale", "kernel-classes"])
    assert fit.method == "kernel-classes"
    assert fit.loo_mape["kernel-classes"] < 0.5 * fit.loo_mape["scale"]
    held_out = np.exp(calibration.apply(fit.method, fit.params, calibration._subset(f, slice(20, 30))))
    assert np.mean(np.abs(held_out / measured[20:] - 1)) < 0.05


def test_the_interval_pays_for_choosing_the_method(graphs):
    pred = predictor_for(graphs)
    f = calibration.features(pred, graphs[:10])
    # A machine where an affine map is barely better than a scale: which one the rule picks
    # depends on which shot is left out.
    rng = np.random.default_rng(4)
    measured = np.exp(1.2 * f.log_ms + 0.3 + rng.normal(0, 0.15, 10))
    fit = calibration.fit(pred, graphs[:10], measured, methods=["scale", "affine"])
    log_y = np.log(measured)
    # Each shot's residual is the leave-one-out residual of the method the rule takes from the
    # other nine shots' errors: recompute that choice from the per-method residuals by hand.
    per_method = {"none": log_y - f.log_ms}
    for method in ("scale", "affine"):
        per_method[method] = np.array([
            log_y[i] - calibration._fit_predict(method, pred, f, None, log_y,
                                                [j for j in range(10) if j != i], [i])[1][0]
            for i in range(10)])
    for i, r in enumerate(fit.selection_log_residuals):
        mape = {m: float(np.mean(np.delete(np.abs(np.exp(res) - 1), i))) for m, res in per_method.items()}
        lowest = min(mape.values())
        chosen = next(m for m in ("none", "scale", "affine") if mape[m] <= lowest * 1.1 + 1e-12)
        assert r == pytest.approx(per_method[chosen][i], abs=1e-9)
    assert np.allclose(fit.loo_log_residuals, per_method[fit.method], atol=1e-9)
    assert not np.allclose(fit.selection_log_residuals, fit.loo_log_residuals)
    # Ten shots at 90%: the finite-sample quantile is the largest of the ten.
    assert fit.half_width() == pytest.approx(max(abs(r) for r in fit.selection_log_residuals))
    few = calibration.fit(pred, graphs[:4], measured[:4])
    assert few.half_width() == 0.0  # too few shots to measure this machine's spread


def test_few_shots_use_the_scale_alone_and_bad_input_is_refused(graphs):
    pred = predictor_for(graphs)
    fit = calibration.fit(pred, graphs[:3], [1.0, 2.0, 3.0])
    assert set(fit.loo_mape) == {"none", "scale"}
    with pytest.raises(ValueError, match="one measured latency per graph"):
        calibration.fit(pred, graphs[:3], [1.0, 2.0])
    with pytest.raises(ValueError, match="positive and finite"):
        calibration.fit(pred, graphs[:2], [1.0, 0.0])
    with pytest.raises(ValueError, match="unknown calibration method"):
        calibration.apply("magic", {}, calibration.features(pred, graphs[:2]))


def test_a_calibrated_predictor_applies_its_calibration(graphs):
    pred = predictor_for(graphs)
    base = pred.predict(graphs).latency_ms
    calibrated = LatencyPredictor(pred.tokenizer, pred.model, {}, {
        "calibration": {"method": "scale", "params": {"log_scale": math.log(0.5)}, "q": 0.0}})
    assert np.allclose(calibrated.predict(graphs).latency_ms, base * 0.5)


def test_head_fine_tuning_moves_only_the_output_layers(graphs):
    pred = predictor_for(graphs)
    base = pred.predict(graphs[:12]).latency_ms
    tokens = pred.tokenizer.encode_many(graphs[:12])
    model = calibration._fit_head(pred, tokens, np.log(base * 1.5))
    before, after = dict(pred.model.named_parameters()), dict(model.named_parameters())
    moved = {n for n in before if not np.allclose(before[n].detach().numpy(), after[n].detach().numpy())}
    assert moved and all(n.split(".")[0] in ("head", "kernel_head") for n in moved)
    tuned = LatencyPredictor(pred.tokenizer, model).predict(graphs[:12]).latency_ms
    assert np.mean(np.abs(tuned / (base * 1.5) - 1)) < np.mean(np.abs(base / (base * 1.5) - 1))


def test_conformal_quantile_is_the_finite_sample_rank():
    r = [0.1, -0.5, 0.2, 0.3, -0.05, 0.4, 0.15, 0.25, 0.35, 0.45]
    # ceil(11 * 0.9) = 10th smallest of 10 absolute values.
    assert conformal_quantile(r) == 0.5
    assert conformal_quantile(list(range(100))) == 90  # the 91st smallest of 0..99
    with pytest.raises(ValueError):
        conformal_quantile([])


def test_the_width_for_new_families_is_a_quantile_over_families_not_models():
    from nar_tvm.cost_model.uncertainty import family_conformal_quantile

    # Nine easy families of 20 models and a hard one of 2: pooled, the hard family's models are
    # 1% of the residuals and fall above the 90% rank; over families, its width is one of ten.
    easy = {f"easy{i}": [0.01 * (i + 1)] * 20 for i in range(9)}
    hard = {"hard": [0.5] * 2}
    assert conformal_quantile([r for rs in {**easy, **hard}.values() for r in rs]) == pytest.approx(0.09)
    assert family_conformal_quantile({**easy, **hard}) == pytest.approx(0.5)  # the 10th of 10 widths
    # Each family's own width is its conformal quantile, not its largest residual.
    spread = {f"f{i}": list(np.linspace(0.0, 0.1 * (i + 1), 19)) + [5.0] for i in range(10)}
    assert family_conformal_quantile(spread) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no families"):
        family_conformal_quantile({})


def _odd_graph() -> OpGraph:
    nodes = [OpNode(op="relax.nn.softmax", inputs=[TensorSpec([1, 8])], outputs=[TensorSpec([1, 8])],
                    ops=["relax.nn.softmax"]) for _ in range(3)]
    return OpGraph(nodes=nodes, edges=[(0, 1), (1, 2)], level="op", inputs=[TensorSpec([1, 8])])


def test_intervals_cover_with_their_width_and_flag_graphs_unlike_training(graphs):
    pred = predictor_for(graphs)
    val = graphs[20:]
    truth = pred.predict(val).latency_ms * np.exp(np.linspace(-0.3, 0.3, len(val)))
    unc = fit_uncertainty(pred, graphs[:20], val, truth, novel_residuals_by_family={"a": [0.9] * 10})
    assert unc.q == pytest.approx(0.3) and unc.q_novel == pytest.approx(0.9)
    pred.provenance["uncertainty"] = Uncertainty.from_state(unc.to_state()).to_state()
    res = pred.predict([*graphs[:5], _odd_graph()])
    assert list(res.novel) == [False] * 5 + [True]
    ratio = res.high_ms / res.latency_ms
    assert np.allclose(ratio[:5], math.exp(0.3), rtol=1e-6) and ratio[5] == pytest.approx(math.exp(0.9))
    assert np.allclose(res.low_ms * res.high_ms, res.latency_ms ** 2)
    # Training graphs sit at distance 0 from the reference (all 20 fit under the sample cap).
    mixes = op_mix(graphs[:3], pred.tokenizer.vocab)
    assert np.allclose(mixes.sum(axis=1) >= 1.0, True)
    assert (unc.novelty(graphs[:20], pred.tokenizer.vocab) == 0).all()


def test_graphs_outside_the_training_size_range_are_flagged_as_extrapolated(graphs):
    from nar_tvm.cost_model.uncertainty import size_extent

    pred = predictor_for(graphs)
    val = graphs[20:]
    unc = fit_uncertainty(pred, graphs[:20], val, pred.predict(val).latency_ms * 1.1, novel_residuals_by_family={"a": [0.9] * 10})
    largest = max(graphs[:20], key=lambda g: g.flops)
    assert unc.extent[0].tolist() == [min(g.flops for g in graphs[:20]), largest.flops]
    assert unc.extent[1, 1] == max(g.memory_access for g in graphs[:20])
    # Same op mix, a hundred times the arithmetic: only its size is new.
    big = OpGraph.from_dict(largest.to_dict())
    for node in big.nodes:
        node.flops *= 100
    pred.provenance["uncertainty"] = unc.to_state()
    res = pred.predict([largest, big])
    assert unc.novelty([big], pred.tokenizer.vocab).tolist() == [0.0]
    assert res.novel.tolist() == [False, True]
    assert res.size_factor[0] == 1.0 and res.size_factor[1] == pytest.approx(100.0)
    assert res.high_ms[1] / res.latency_ms[1] == pytest.approx(math.exp(0.9))
    smallest = min(graphs[:20], key=lambda g: g.memory_access)
    tiny = OpGraph.from_dict(smallest.to_dict())
    for node in tiny.nodes:
        node.outputs = [TensorSpec([1]) for _ in node.outputs]
        node.inputs = [TensorSpec([1]) for _ in node.inputs]
        node.weights = []
    factor = unc.size_factor([tiny])[0]
    assert factor < 1.0 and factor == pytest.approx(min(tiny.memory_access / unc.extent[1, 0],
                                                        max(tiny.flops, 1) / unc.extent[0, 0]))
    # The range survives the checkpoint; a fit recorded without one checks no size.
    assert np.array_equal(Uncertainty.from_state(unc.to_state()).extent, size_extent(graphs[:20]))
    state = unc.to_state()
    del state["extent"]
    assert Uncertainty.from_state(state).size_factor([big, tiny]).tolist() == [1.0, 1.0]


def test_the_prediction_line_says_how_far_a_size_is_extrapolated():
    from nar_tvm.api import Prediction
    from nar_tvm.cli import _prediction_line

    line = _prediction_line(Prediction("resnet50", 1264.0, "fused", 57, 0, (), 1000.0, 1500.0, True, 11.9))
    assert "UNLIKE THE TRAINING DATA" in line and "11.9x the size of the largest training graph" in line
    line = _prediction_line(Prediction("tiny", 0.1, "fused", 3, 0, (), 0.05, 0.2, True, 0.25))
    assert "0.25x the size of the smallest training graph" in line
    assert "extrapolated" not in _prediction_line(Prediction("r18", 9.0, "fused", 20, 0, (), 8.0, 10.0, False, 1.0))


def test_novelty_threshold_grows_with_its_quantile(graphs):
    from nar_tvm.cost_model.uncertainty import NOVELTY_QUANTILES, reference_mixes, reference_thresholds

    vocab = predictor_for(graphs).tokenizer.vocab
    mixes, thresholds = reference_thresholds(graphs[:20], vocab)
    assert list(thresholds) == list(NOVELTY_QUANTILES)
    assert all(a <= b for a, b in zip(thresholds.values(), list(thresholds.values())[1:]))
    for q in (0.5, 0.99):
        again, threshold = reference_mixes(graphs[:20], vocab, quantile=q)
        assert threshold == thresholds[q] and np.array_equal(again, mixes)


def _conv_graph(groups_per_layer):
    """A chain of fused conv kernels on 16-channel NCHW maps, one per `groups` value."""
    nodes = []
    for groups in groups_per_layer:
        spec = TensorSpec([1, 16, 8, 8])
        nodes.append(OpNode(op="kernel:conv2d", attrs={"groups": groups, "data_layout": "NCHW"}, inputs=[spec],
                            outputs=[spec], weights=[TensorSpec([16, 16 // groups, 3, 3])],
                            ops=["conv2d", "relu"]))
    return OpGraph(nodes=nodes, edges=[(i, i + 1) for i in range(len(nodes) - 1)], level="fused",
                   inputs=[TensorSpec([1, 16, 8, 8])])


def test_novelty_tells_grouped_from_dense_and_depthwise_convolutions():
    from nar_tvm.cost_model.tokenizer import Vocabulary
    from nar_tvm.cost_model.uncertainty import conv_kind

    dense, depthwise, grouped = _conv_graph([1, 1]), _conv_graph([1, 16]), _conv_graph([1, 4])
    assert [conv_kind(n) for n in grouped.nodes] == ["dense", "grouped"]
    assert conv_kind(depthwise.nodes[1]) == "depthwise"
    assert conv_kind(OpNode(op="kernel:add", ops=["add"])) is None
    vocab = Vocabulary.fit([dense])
    # The op names are the same in all three; only descriptor 2 sees the kind of convolution.
    assert np.array_equal(op_mix([dense], vocab, 1), op_mix([grouped], vocab, 1))
    mixes = op_mix([dense, depthwise, grouped], vocab)
    assert mixes.shape == (3, len(vocab) + 2)
    assert mixes[:, -2:].tolist() == [[0.0, 0.0], [0.5, 0.0], [0.0, 0.5]]
    # A checkpoint whose interval fit predates the descriptor keeps computing plain op mixes.
    old = Uncertainty(0.1, None, op_mix([dense], vocab, 1), 0.1)
    state = old.to_state()
    del state["descriptor"]
    restored = Uncertainty.from_state(state)
    assert restored.descriptor == 1 and restored.novelty([grouped], vocab).tolist() == [0.0]
    current = Uncertainty(0.1, None, op_mix([dense], vocab), 0.1)
    assert current.novelty([grouped], vocab).tolist() == [pytest.approx(0.5)]
    with pytest.raises(ValueError, match="descriptor"):
        op_mix([dense], vocab, 3)


def test_calibrate_measures_here_and_the_commands_pick_the_calibration_up(tmp_path, monkeypatch):
    from nar_tvm import calibrate as cal
    from nar_tvm.api import DEFAULT_CHECKPOINT, load_predictor
    from nar_tvm.cost_model import save_checkpoint
    from nar_tvm.measure import Protocol
    from nar_tvm.probe import PANEL

    monkeypatch.setenv("NAR_TVM_HOME", str(tmp_path))
    base = load_predictor(DEFAULT_CHECKPOINT, use_calibration=False)
    fast = Protocol(warmup=1, repeat=3, min_repeat_ms=1)
    fit, probe, fingerprint, records = cal.calibrate(base, shots=2, protocol=fast, progress=False,
                                                     families=["nasbench201"])
    assert [r["job"].split("@")[0] for r in records] == ["zoo:nasbench201:9000", "zoo:nasbench201:9001"]
    assert sorted(probe["ms"]) == sorted(PANEL) and records[0]["probe"] == probe
    assert fit.method in ("none", "scale") and set(fit.loo_mape) == {"none", "scale"}
    calibrated = cal.calibrated_predictor(base, fit, probe, fingerprint, DEFAULT_CHECKPOINT)
    assert calibrated.platform["cpu"] == fingerprint["cpu"] and calibrated.calibration["probe"] == probe
    cal.calibrated_path(DEFAULT_CHECKPOINT).parent.mkdir(parents=True)
    save_checkpoint(calibrated, cal.calibrated_path(DEFAULT_CHECKPOINT))

    # With no --checkpoint the calibration for this machine wins; on another machine it warns.
    loaded = load_predictor()
    assert loaded.calibration["machine_id"] == cal.machine_id()
    assert cal.machine_warnings(loaded) == []
    graphs = [OpGraph.from_dict(r["graphs"]["fused"]) for r in records]
    scale = math.exp(fit.params.get("log_scale", 0.0))
    assert np.allclose(loaded.predict(graphs).latency_ms, base.predict(graphs).latency_ms * scale)
    monkeypatch.setattr(cal, "machine_id", lambda: "another@machine")
    assert "run `nar-tvm calibrate` here" in cal.machine_warnings(loaded)[0]
    # The shots were kept: calibrating again measures nothing twice.
    monkeypatch.undo()
    monkeypatch.setenv("NAR_TVM_HOME", str(tmp_path))
    again = cal.calibrate(base, shots=2, protocol=fast, progress=False, families=["nasbench201"])[3]
    assert [r["time"] for r in again] == [r["time"] for r in records]


def test_calibrate_on_the_users_own_models_keys_files_by_content_and_names_the_ones_that_fail(
        tmp_path, monkeypatch, capsys):
    from nar_tvm import calibrate as cal
    from nar_tvm.api import DEFAULT_CHECKPOINT, load_predictor
    from nar_tvm.compare import model_bytes
    from nar_tvm.loaders import ModelLoadError
    from nar_tvm.measure import Protocol

    monkeypatch.setenv("NAR_TVM_HOME", str(tmp_path))
    base = load_predictor(DEFAULT_CHECKPOINT, use_calibration=False)
    fast = Protocol(warmup=1, repeat=3, min_repeat_ms=1)
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(model_bytes("zoo:nasbench201:9005")[1])
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(ModelLoadError, match="missing.onnx: no such file"):
        cal.calibrate(base, shots=0, models=[str(tmp_path / "missing.onnx")], protocol=fast, progress=False)
    with pytest.raises(ValueError, match="--shots must be at least 1"):
        cal.calibrate(base, shots=0, protocol=fast, progress=False)

    fit, _, _, records = cal.calibrate(base, shots=0, models=[str(mine), str(broken), "zoo:nasbench201:9006"],
                                       protocol=fast, progress=False)
    keys = [r["job"].split("@")[0] for r in records]
    assert len(keys) == 2 and keys[1] == "zoo:nasbench201:9006"
    assert keys[0].startswith("file:mine:") and records[0]["model"]["params"]["source"] == str(mine.resolve())
    assert fit.shots == [r["model"]["name"] for r in records]
    assert "broken.onnx could not be measured (extract)" in capsys.readouterr().err
    # The same bytes again are not measured twice; the same name with other bytes is a new shot.
    again = cal.calibrate(base, shots=0, models=[str(mine)], protocol=fast, progress=False)[3]
    assert [r["time"] for r in again] == [records[0]["time"]]
    mine.write_bytes(model_bytes("zoo:nasbench201:9007")[1])
    edited = cal.calibrate(base, shots=0, models=[str(mine)], protocol=fast, progress=False)[3]
    assert edited[0]["job"] != records[0]["job"] and edited[0]["job"].startswith("file:mine:")


def test_calibrate_cli_passes_own_models_and_shapes_and_takes_no_zoo_shots_unless_asked(monkeypatch, capsys, tmp_path):
    from nar_tvm import calibrate as cal
    from nar_tvm.cli import main

    monkeypatch.setenv("NAR_TVM_HOME", str(tmp_path))
    seen = []

    def fake(predictor, shots, affinity, protocol, store, models=(), input_shapes=None):
        seen.append((shots, list(models), input_shapes))
        raise ValueError("stop here")

    monkeypatch.setattr(cal, "calibrate", fake)
    assert main(["calibrate", "--models", "a.onnx", "zoo:vit:3", "--input-shape", "ids=1,64"]) == 2
    assert main(["calibrate", "--models", "a.onnx", "--shots", "4"]) == 2
    assert main(["calibrate"]) == 2
    assert seen == [(0, ["a.onnx", "zoo:vit:3"], {"ids": [1, 64]}), (4, ["a.onnx"], None), (10, [], None)]
    assert "nar-tvm calibrate: error: stop here" in capsys.readouterr().err
