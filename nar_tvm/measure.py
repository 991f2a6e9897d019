"""Compile a Relax module for a platform and measure it with the VM's time evaluator.

Runs inside the profiler's worker process (see profiler.py), locally or against
a remote device through TVM's RPC tracker.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass

import numpy as np

import tvm
from tvm import relax

from nar_tvm.passes.pipeline import graph_level_passes, lowering_passes  # noqa: F401 - graph_level_passes: its old home

from .native import cpu_share, shared_core
from .platform import PlatformSpec


@dataclass
class Protocol:
    """How latency is measured: warm-up calls, then `repeat` timings of `number` calls each."""

    warmup: int = 1
    repeat: int = 5
    min_repeat_ms: int = 40  # short models run several times per timing to beat timer noise

    def to_dict(self) -> dict:
        return {"warmup": self.warmup, "repeat": self.repeat, "min_repeat_ms": self.min_repeat_ms}


def compile_pipeline(name: str, target, probe=None):
    """The Relax pipeline a platform compiles with, by name.

    `probe` (an analysis pass such as ExtractOpGraph) runs right after the graph-level
    part (FuseOps), where each fused group still lists its operators, so the fused-level
    graph comes out of the compile that is measured instead of a second lowering.
    """
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    passes = fused_kernel_passes(name, target, probe)

    @tvm.transform.module_pass(opt_level=0, name=f"nar_tvm.{name}_pipeline")
    def _pipeline(mod, _ctx):
        with target:
            seq = tvm.transform.Sequential(passes + cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target))
            return seq(mod)

    return _pipeline


def fused_kernel_passes(name: str, target, probe=None) -> list:
    """Pipeline `name` up to one PrimFunc per fused kernel (graph-level part, then FuseTIR):
    where MetaSchedule takes its tasks. `probe` runs right after the graph-level part."""
    graph = graph_level_passes(name, target)
    if probe is not None:
        from nar_tvm.passes.extract import record_kernel_attrs

        # Legalization is watched so the probe's fused nodes get their operators' attributes.
        graph = record_kernel_attrs(graph, probe) + [probe]
    return graph + lowering_passes(name, target)


def build(mod: tvm.IRModule, spec: PlatformSpec, probe=None):
    target = spec.tvm_target()
    mod = relax.transform.DecomposeOpsForInference()(mod)
    return tvm.compile(mod, target=target, relax_pipeline=compile_pipeline(spec.pipeline, target, probe))


def random_inputs(mod: tvm.IRModule, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for p in mod["main"].params:
        shape = [int(d) for d in p.ty.shape.values]
        dtype = str(p.ty.dtype)
        if dtype.startswith("float"):
            arrays.append(rng.standard_normal(shape).astype(dtype))
        else:
            arrays.append(rng.integers(0, 2, size=shape).astype(dtype))
    return arrays


def coefficient_of_variation(values: list[float]) -> float:
    return statistics.pstdev(values) / statistics.mean(values) if len(values) > 1 else 0.0


def shared_core_warning(measurement: dict) -> str | None:
    """What to tell a user whose measurement ran on a core other work was using, or None."""
    share = measurement.get("cpu_share")
    if not shared_core(share):
        return None
    return (f"the timing got {share:.0%} of a core's time: other work shared the core, so the measured time is "
            f"inflated (up to {1 / max(share, 1e-3):.1f}x); measure on an idle core (--cpu-affinity)")


class Session:
    """Where kernels run: this process, or a remote device from an RPC tracker."""

    def __init__(self, spec: PlatformSpec, rpc_tracker: str | None = None, rpc_key: str | None = None):
        self.spec = spec
        self.remote = None
        if rpc_tracker:
            from tvm import rpc

            host, _, port = rpc_tracker.rpartition(":")
            tracker = rpc.connect_tracker(host, int(port))
            self.remote = tracker.request(rpc_key, priority=1, session_timeout=600)
            self.dev = self.remote.cuda() if spec.device == "cuda" else self.remote.cpu()
        else:
            self.dev = tvm.cuda() if spec.device == "cuda" else tvm.cpu()

    def remote_machine(self, key: str) -> dict:
        """The fingerprint's machine fields as the remote device reports them. A server running
        full TVM (`python -m tvm.exec.rpc_server`) answers LLVM's host queries; a runtime-only
        server (the Android app, the C++ server) cannot, and the device is then known by its key
        only. Never the tracker's address: the same device behind another tracker is the same
        platform."""
        def ask(name, *args):
            try:
                return self.remote.get_function(name)(*args)
            except AttributeError:  # this server's TVM has no such function
                return None

        cpu = ask("tvm.codegen.llvm.GetHostCPUName")
        cores = ask("s_tir.meta_schedule.cpu_count", True)  # logical, as os.cpu_count() is locally
        triple = ask("tvm.codegen.llvm.GetDefaultTargetTriple")
        return {"cpu": f"remote:{key}" + (f" (LLVM cpu {cpu})" if cpu else ""),
                "cores": int(cores) if cores else -1, "host": str(triple).split("-")[0] if triple else ""}

    def load(self, ex):
        if self.remote is None:
            return relax.VirtualMachine(ex, self.dev)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.so")
            ex.export_library(path)
            self.remote.upload(path)
        return relax.VirtualMachine(self.remote.load_module("model.so"), self.dev)

    def to_device(self, arrays):
        return [tvm.runtime.tensor(a, self.dev) for a in arrays]


def kernel_breakdown(vm, args) -> dict[str, float]:
    """Milliseconds per kernel symbol over one instrumented run (summed over repeated calls)."""
    times: dict[str, float] = {}
    started: dict[str, float] = {}

    def instrument(func, symbol, before_run, ret_value, *rest):  # noqa: ARG001 - TVM's signature
        now = time.perf_counter()
        if before_run:
            started[symbol] = now
        else:
            times[symbol] = times.get(symbol, 0.0) + (now - started.pop(symbol, now)) * 1e3
        return 0  # VMInstrumentReturnKind.NO_OP: keep running

    vm.set_instrument(instrument)
    try:
        vm["main"](*args)
    finally:
        vm.set_instrument(None)
    return {k: round(v, 6) for k, v in sorted(times.items(), key=lambda kv: -kv[1])}


RUNNERS = ("inprocess", "native")


def input_specs(mod: tvm.IRModule) -> list[tuple[list[int], str]]:
    """(shape, dtype) of each parameter of `main`, as the native runner takes them."""
    return [([int(d) for d in p.ty.shape.values], str(p.ty.dtype)) for p in mod["main"].params]


def require_local_cpu(spec: PlatformSpec, session: Session) -> None:
    if session.remote is not None or spec.device != "cpu":
        raise ValueError("the native runner measures on this machine's CPU; for a device, copy the runner "
                         "and the exported library there (native/README.md) or use the in-process runner")


def time_exported(library_path: str, mod: tvm.IRModule, spec: PlatformSpec, protocol: Protocol,
                  cpu_affinity=None) -> dict:
    """The native runner's timing of an exported library of `mod` (median_ms, repeats_ms, cv, number)."""
    from .native import measure_native

    return measure_native(library_path, input_specs(mod), protocol, threads=spec.threads, cpu_affinity=cpu_affinity)


def measure_with_runner(ex, mod: tvm.IRModule, spec: PlatformSpec, session: Session, protocol: Protocol,
                        compile_s: float, with_kernels: bool = True, cpu_affinity=None) -> dict:
    """Time a compiled executable with the native runner (nar_tvm.native) in its own process."""
    require_local_cpu(spec, session)
    with tempfile.TemporaryDirectory(prefix="nar-tvm-") as tmp:
        path = os.path.join(tmp, "model.so")
        ex.export_library(path)
        res = time_exported(path, mod, spec, protocol, cpu_affinity)
    out = {
        "median_ms": float(res["median_ms"]),
        "repeats_ms": [float(r) for r in res["repeats_ms"]],
        "cv": float(res["cv"]),
        "compile_s": compile_s,
        "protocol": protocol.to_dict(),
        "runner": "native",
        "number": int(res["number"]),
        "cpu_share": res["cpu_share"],
    }
    if with_kernels:
        # The per-kernel breakdown needs Python callbacks: one instrumented in-process run.
        vm = session.load(ex)
        out["kernels_ms"] = kernel_breakdown(vm, session.to_device(random_inputs(mod)))
    return out


def measure(mod: tvm.IRModule, spec: PlatformSpec, session: Session, protocol: Protocol,
            with_kernels: bool = True, probe=None, runner: str = "inprocess", cpu_affinity=None) -> dict:
    """Compile and time `mod`; returns the measurement part of a dataset record.

    `runner`: "inprocess" times with the VM's time evaluator in this process; "native" exports
    the library and times it with the `nar-tvm-runner` binary (same protocol, own process).
    """
    if runner not in RUNNERS:
        raise ValueError(f"unknown runner {runner!r}; choose from {RUNNERS}")
    t0 = time.perf_counter()
    ex = build(mod, spec, probe)
    compile_s = time.perf_counter() - t0
    if runner == "native":
        return measure_with_runner(ex, mod, spec, session, protocol, compile_s, with_kernels, cpu_affinity)
    return time_executable(ex, mod, session, protocol, compile_s, with_kernels)


def time_loaded(vm, args, session: Session, protocol: Protocol) -> list[float]:
    """Milliseconds of each of `protocol`'s repeats of an already loaded VM's `main`, after its warm-up."""
    for _ in range(protocol.warmup):
        vm["main"](*args)
    evaluator = vm.time_evaluator("main", session.dev, number=1, repeat=protocol.repeat,
                                  min_repeat_ms=protocol.min_repeat_ms)
    return [float(r) * 1e3 for r in evaluator(*args).results]


def time_executable(ex, mod: tvm.IRModule, session: Session, protocol: Protocol, compile_s: float,
                    with_kernels: bool = True) -> dict:
    """Time an already compiled executable (or loaded library) of `mod` with `protocol` in
    this process; the measurement part of a dataset record."""
    vm = session.load(ex)
    args = session.to_device(random_inputs(mod))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    repeats_ms = time_loaded(vm, args, session, protocol)
    cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    out = {
        "median_ms": statistics.median(repeats_ms),
        "repeats_ms": repeats_ms,
        "cv": coefficient_of_variation(repeats_ms),
        "compile_s": compile_s,
        "protocol": protocol.to_dict(),
    }
    if session.remote is None:  # a remote device's CPU time is not this process's
        out["cpu_share"] = cpu_share(cpu_s, wall_s)
    if with_kernels and session.remote is None:
        # Python callbacks cannot cross RPC; remote records carry no breakdown.
        out["kernels_ms"] = kernel_breakdown(vm, args)
    return out
