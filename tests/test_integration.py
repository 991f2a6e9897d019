"""Registered cost model: global function, AnnotateLatency, pipeline and device selection."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import tvm
from tvm import relax

import nar_tvm
from nar_tvm.cost_model import NARFormerV2Config, TrainConfig, load_checkpoint, save_checkpoint, train
from nar_tvm.cost_model.predictor import PredictionResult
from nar_tvm.cost_model.synthetic import random_graph, synthetic_latency_ms
from nar_tvm.integration import (LATENCY_ATTR, MODEL_ATTR, AnnotateLatency, NotRegisteredError,
                                 SetVirtualDevice, module_graph, registered, target_of)
from nar_tvm.loaders import load_onnx
from nar_tvm.profiler import onnx_bytes_of
from nar_tvm.cli import add_compile_parser, add_select_device_parser
from nar_tvm.selection import (CostGuidedPipeline, DeviceOption, SelectDevice, SelectionError, compile_candidate,
                               select_device, select_pipeline)

CPU = {"kind": "llvm"}


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x)) + x
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def onnx_bytes():
    torch.manual_seed(0)
    return onnx_bytes_of(TinyNet().eval(), torch.randn(1, 3, 8, 8))


@pytest.fixture(scope="module")
def mod(onnx_bytes):
    return load_onnx(onnx_bytes, None, "tiny").mod


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real NAR-Former V2 checkpoint, trained in seconds on synthetic graphs."""
    rng = np.random.default_rng(0)
    graphs = [random_graph(rng, int(rng.integers(5, 10))) for _ in range(12)]
    y = np.array([synthetic_latency_ms(g, rng) for g in graphs])
    predictor, _ = train(graphs[:8], y[:8], graphs[8:], y[8:],
                         model_cfg=NARFormerV2Config(d_model=16, n_layers=1, n_heads=2, ffn_groups=2,
                                                     head_hidden=16, dropout=0.05, readout="sum"),
                         train_cfg=TrainConfig(epochs=1, batch_size=8, patience=None, lr=1e-3, loss="rse",
                                               size_bucket_batches=1), progress=False)
    predictor.platform = {"pipeline": "default", "platform_id": "synthetic"}
    predictor.provenance["level"] = "op"
    return save_checkpoint(predictor, tmp_path_factory.mktemp("ckpt") / "tiny.pt")


class Stub:
    """Predictor interface with a latency fixed per instance (or computed from the graph)."""

    def __init__(self, ms=None, pipeline="default", level="fused", target=None, per_node_ms=None, pipelines=None):
        self.ms = ms
        self.per_node_ms = per_node_ms
        self.platform = {"pipeline": pipeline, "platform_id": f"stub-{pipeline}",
                         "target": json.dumps(target or CPU)}
        if pipelines:
            self.platform["pipelines"] = list(pipelines)
        self.provenance = {"level": level}
        self.graphs = []

    def predict(self, graphs):
        self.graphs.extend(graphs)
        ms = [self.ms if self.ms is not None else self.per_node_ms * g.num_nodes for g in graphs]
        return PredictionResult(np.array(ms, dtype=np.float64), np.zeros(len(graphs), dtype=np.int64),
                                [() for _ in graphs])


# -------------------------------------------------------------- registration
def test_registered_predictor_is_a_tvm_global_function(mod, trained):
    predictor = nar_tvm.register(trained)
    func = tvm.get_global_func("nar_tvm.predict_latency")
    ms = func(mod, tvm.target.Target(CPU))
    assert isinstance(ms, float) and ms > 0
    # Same number as the predictor on the extracted graph: the function adds no arithmetic.
    graph = module_graph(mod, "default", "op", CPU)
    assert ms == pytest.approx(float(predictor.predict([graph]).latency_ms[0]))
    info = json.loads(tvm.get_global_func("nar_tvm.predict_latency.info")())
    assert info["level"] == "op" and info["platform_id"] == "synthetic"


def test_annotate_latency_inside_a_sequential_pipeline(mod, trained):
    nar_tvm.register(trained)
    annotate = AnnotateLatency()
    with tvm.target.Target(CPU):
        out = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(), annotate,
                                        relax.transform.LegalizeOps()])(mod)
    attrs = out["main"].attrs
    assert float(attrs[LATENCY_ATTR]) == pytest.approx(annotate.latency_ms)
    assert str(attrs[MODEL_ATTR]["platform_id"]) == "synthetic"
    assert LATENCY_ATTR in out.script()
    assert mod["main"].attrs is None or LATENCY_ATTR not in mod["main"].attrs  # input left alone


def test_annotate_latency_names_the_missing_registration(mod):
    with pytest.raises(NotRegisteredError, match="nar_tvm.register"):
        AnnotateLatency(func="nar_tvm.nothing_here")
    with pytest.raises(NotRegisteredError):
        registered("nar_tvm.nothing_here")


# ---------------------------------------------------------------- pipelines
def test_graph_level_passes_change_the_scored_graph(mod):
    graphs = {c: module_graph(mod, c, "fused", CPU) for c in ("default", "nofuse", "nhwc", "dlight")}
    assert graphs["nofuse"].num_nodes > graphs["default"].num_nodes  # one kernel per op
    assert graphs["dlight"].content_hash() == graphs["default"].content_hash()  # schedules only
    assert graphs["nhwc"].content_hash() != graphs["default"].content_hash()


def test_selection_follows_the_known_ordering_and_compiles_only_the_winner(mod, monkeypatch):
    # Candidates with known latencies: nhwc < default < nofuse.
    stubs = {"default": Stub(2.0, "default"), "nofuse": Stub(3.0, "nofuse"), "nhwc": Stub(1.0, "nhwc")}
    sel = select_pipeline(mod, stubs, CPU)
    assert sel.choice == "nhwc"
    assert [s.candidate for s in sorted(sel.scores, key=lambda s: s.predicted_ms)] == ["nhwc", "default", "nofuse"]
    assert "<- chosen" in sel.report() and sel.to_dict()["choice"] == "nhwc"
    # Each candidate's own graph-level result was scored.
    assert stubs["nofuse"].graphs[0].num_nodes > stubs["default"].graphs[0].num_nodes

    import nar_tvm.measure as measure

    compiled = []
    real = measure.compile_pipeline
    monkeypatch.setattr(measure, "compile_pipeline", lambda name, *a, **k: compiled.append(name) or real(name, *a, **k))
    guided = CostGuidedPipeline(stubs, CPU)
    ex = tvm.compile(mod, tvm.target.Target(CPU), relax_pipeline=guided)
    assert compiled == ["nhwc"] and guided.selection.choice == "nhwc"
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(np.ones((1, 3, 8, 8), "float32")))
    assert out.numpy().shape == (1, 4)


def test_selection_errors_name_the_problem(mod, tmp_path):
    with pytest.raises(SelectionError, match="unknown candidate pipelines \\['fastest'\\]"):
        select_pipeline(mod, {"fastest": Stub(1.0)}, CPU)
    with pytest.raises(SelectionError, match="missing checkpoint for candidate pipeline 'nhwc'"):
        select_pipeline(mod, {"nhwc": tmp_path / "absent.pt"}, CPU)
    with pytest.raises(SelectionError, match="trained on pipeline 'default'"):
        select_pipeline(mod, {"nhwc": Stub(1.0, "default")}, CPU)
    # One shared checkpoint is allowed on request; it scores graphs, so identical graphs tie.
    shared = Stub(per_node_ms=0.5)
    sel = select_pipeline(mod, {"default": shared, "dlight": shared, "nofuse": shared}, CPU, allow_mismatch=True)
    by = {s.candidate: s.predicted_ms for s in sel.scores}
    assert by["default"] == by["dlight"] < by["nofuse"]
    # A joint checkpoint trained on several pipelines' profiles serves each of them, and only them.
    joint = Stub(per_node_ms=0.5, pipelines=["default", "nofuse"])
    sel = select_pipeline(mod, {"default": joint, "nofuse": joint}, CPU)
    assert sel.choice == "default"
    with pytest.raises(SelectionError, match="trained on pipeline 'default', 'nofuse'"):
        select_pipeline(mod, {"nhwc": joint}, CPU)


def test_compile_cli_writes_library_and_report(tmp_path, trained, onnx_bytes, monkeypatch):
    import argparse

    import nar_tvm.api

    onnx_path = tmp_path / "tiny.onnx"
    onnx_path.write_bytes(onnx_bytes)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_compile_parser(sub)
    add_select_device_parser(sub)
    out = tmp_path / "tiny.so"
    args = parser.parse_args(["compile", str(onnx_path), "--out", str(out), "--select", "--allow-mismatch",
                              "--checkpoint", f"default={trained}", "--checkpoint", f"nofuse={trained}"])
    assert args.func(args) == 0
    report = json.loads((tmp_path / "tiny.so.report.json").read_text())
    assert out.is_file() and report["choice"] in ("default", "nofuse") and len(report["candidates"]) == 2
    # One checkpoint trained on several pipelines stands for all of them.
    predictor = load_checkpoint(trained)
    predictor.platform["pipelines"] = ["default", "nofuse"]
    joint = save_checkpoint(predictor, tmp_path / "joint.pt")
    args = parser.parse_args(["compile", str(onnx_path), "--out", str(out), "--select", "--checkpoint", str(joint)])
    assert args.func(args) == 0
    report = json.loads((tmp_path / "tiny.so.report.json").read_text())
    assert sorted(c["candidate"] for c in report["candidates"]) == ["default", "nofuse"]
    # Without --checkpoint, the shipped joint checkpoint is used, or the error says none ships.
    args = parser.parse_args(["compile", str(onnx_path), "--out", str(out), "--select"])
    monkeypatch.setattr(nar_tvm.api, "PIPELINES_CHECKPOINT", joint)
    assert args.func(args) == 0
    monkeypatch.setattr(nar_tvm.api, "PIPELINES_CHECKPOINT", tmp_path / "absent.pt")
    with pytest.raises(SelectionError, match="none ships here"):
        args.func(args)
    args = parser.parse_args(["select-device", str(onnx_path), "--platforms", f"cpu={trained}", "gpu"])
    with pytest.raises(SelectionError, match="missing checkpoint for platform 'gpu'"):
        args.func(args)


# ------------------------------------------------------------------ devices
def test_device_selection_picks_the_fastest_within_budgets(mod):
    gpu = {"kind": "cuda", "host": {"kind": "llvm"}}
    platforms = {"cpu": Stub(5.0, level="op", target=CPU),
                 "gpu": DeviceOption(Stub(1.0, level="op", target=gpu), memory_mb=1024),
                 "npu": Stub(3.0, level="op", target=CPU)}
    sel = select_device(mod, platforms)
    assert sel.choice == "gpu" and "3.00x faster than npu" in sel.explain()
    assert select_device(mod, platforms, latency_budget_ms=0.5).choice is None
    # The GPU offers too little memory for the model: the next fastest device wins.
    tight = dict(platforms, gpu=DeviceOption(Stub(1.0, level="op", target=gpu), memory_mb=1e-4))
    sel = select_device(mod, tight)
    assert sel.choice == "npu" and "MB available" in sel.explain()
    with pytest.raises(SelectionError, match="missing checkpoint for platform 'tpu'"):
        select_device(mod, {"tpu": None})


def test_platforms_that_compile_alike_share_one_extracted_graph(mod, monkeypatch):
    import nar_tvm.selection as selection

    calls = []
    real = selection.module_graph

    def counting(*args, **kwargs):
        calls.append(args[1:])
        return real(*args, **kwargs)

    monkeypatch.setattr(selection, "module_graph", counting)
    gpu = {"kind": "cuda", "host": {"kind": "llvm"}}
    sel = select_device(mod, {"cpu-a": Stub(5.0, level="op", target=CPU), "cpu-b": Stub(4.0, level="op", target=CPU),
                              "gpu": Stub(1.0, level="op", target=gpu)})
    assert sel.choice == "gpu" and len(calls) == 2
    assert {s.name: s.predicted_ms for s in sel.scores} == {"cpu-a": 5.0, "cpu-b": 4.0, "gpu": 1.0}


def test_device_choice_as_a_pass_sets_the_virtual_device(mod):
    gpu = {"kind": "cuda", "host": {"kind": "llvm"}}
    pick = SelectDevice({"cpu": Stub(5.0, level="op", target=CPU), "gpu": Stub(1.0, level="op", target=gpu)})
    placed = pick(mod)
    assert pick.selection.choice == "gpu"
    assert str(placed.attrs["nar_tvm.device"]) == "gpu"
    assert target_of(placed).kind.name == "cuda"
    assert 'vdevice="cuda:0:global"' in placed.script()
    moved = SetVirtualDevice(CPU, "cpu")(placed)  # an existing placement is retargeted
    assert target_of(moved).kind.name == "llvm" and "cuda" not in moved.script()
    # On the CPU, compilation proceeds for the placed target.
    cpu_placed = SetVirtualDevice(CPU, "cpu")(relax.transform.DecomposeOpsForInference()(mod))
    ex = compile_candidate(cpu_placed, "default", target_of(cpu_placed))
    assert relax.VirtualMachine(ex, tvm.cpu()) is not None
    with pytest.raises((SelectionError, RuntimeError), match="no device meets"):
        SelectDevice({"cpu": Stub(5.0, level="op")}, latency_budget_ms=1.0)(mod)
