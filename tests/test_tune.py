"""`nar-tvm tune`: trial allocation, task mapping, and a tiny end-to-end tuning run."""
import numpy as np
import pytest
import torch
from torch import nn

from nar_tvm import tune as tuning

# Small evolutionary search: the test checks the plumbing, not how good the schedules are.
SEARCH = dict(population_size=16, init_min_unmeasured=4, genetic_num_iters=1)


def test_allocation_follows_predicted_time():
    trials = tuning.allocate_trials(np.array([6.0, 3.0, 1.0, 0.001]), 20)
    assert trials.sum() == 20
    assert trials[3] == 0  # 0.01% of the time: not worth a trial
    assert trials[0] > trials[1] > trials[2] >= 1
    assert trials.tolist() == [12, 6, 2, 0]


def test_allocation_with_fewer_trials_than_tasks_tunes_the_largest():
    assert tuning.allocate_trials(np.array([1.0, 5.0, 3.0, 2.0]), 2).tolist() == [0, 1, 1, 0]
    assert tuning.allocate_trials(np.array([1.0, 1.0]), 0).tolist() == [0, 0]
    with pytest.raises(ValueError, match=">= 0"):
        tuning.allocate_trials(np.array([1.0]), -1)


def _tiny_onnx(tmp_path):
    from nar_tvm.profiler import onnx_bytes_of

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4)).eval()
    x = torch.randn(1, 3, 16, 16)
    path = tmp_path / "tiny.onnx"
    path.write_bytes(onnx_bytes_of(model, x))
    return path, model, x


def test_every_kernel_maps_to_its_task(tmp_path):
    from tvm.s_tir import meta_schedule as ms

    from nar_tvm.loaders import load_onnx
    from nar_tvm.passes.extract import ExtractOpGraph
    from nar_tvm.platform import PlatformSpec

    path, _, _ = _tiny_onnx(tmp_path)
    target = PlatformSpec().tvm_target()
    probe = ExtractOpGraph()
    fused = tuning.tuning_module(load_onnx(str(path)).mod, target, probe)
    tasks = ms.relax_integration.extract_tasks(fused, target)
    mapping = tuning.kernel_tasks(fused, tasks)
    kernels = [n.kernel for n in probe.graph.nodes if n.kernel is not None]
    assert set(kernels) <= set(mapping)
    # The two 8->8 convolutions are one task with two call sites; its weight counts both.
    weights = [int(t.weight) for t in tasks]
    assert weights.count(2) == 1
    shared = weights.index(2)
    assert sum(mapping[k] == shared for k in kernels) == 2


def test_tune_predicted_compiles_a_correct_library_and_resumes(tmp_path):
    import tvm
    from tvm import relax

    path, model, x = _tiny_onnx(tmp_path)
    out, db = tmp_path / "tuned.so", tmp_path / "db"
    result = tuning.tune(str(path), 4, out, "predicted", db, progress=False, search=SEARCH)
    assert result.trials_run == 4
    assert sum(row.get("trials", 0) for row in result.tasks) == 4
    assert sum(row.get("allocated", 0) for row in result.tasks) == 4
    # The largest predicted task gets the most trials.
    tasks = [r for r in result.tasks if "allocated" in r]
    assert max(tasks, key=lambda r: r["predicted_ms"])["allocated"] == max(r["allocated"] for r in tasks)

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(out)), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x.numpy())).numpy()
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-5)

    assert len(result.history) == 4 and all(ms > 0 for _, ms in result.history)
    assert set(result.kernels.values()) <= set(range(len(tasks)))

    again = tuning.tune(str(path), 4, out, "predicted", db, progress=False, search=SEARCH)
    assert again.trials_run == 0 and again.history == result.history

    # The command line on the same database: nothing left to tune, the report lists every task.
    import json

    from nar_tvm.cli import main

    report = tmp_path / "report.json"
    assert main(["tune", str(path), "--trials", "4", "-o", str(out), "--allocate", "predicted",
                 "--database", str(db), "--report", str(report)]) == 0
    written = json.loads(report.read_text())
    assert written["trials_run"] == 0 and written["allocation"] == "predicted"
    assert [r["task"] for r in written["tasks"]] == [r["task"] for r in result.tasks]


def test_tune_cli_rejects_bad_budget(tmp_path, capsys):
    from nar_tvm.cli import main

    path, _, _ = _tiny_onnx(tmp_path)
    assert main(["tune", str(path), "--trials", "0", "-o", str(tmp_path / "x.so")]) == 2
    assert "--trials must be >= 1" in capsys.readouterr().err
