"""The cost model as a citizen of TVM: a global function, an annotation pass, a device pass.

`register()` puts a predictor in TVM's global function registry, so any pass (Python,
or C++ through `tvm::ffi::Function::GetGlobal`) can ask for a latency:

    nar_tvm.register("model.pt")
    ms = tvm.get_global_func("nar_tvm.predict_latency")(mod, target)

`AnnotateLatency` writes that prediction into the module as a function attribute, and
`SetVirtualDevice` places the module on a target (Relax `VDevice`) so that compilation
proceeds for the device chosen by `selection.select_device`.
"""
from __future__ import annotations

import json

import tvm
from tvm import relax

from nar_tvm.passes.extract import (ExtractOpGraph, extract_from_module, extract_opgraph, past_legalization,
                                    record_kernel_attrs)
from nar_tvm.passes.fold import shape_only_folding
from nar_tvm.passes.opgraph import OpGraph

PREDICT_FUNC = "nar_tvm.predict_latency"
# Companion of each registered predictor: JSON of what it was trained for (platform, level).
INFO_SUFFIX = ".info"
LATENCY_ATTR = "nar_tvm.predicted_latency_ms"
MODEL_ATTR = "nar_tvm.latency_model"
DEVICE_ATTR = "nar_tvm.device"


class NotRegisteredError(LookupError):
    pass


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
    from .measure import graph_level_passes

    if past_legalization(mod, func_name):
        return extract_from_module(mod, func_name)
    target = as_target(target)
    if level == "op":
        return extract_opgraph(mod, "op", target)
    if level != "fused":
        raise ValueError(f"unknown graph level {level!r}; expected 'op' or 'fused'")
    probe = ExtractOpGraph(func_name)
    passes = record_kernel_attrs(shape_only_folding(graph_level_passes(pipeline, target)), probe)
    with target:
        tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(), *passes, probe])(mod)
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


def registered(name: str = PREDICT_FUNC):
    func = tvm.get_global_func(name, allow_missing=True)
    if func is None:
        raise NotRegisteredError(f"no latency predictor is registered as {name!r}; call "
                                 "nar_tvm.register(checkpoint) first")
    return func


def _with_func_attrs(mod: tvm.IRModule, func_name: str, attrs: dict) -> tvm.IRModule:
    # Passes must not modify their input in place: callers keep using the module they passed.
    out = mod.clone()
    func = out[func_name]
    for key, value in attrs.items():
        func = func.with_attr(key, value)
    out[func_name] = func
    return out


@tvm.ir.transform.module_pass(opt_level=0, name="nar_tvm.AnnotateLatency")
class AnnotateLatency:
    """Attach the registered predictor's latency to `func_name` as function attributes.

    `nar_tvm.predicted_latency_ms` (float) and `nar_tvm.latency_model` (the level and the
    platform id the number holds for) show in the printed TVMScript as `R.func_attr`.
    NAR-Former V2 pools node states before its regression head, so it has no per-node
    contributions to attach.
    """

    def __init__(self, func: str = PREDICT_FUNC, func_name: str = "main", target=None):
        registered(func)  # fail here, in Python: errors raised inside a running pass reach the caller as RuntimeError
        self.func = func
        self.func_name = func_name
        self.target = target
        self.latency_ms = None

    def transform_module(self, mod, ctx):  # noqa: ARG002 - signature fixed by TVM
        predict = registered(self.func)
        target = self.target if self.target is not None else tvm.target.Target.current(allow_none=True)
        self.latency_ms = float(predict(mod, as_target(target)))
        info = json.loads(registered(self.func + INFO_SUFFIX)())
        model = {"level": info["level"], "pipeline": info["pipeline"], "platform_id": info["platform_id"]}
        return _with_func_attrs(mod, self.func_name, {LATENCY_ATTR: self.latency_ms, MODEL_ATTR: model})


def _with_param_vdevice(func: relax.Function, vdevice) -> relax.Function:
    """`func` whose tensor parameters live on `vdevice` (RealizeVDevice then propagates it)."""

    @relax.expr_functor.mutator
    class _Rebind(relax.PyExprMutator):
        pass

    rebind = _Rebind()
    params = []
    for p in func.params:
        if isinstance(p.ty, relax.TensorType):
            new = relax.Var(p.name, relax.TensorType(p.ty.shape, p.ty.dtype, vdevice=vdevice))
            rebind.set_var_remap(p, new)
            p = new
        params.append(p)
    return relax.Function(params, rebind.visit_expr(func.body), func.ret_ty, func.is_pure, func.attrs)


@tvm.ir.transform.module_pass(opt_level=0, name="nar_tvm.SetVirtualDevice")
class SetVirtualDevice:
    """Place the module on `target`: a Relax `VDevice` in the module's global infos, the
    inputs of `func_name` annotated with it and propagated (RealizeVDevice), and the
    platform's name in the module attribute `nar_tvm.device`. `target_of(mod)` reads the
    target back for `tvm.compile`. A module that already has virtual devices gets the
    first one retargeted (UpdateVDevice), so heterogeneous placements keep their shape.
    """

    def __init__(self, target, device_name: str = "", func_name: str = "main"):
        self.target = as_target(target)
        self.device_name = device_name
        self.func_name = func_name

    def transform_module(self, mod, ctx):  # noqa: ARG002 - signature fixed by TVM
        vdevice = relax.VDevice(self.target, 0, "global")
        if "vdevice" in mod.global_infos and len(mod.global_infos["vdevice"]):
            mod = relax.transform.UpdateVDevice(vdevice, 0)(mod)
        else:
            mod = mod.clone()
            mod[self.func_name] = _with_param_vdevice(mod[self.func_name], vdevice)
            mod.update_global_info("vdevice", [vdevice])
            mod = relax.transform.RealizeVDevice()(mod)
        return mod.with_attr(DEVICE_ATTR, self.device_name or str(self.target.kind.name))


def target_of(mod: tvm.IRModule) -> tvm.target.Target:
    """The target a module was placed on by SetVirtualDevice."""
    infos = mod.global_infos.get("vdevice") if "vdevice" in mod.global_infos else None
    if not infos:
        raise ValueError("the module has no virtual device; run SetVirtualDevice (or select_device) first")
    return infos[0].target
