"""Numbers that refactoring must not change, recorded before it: the shipped checkpoints'
predictions on stored dataset graphs, and short training runs of both training paths
(whole-network latency and NAS-Bench-201 cells) through the one training loop."""
import numpy as np
import pytest

from nar_tvm.cost_model import TrainConfig, load_checkpoint, recipes, train
from nar_tvm.cost_model import nasbench as nb
from nar_tvm.cost_model.synthetic import synthetic_dataset
from nar_tvm.dataset import load_samples
from nar_tvm.api import DEFAULT_CHECKPOINT, PIPELINES_CHECKPOINT

from pathlib import Path

DATASET = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "cpu-znver4-1t"
JOBS = ['zoo:resnet:0@a3f6861f130b', 'zoo:squeezenet:40@a3f6861f130b', 'zoo:nasbench201:82@a3f6861f130b', 'zoo:vgg:124@a3f6861f130b', 'zoo:squeezenet:166@a3f6861f130b']
# Same machine: equal to the last bit; elsewhere float reductions may differ slightly.
REL = 1e-5


@pytest.fixture(scope="module")
def samples():
    by_job = {s.job: s for s in load_samples(DATASET, labels="min")}
    return [by_job[j] for j in JOBS]


@pytest.mark.parametrize("checkpoint,expected", [
    (DEFAULT_CHECKPOINT, [13.725881336825232, 114.9741255170378, 37.906868128245904, 9.227870332183368, 145.24876805159195]),
    (PIPELINES_CHECKPOINT, [13.907826965309198, 117.58745447725715, 38.15786809403758, 8.941440592537298, 143.07096405170043]),
])
def test_shipped_checkpoints_predict_as_recorded(samples, checkpoint, expected):
    predictor = load_checkpoint(checkpoint)
    graphs = [s.graph(predictor.provenance.get("level", "op")) for s in samples]
    assert predictor.predict(graphs).latency_ms == pytest.approx(expected, rel=REL)


def test_shipped_kernel_times_as_recorded(samples):
    predictor = load_checkpoint(DEFAULT_CHECKPOINT)
    kernels = predictor.predict_kernels(samples[0].graph("fused"))
    assert kernels[:4] == pytest.approx([1.972809164716618, 0.007697072432553607, 1.293714857834608, 1.3266035839528687], rel=REL)


@pytest.mark.parametrize("name,expected", [
    ("nar-former-v2", [0.06148264908031416, 0.05832122156463301, 0.05162023984763293, 0.07477759856974703, 0.0514887449296269]),
    ("nnlp", [0.06028155123358584, 0.05702142834133613, 0.05097393239062508, 0.07337506073531361, 0.05082911516385226]),
])
def test_training_with_kernel_times_as_recorded(name, expected):
    graphs, y = synthetic_dataset(60, seed=1)
    node_ms = [[nd.flops / 2e8 + 0.005 for nd in g.nodes] for g in graphs]
    cfg = recipes.model_config(name, width=16, readout="kernels")
    # Recorded with TrainConfig's defaults of the time, stated here so that the run stays the same.
    train_cfg = TrainConfig(epochs=4, batch_size=8, seed=0, lr=1e-3, loss="rse", patience=20, size_bucket_batches=1)
    predictor, _ = train(graphs[:40], y[:40], graphs[40:], y[40:], model_cfg=cfg, train_cfg=train_cfg,
                         progress=False, node_weight=0.5, node_targets=node_ms[:40])
    assert predictor.predict(graphs[40:]).latency_ms[:5] == pytest.approx(expected, rel=1e-4)


def test_nasbench_training_as_recorded():
    acc = nb.load_table(nb.DEFAULT_DATA_DIR / "accuracy.csv.gz")
    lat = nb.load_table(nb.DEFAULT_DATA_DIR / "latency.csv.gz", cells_from=nb.DEFAULT_DATA_DIR / "accuracy.csv.gz")
    cells, y = acc.cells[:120], acc.column(nb.ACCURACY_LABEL)[:120]
    cfg = nb.AccuracyConfig(epochs=3, ensemble=2, fusion="concat")
    predictor, _ = nb.train_accuracy_predictor(cells[:80], y[:80], cells[80:], y[80:], nb.ACCURACY_LABEL, cfg, seed=0)
    assert predictor.predict(acc.cells[:6]) == pytest.approx([71.88780204625084, 71.9626383213233, 71.33393496900253, 72.16681395466095, 72.16840406157972, 72.1076997224586], rel=1e-4)

    dev = lat.device_columns()
    latency = nb.train_latency_predictor(lat.cells[:20], lat.column(dev[0])[:20], nb.LatencyConfig(steps=40), seed=0)
    assert latency(lat.cells[:6]) == pytest.approx([10.211802477628842, 12.225940891620127, 11.364785591372158, 5.8010694936652305, 9.789753681962104, 12.007602459616157], rel=1e-4)
    few = nb.FewShotLatencyModel.pretrain(lat.cells[:100], np.stack([lat.column(d)[:100] for d in dev[1:]], 1),
                                          dev[1:], nb.LatencyConfig(pretrain_steps=20), seed=0)
    head = few.adapt(lat.cells[100:110], lat.column(dev[0])[100:110])
    # A 20-step encoder is poor: leave-one-out on the shots picks the op-cost model alone.
    assert head.mix == 0.0
    assert few.predict(head, lat.cells[:6]) == pytest.approx([9.185932106760012, 10.90485122292715, 9.757497018157952, 5.109362187705096, 8.924440282213958, 11.117761785167358], rel=1e-4)
    head = few.adapt(lat.cells[100:110], lat.column(dev[0])[100:110], mixes=(1.0,))
    assert few.predict(head, lat.cells[:6]) == pytest.approx([8.92899120197201, 11.493634918532994, 9.773167632923771, 7.411988950034419, 9.030945163964748, 9.973325803621261], rel=1e-4)


def test_predict_loads_its_checkpoint_once_and_reads_zoo_specs(monkeypatch, tmp_path):
    import os
    import shutil

    import nar_tvm
    from nar_tvm import api

    loads = []
    real = api.load_predictor
    monkeypatch.setattr(api, "load_predictor", lambda checkpoint=None: loads.append(checkpoint) or real(checkpoint))
    checkpoint = tmp_path / "default.pt"
    shutil.copy(DEFAULT_CHECKPOINT, checkpoint)
    first = nar_tvm.predict("zoo:resnet:3", checkpoint=checkpoint)
    again = nar_tvm.predict(["zoo:resnet:3"], checkpoint=checkpoint)[0]
    assert len(loads) == 1 and again.latency_ms == first.latency_ms
    # Recorded from the same model exported to an ONNX file (re-recorded when the default was re-shipped).
    assert first.latency_ms == pytest.approx(52.454251367218475, rel=REL)
    os.utime(checkpoint, ns=(0, 0))  # a changed file is read again
    nar_tvm.predict("zoo:resnet:3", checkpoint=checkpoint)
    assert len(loads) == 2
