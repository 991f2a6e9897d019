"""The cost model as a citizen of TVM: a global function, an annotation pass, a device pass.

`register()` puts a predictor in TVM's global function registry, so any pass (Python,
or C++ through `tvm::ffi::Function::GetGlobal`) can ask for a latency:

    nar_tvm.register("model.pt")
    ms = tvm.get_global_func("nar_tvm.predict_latency")(mod, target)

The passes themselves live in `nar_tvm.passes` (`AnnotateLatency` writes that prediction
into the module as a function attribute, `SetVirtualDevice` places the module on a target
so that compilation proceeds for the device chosen by `selection.select_device`); this
module holds the policy around them (which predictor, which target) and keeps their old
import names.
"""
from __future__ import annotations

import json

import tvm

from nar_tvm.passes import set_virtual_device as _set_virtual_device
from nar_tvm.passes.annotate_latency import (INFO_SUFFIX, LATENCY_ATTR, MODEL_ATTR, PREDICT_FUNC,  # noqa: F401
                                             AnnotateLatency, NotRegisteredError, registered)
from nar_tvm.passes.extract import (ExtractOpGraph, extract_from_module, extract_opgraph, past_legalization,
                                    record_kernel_attrs)
from nar_tvm.passes.fold import shape_only_folding
from nar_tvm.passes.opgraph import OpGraph
from nar_tvm.passes.pipeline import level_passes
from nar_tvm.passes.set_virtual_device import DEVICE_ATTR, target_of  # noqa: F401


def as_target(target) -> tvm.target.Target:
    """A Target from a Target, a dict, a JSON string (as fingerprints store it), or None (this CPU)."""
    from .platform import PlatformSpec

    if isinstance(target, tvm.target.Target):
        return target
    if isinstance(target, str):
        target = json.loads(target) if target.strip().startswith("{") else target
    return tvm.target.Target(target) if target else PlatformSpec().tvm_target()


def module_graph(mod: tvm.IRModule, pipeline: str = "default", level: str = "op", target=None,
                 func_name: str = "main") -> OpGraph:
    """The graph of `mod` as a checkpoint for (`pipeline`, `level`) saw its training graphs.

    The profiler records op graphs of the imported module, and fused graphs probed inside
    the measured compile right after the pipeline's graph-level passes; this runs the same
    passes, with FoldConstant's evaluation of constant kernels replaced by shape-only folding
    (same graph, no code generation), so a prediction scores what that pipeline would compile.
    A module already past legalization (a pass late in a pipeline) is read as it is.
    """
    if past_legalization(mod, func_name):
        return extract_from_module(mod, func_name)
    target = as_target(target)
    if level == "op":
        return extract_opgraph(mod, "op", target)
    if level != "fused":
        raise ValueError(f"unknown graph level {level!r}; expected 'op' or 'fused'")
    probe = ExtractOpGraph(func_name)
    with target:
        tvm.transform.Sequential([*record_kernel_attrs(shape_only_folding(level_passes("fused", target, pipeline)), probe),
                                  probe])(mod)
    return probe.graph


def predictor_level(predictor) -> str:
    return predictor.provenance.get("level", "op")


def predictor_pipeline(predictor) -> str:
    return predictor.platform.get("pipeline", "default")


def predictor_pipelines(predictor) -> list[str]:
    """The compile pipelines whose measurements trained the predictor (a joint model
    trained on several candidates' profiles lists them all)."""
    return list(predictor.platform.get("pipelines") or [predictor_pipeline(predictor)])


def predict_module(predictor, mod: tvm.IRModule, target=None, pipeline: str | None = None) -> float:
    """Predicted latency (ms) of `mod` compiled with `pipeline` (default: the checkpoint's)."""
    graph = module_graph(mod, pipeline or predictor_pipeline(predictor), predictor_level(predictor), target)
    return float(predictor.predict([graph]).latency_ms[0])


def register(checkpoint=None, predictor=None, name: str = PREDICT_FUNC, override: bool = True):
    """Register a predictor as the TVM global function `name`: (IRModule, Target) -> float ms.

    The target only steers the graph-level passes; the latency is that of the platform the
    checkpoint was trained on (see `name + ".info"`). Returns the predictor.
    """
    if predictor is None:
        from .api import load_predictor

        predictor = load_predictor(checkpoint)
    info = json.dumps({"name": name, "level": predictor_level(predictor),
                       "pipeline": predictor_pipeline(predictor),
                       "platform_id": predictor.platform.get("platform_id", ""),
                       "platform": predictor.platform}, default=str, sort_keys=True)

    def predict_latency(mod, target=None):
        return predict_module(predictor, mod, target if target is not None
                              else tvm.target.Target.current(allow_none=True))

    tvm.register_global_func(name, predict_latency, override=override)
    tvm.register_global_func(name + INFO_SUFFIX, lambda: info, override=override)
    return predictor


def SetVirtualDevice(target, device_name: str = "", func_name: str = "main"):  # noqa: N802 - a pass's name
    """passes.SetVirtualDevice with the target read as `as_target` reads it (None: this CPU)."""
    return _set_virtual_device.SetVirtualDevice(as_target(target), device_name, func_name)
