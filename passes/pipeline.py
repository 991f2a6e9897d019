"""The compile pipelines a latency is measured under, and the graph-level part of each.

One definition serves both sides of a prediction: the profiler compiles and measures a
model with `graph_level_passes(name) + lowering_passes(name)` and reads its fused-level
graph right after the graph-level part, and `extract` (through `level_passes`) brings
a model to the fused level with the same graph-level passes. So a graph predicted is,
by construction, a graph of the kind the predictor was trained on.

tvm is imported inside the functions: `PIPELINES` is read by code that must start fast.
"""
from __future__ import annotations

PIPELINES = ("default", "dlight", "nofuse", "nhwc")
LEVELS = ("op", "fused")


def _check(name: str) -> None:
    if name not in PIPELINES:
        raise ValueError(f"unknown compile pipeline {name!r}; choose from {PIPELINES}")


def _legalize_split(target):
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    legalize = cpu.legalize_passes(target)
    fuse_tir = next(i for i, p in enumerate(legalize) if p.info.name == "FuseTIR")
    return legalize[:fuse_tir], legalize[fuse_tir:]


def graph_level_passes(name: str, target) -> list:
    """The graph-level part of compile pipeline `name`: Relax-to-Relax passes up to and
    including fusion, no code generation. The measured compile runs them and then lowers;
    extraction and the pipeline selector run only them to read or score a graph cheaply.
    """
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    _check(name)
    passes = cpu.library_dispatch_passes(target) + _legalize_split(target)[0]
    if name == "nofuse":
        # One kernel per legalized operator: no FuseOps, hence no FuseTIR in the lowering.
        passes = [p for p in passes if p.info.name != "FuseOps"]
    elif name == "nhwc":
        # Channels-last convolutions; ConvertLayout needs the high-level ops, so it goes first.
        passes = [relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]})] + passes
    return passes


def lowering_passes(name: str, target) -> list:
    """What compile pipeline `name` runs between its graph-level part and the generic
    dataflow-lowering and finalising passes: FuseTIR (unless nothing was fused) and, for
    "dlight", its default CPU schedules."""
    _check(name)
    lower = [] if name == "nofuse" else _legalize_split(target)[1]
    if name == "dlight":
        from tvm.s_tir import dlight as dl

        lower = lower + [dl.ApplyDefaultSchedule(dl.cpu.GEMV(), dl.cpu.Reduction())]
    return lower


def level_passes(level: str, target, pipeline: str = "default") -> list:
    """Passes that bring an imported module to `level`: "op", inference form only
    (DecomposeOpsForInference, as every compile starts); "fused", then `pipeline`'s
    graph-level passes, as the measured compile runs them."""
    from tvm import relax

    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; expected 'op' or 'fused'")
    passes = [relax.transform.DecomposeOpsForInference()]
    if level == "fused":
        passes += graph_level_passes(pipeline, target)
    return passes
