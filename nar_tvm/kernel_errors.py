"""Which kinds of kernel carry a predictor's error: per-kernel predictions against the
profiler's per-kernel times, pooled by what each kernel does.

Learning-side analysis of stored graphs and records: nothing here imports TVM, so held-out
runs on a machine without it (a training server) still say where their error is.
"""
from __future__ import annotations

from nar_tvm.passes.opgraph import OpGraph


def predicted_kernel_ms(predictor, graph: OpGraph) -> dict[str, float]:
    """Predicted ms per kernel name, summed over the nodes that call it (as the profile sums
    a kernel's calls); empty when the model predicts whole graphs only."""
    if not predictor.predicts_kernels:
        return {}
    totals: dict[str, float] = {}
    for node, ms in zip(graph.nodes, predictor.predict_kernels(graph)):
        if node.kernel is not None:
            totals[node.kernel] = totals.get(node.kernel, 0.0) + float(ms)
    return totals


def kernel_kind(node) -> str:
    """What a fused kernel does, coarsely enough to pool kernels across models: its anchor op,
    the kind of convolution, and the transcendental functions fused into it."""
    from nar_tvm.cost_model.tokenizer import TRANSCENDENTALS
    from nar_tvm.cost_model.uncertainty import conv_kind

    kind = node.op.removeprefix("kernel:").removeprefix("tir_")
    conv = conv_kind(node)
    if conv not in (None, "dense"):
        kind += f" ({conv})"
    names = {name.removeprefix("tir_") for name in node.ops}
    return kind + "".join(f" + {f}" for f in TRANSCENDENTALS if f in names and f != kind)


def error_by_kernel_kind(cases, scale: float = 1.0) -> dict[str, dict]:
    """Measured and predicted kernel time pooled by `kernel_kind`, over `cases` of (graph,
    measured ms per kernel name, predicted ms per kernel name); predictions times `scale`.
    Shows which kinds of kernel carry a family's error."""
    out: dict[str, dict] = {}
    for graph, measured, predicted in cases:
        kinds = {}
        for node in graph.nodes:
            if node.kernel is not None:
                kinds.setdefault(node.kernel, kernel_kind(node))
        for kernel, kind in kinds.items():
            if kernel in measured and kernel in predicted:
                row = out.setdefault(kind, {"kernels": 0, "measured_ms": 0.0, "predicted_ms": 0.0})
                row["kernels"] += 1
                row["measured_ms"] += float(measured[kernel])
                row["predicted_ms"] += scale * float(predicted[kernel])
    return out


def samples_kernel_error(predictor, samples, graphs, scale: float = 1.0) -> dict[str, dict]:
    """`error_by_kernel_kind` over dataset samples and their graphs: each sample's profiled
    kernel times against the predictor's (a model that sums per-kernel times)."""
    return error_by_kernel_kind([(g, s.record["measurement"].get("kernels_ms") or {}, predicted_kernel_ms(predictor, g))
                                 for s, g in zip(samples, graphs)], scale)


def largest_kernel_errors(pooled: dict[str, dict]) -> list[dict]:
    """`error_by_kernel_kind`'s kinds, largest absolute error first, each with its share of the
    summed absolute error: the kinds at the top are where a family's miss comes from."""
    def error(row):
        return abs(row["predicted_ms"] - row["measured_ms"])

    total = sum(error(row) for row in pooled.values()) or 1.0
    return [{"kind": kind, **row, "error_share": error(row) / total}
            for kind, row in sorted(pooled.items(), key=lambda kv: -error(kv[1]))]
