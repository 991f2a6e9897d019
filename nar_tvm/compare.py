"""Predicted vs measured latency on this machine: `nar-tvm compare`.

Measurement goes through the profiler's worker process, so the numbers are
taken exactly as the training data was (same protocol, threads and pinning).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from nar_tvm.passes.opgraph import OpGraph

from .kernel_errors import predicted_kernel_ms
from .loaders import ModelLoadError
from .measure import Protocol, shared_core_warning
from .platform import PlatformSpec
from .profiler import Worker, WorkerConfig, onnx_bytes_of


@dataclass
class Comparison:
    name: str
    predicted_ms: float
    measured_ms: float
    cv: float
    compile_s: float
    # (kernel, measured ms, predicted ms or None): predicted where the model sums kernel times.
    top_kernels: list = field(default_factory=list)
    # measure.shared_core_warning's text when other work shared the measuring core, else None.
    shared_core: str | None = None

    @property
    def error(self) -> float:
        return (self.predicted_ms - self.measured_ms) / self.measured_ms


def model_bytes(spec: str) -> tuple[str, bytes]:
    """An ONNX path, or `zoo:FAMILY:SEED` for a built-in zoo model."""
    if spec.startswith("zoo:"):
        from . import zoo

        try:
            variant = zoo.generate(*zoo.parse_spec(spec))
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc
        return variant.name, onnx_bytes_of(variant.build(), variant.example_input())
    path = Path(spec)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    return path.stem, path.read_bytes()


def compare(models: list[str], predictor, input_shapes=None, protocol: Protocol | None = None,
            cpu_affinity: list[int] | None = None, top: int = 5) -> list[Comparison]:
    level = predictor.provenance.get("level", "op")
    threads = int(predictor.platform.get("threads", 1))
    spec = PlatformSpec(pipeline=predictor.platform.get("pipeline", "default"), threads=threads)
    worker = Worker(WorkerConfig(spec, protocol or Protocol(), cpu_affinity=cpu_affinity))
    worker.start()
    graphs, measured = [], []
    try:
        # Seconds to minutes per model: show where a batch is (on a terminal only).
        for model in tqdm(models, desc="compiling and measuring", unit="model", file=sys.stderr,
                          disable=None if len(models) > 1 else True):
            name, data = model_bytes(model)
            status, op_graph = worker.call(("extract", data, input_shapes, name), 600)
            if status != "ok":
                raise ModelLoadError(f"{model}: {op_graph}")
            status, result = worker.call(("measure",), 1200)
            if status != "ok":
                raise RuntimeError(f"{model}: compiling or measuring failed: {result}")
            fused, measurement = result
            graphs.append(OpGraph.from_dict(op_graph if level == "op" else fused))
            measured.append((name, measurement))
    finally:
        worker.stop()
    predicted = predictor.predict(graphs).latency_ms
    out = []
    for graph, (name, m), ms in zip(graphs, measured, predicted):
        per_kernel = predicted_kernel_ms(predictor, graph)
        kernels = [(k, v, per_kernel.get(k)) for k, v in m.get("kernels_ms", {}).items()
                   if not k.startswith("vm.builtin")]
        out.append(Comparison(name, float(ms), m["median_ms"], m["cv"], m["compile_s"], kernels[:top],
                              shared_core_warning(m)))
    return out


def summary(results: list[Comparison]) -> dict:
    from nar_tvm.cost_model import regression_report

    return regression_report([r.predicted_ms for r in results], [r.measured_ms for r in results])


def plot(results: list[Comparison], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    meas = [r.measured_ms for r in results]
    pred = [r.predicted_ms for r in results]
    ax.loglog(meas, pred, "o")
    lo, hi = min(meas + pred) * 0.8, max(meas + pred) * 1.25
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
