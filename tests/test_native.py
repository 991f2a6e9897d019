"""The native measurement runner (nar-tvm-runner) and the profiler's `--runner native`.

CI builds the runner with CMake before pytest (.ci/run); locally, tests that need the
binary are skipped until it is built (native/README.md). The missing-runner tests run
everywhere.
"""
import json
import os
import statistics
import subprocess

import pytest

from nar_tvm.measure import Protocol
from nar_tvm.native import RunnerError, RunnerNotBuilt, build_commands, find_runner, measure_native
from nar_tvm.platform import PlatformSpec

RUNNER = find_runner(required=False)
needs_runner = pytest.mark.skipif(
    RUNNER is None, reason="nar-tvm-runner is not built; build it with:\n" + build_commands())
FAST = Protocol(warmup=1, repeat=3, min_repeat_ms=5)
CORE = min(os.sched_getaffinity(0))  # a core this test process may use


def tiny_relax_module():
    """conv2d (8 filters, 3x3) + relu + mean on a 1x3x16x16 input: compiles in about a second."""
    import numpy as np
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 16, 16), "float32"))
    weight = tvm.runtime.tensor(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype("float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(weight), padding=1))
            y = bb.emit(relax.op.nn.relu(y))
            out = bb.emit_output(relax.op.mean(y, axis=[2, 3]))
        bb.emit_func_output(out)
    return bb.get()


@pytest.fixture(scope="module")
def tiny_lib(tmp_path_factory):
    import tvm

    from nar_tvm.measure import build, input_specs

    mod = tiny_relax_module()
    ex = build(mod, PlatformSpec(target={"kind": "llvm"}))
    path = tmp_path_factory.mktemp("native") / "tiny.so"
    ex.export_library(str(path))
    assert input_specs(mod) == [([1, 3, 16, 16], "float32")]
    # The in-process VM agrees that this is a runnable library.
    assert tvm.runtime.load_module(str(path)) is not None
    return str(path)


def run(*args):
    return subprocess.run([RUNNER, *args], capture_output=True, text=True, timeout=120)


@needs_runner
def test_runner_prints_one_json_object(tiny_lib):
    res = measure_native(tiny_lib, [([1, 3, 16, 16], "float32")], FAST, threads=1, cpu_affinity=[CORE])
    assert res["runner"] == "native"
    assert len(res["repeats_ms"]) == 3 and all(r > 0 for r in res["repeats_ms"])
    assert res["median_ms"] == pytest.approx(statistics.median(res["repeats_ms"]))
    assert res["cv"] == pytest.approx(statistics.pstdev(res["repeats_ms"]) / statistics.mean(res["repeats_ms"]))
    # A microsecond-scale model: calls per repeat were scaled up to last >= min_repeat_ms.
    assert res["number"] > 1 and res["numbers"][-1] == res["number"]
    assert res["number"] * res["repeats_ms"][-1] >= FAST.min_repeat_ms * 0.999
    assert res["protocol"] == FAST.to_dict()
    assert res["threads"] == 1 and res["cpu_affinity"] == [CORE] and res["inputs"] == ["float32:1,3,16,16"]
    # The runner's CPU time over its wall time: one process on its own core, so at most about one.
    assert 0 < res["cpu_share"] < 1.5


@needs_runner
def test_runner_command_line(tiny_lib):
    proc = run("--help")
    assert proc.returncode == 0 and "--min-repeat-ms" in proc.stdout
    # Exactly one line of JSON on stdout, nothing else; '=' form of options works too.
    proc = run(f"--lib={tiny_lib}", "--input", "float32:1,3,16,16", "--repeat=2", "--min-repeat-ms", "1",
               "--number", "3")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert len(out["repeats_ms"]) == 2 and out["number"] >= 3 and out["cpu_affinity"] is None


@needs_runner
@pytest.mark.parametrize("args, code, message", [
    (["--input", "float32:1,3,16"], 1, "ndim"),                                # wrong rank
    (["--input", "float32:1,3,16,16", "--input", "float32:2"], 1, "expects 1 arguments"),
    (["--input", "int32:1,3,16,16"], 1, "float32"),                            # wrong dtype
    (["--input", "floaty:1,3"], 2, "unknown dtype"),
    (["--input", "float32"], 2, "DTYPE:D0,D1"),
    (["--input", "float32:1,x,16,16"], 2, "bad dimension"),
    (["--input", "float32:1,3,16,16", "--repeat", "0"], 2, "--repeat"),
    (["--input", "float32:1,3,16,16", "--cpu-affinity", "3-1"], 2, "bad range"),
    (["--input", "float32:1,3,16,16", "--frobnicate"], 2, "unknown argument"),
])
def test_runner_rejects_bad_input(tiny_lib, args, code, message):
    proc = run("--lib", tiny_lib, "--min-repeat-ms", "1", *args)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert message in proc.stderr and proc.stdout == ""


@needs_runner
def test_runner_rejects_bad_library(tmp_path):
    proc = run("--lib", str(tmp_path / "missing.so"), "--input", "float32:1")
    assert proc.returncode == 2 and "no such file" in proc.stderr
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"not a shared library")
    proc = run("--lib", str(junk), "--input", "float32:1")
    assert proc.returncode == 1 and "nar-tvm-runner: error" in proc.stderr
    with pytest.raises(RunnerError, match="exit code 2.*no such file"):
        measure_native(str(tmp_path / "missing.so"), ["float32:1"], FAST)


@needs_runner
def test_profiler_measures_with_native_runner(tmp_path):
    import torch
    import torch.nn as nn

    from nar_tvm.dataset import DatasetStore
    from nar_tvm.profiler import Job, Profiler, WorkerConfig, onnx_bytes_of

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    data = onnx_bytes_of(net, torch.randn(1, 3, 8, 8))
    store = DatasetStore(tmp_path / "data")
    prof = Profiler(store, WorkerConfig(PlatformSpec(), FAST, cpu_affinity=[CORE], runner="native"))
    try:
        counts = prof.profile([("file:native-a", lambda: Job(key="file:native-a", name="a", family="tiny",
                                                              onnx_bytes=data))], progress=False)
    finally:
        prof.close()
    assert counts["ok"] == 1
    (rec,) = list(DatasetStore(tmp_path / "data").records())
    m = rec["measurement"]
    assert rec["status"] == "ok" and m["runner"] == "native"
    assert m["median_ms"] > 0 and len(m["repeats_ms"]) == 3 and m["number"] >= 1 and m["compile_s"] > 0
    assert m["protocol"] == FAST.to_dict()
    assert any(k.startswith("fused_conv2d") for k in m["kernels_ms"])
    assert set(rec["graphs"]) == {"op", "fused"}


@needs_runner
def test_cli_profile_runner_native(tmp_path, capsys):
    from nar_tvm.cli import main

    out = tmp_path / "ds"
    code = main(["profile", "--families", "alexnet", "--per-family", "1", "--start-seed", "10000",
                 "--out", str(out), "--runner", "native", "--repeat", "1", "--min-repeat-ms", "0",
                 "--cpu-affinity", str(CORE)])
    assert code == 0
    from nar_tvm.dataset import DatasetStore

    (rec,) = list(DatasetStore(out).records())
    assert rec["status"] == "ok" and rec["measurement"]["runner"] == "native"


# ------------------------------------------------------- runner missing (no binary needed)
@pytest.fixture
def no_runner(monkeypatch, tmp_path):
    monkeypatch.setenv("NAR_TVM_RUNNER", str(tmp_path / "nowhere" / "nar-tvm-runner"))


def test_missing_runner_says_how_to_build(no_runner):
    assert find_runner(required=False) is None
    with pytest.raises(RunnerNotBuilt) as info:
        find_runner()
    msg = str(info.value)
    assert "cmake -S . -B build -DPython3_EXECUTABLE=" in msg and "cmake --build build" in msg
    assert "NAR_TVM_RUNNER" in msg
    with pytest.raises(RunnerNotBuilt):
        measure_native("model.so", ["float32:1"], FAST)


def test_missing_runner_fails_profile_unless_fallback(no_runner, tmp_path, capsys):
    from nar_tvm.cli import main
    from nar_tvm.profiler import WorkerConfig, _check_runner

    cfg = WorkerConfig(PlatformSpec(), FAST, runner="native")
    with pytest.raises(RunnerNotBuilt):
        _check_runner(cfg)
    fallback = _check_runner(WorkerConfig(PlatformSpec(), FAST, runner="native", allow_fallback=True))
    assert fallback.runner == "inprocess"
    assert "Falling back to the in-process evaluator" in capsys.readouterr().err
    assert _check_runner(WorkerConfig(PlatformSpec(), FAST)).runner == "inprocess"
    with pytest.raises(ValueError, match="unknown runner"):
        _check_runner(WorkerConfig(PlatformSpec(), FAST, runner="bogus"))

    # Through the CLI: a clear error (exit 2) naming the cmake commands, no traceback.
    code = main(["profile", "--families", "alexnet", "--per-family", "1", "--out", str(tmp_path / "ds"),
                 "--runner", "native"])
    err = capsys.readouterr().err
    assert code == 2 and "nar-tvm profile: error" in err and "cmake --build build" in err


def test_a_timing_on_a_core_other_work_shares_says_so():
    import sys

    from nar_tvm.measure import Session, build, shared_core_warning, time_executable

    mod = tiny_relax_module()
    spec = PlatformSpec(target={"kind": "llvm"})
    ex, session = build(mod, spec), Session(spec)
    protocol = Protocol(warmup=1, repeat=5, min_repeat_ms=60)
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {CORE})
    try:
        alone = time_executable(ex, mod, session, protocol, 0.0, with_kernels=False)
        # Two busy processes on the same core (they inherit the pinning): the timing gets about a third of it.
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
        try:
            shared = time_executable(ex, mod, session, protocol, 0.0, with_kernels=False)
        finally:
            for proc in busy:
                proc.kill()
                proc.wait()
    finally:
        os.sched_setaffinity(0, allowed)
    # Relative to the same timing without them: whatever else this machine runs now shares it too.
    assert 0 < shared["cpu_share"] < 0.75 * alone["cpu_share"] <= 0.75 * 1.05
    assert shared_core_warning(shared).startswith(f"the timing got {shared['cpu_share']:.0%} of a core's time")


def test_measure_rejects_unknown_runner():
    from nar_tvm.measure import Session, measure

    with pytest.raises(ValueError, match="unknown runner"):
        measure(tiny_relax_module(), PlatformSpec(), Session(PlatformSpec()), FAST, runner="elsewhere")
