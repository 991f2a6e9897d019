"""AnnotateLatency: write a predicted latency into a Relax function's attributes.

The pass only asks: the prediction comes from a latency function registered in TVM's
global function registry (`nar_tvm.register` puts a predictor there, C++ code can too),
or from a callable handed in. So this module needs tvm alone, never torch.
"""
from __future__ import annotations

import json
from typing import Callable

import tvm

PREDICT_FUNC = "nar_tvm.predict_latency"
# Companion of each registered predictor: JSON of what it was trained for (platform, level).
INFO_SUFFIX = ".info"
LATENCY_ATTR = "nar_tvm.predicted_latency_ms"
MODEL_ATTR = "nar_tvm.latency_model"


class NotRegisteredError(LookupError):
    pass


def registered(name: str = PREDICT_FUNC):
    func = tvm.get_global_func(name, allow_missing=True)
    if func is None:
        raise NotRegisteredError(f"no latency predictor is registered as {name!r}; call "
                                 "nar_tvm.register(checkpoint) first")
    return func


def with_func_attrs(mod: tvm.IRModule, func_name: str, attrs: dict) -> tvm.IRModule:
    # Passes must not modify their input in place: callers keep using the module they passed.
    out = mod.clone()
    func = out[func_name]
    for key, value in attrs.items():
        func = func.with_attr(key, value)
    out[func_name] = func
    return out


def _target_or_none(target):
    """A Target from a Target, dict or JSON string; None stays None, for the latency
    function to choose (the registered one takes this machine's CPU)."""
    if target is None or isinstance(target, tvm.target.Target):
        return target
    if isinstance(target, str) and target.strip().startswith("{"):
        target = json.loads(target)
    return tvm.target.Target(target)


@tvm.ir.transform.module_pass(opt_level=0, name="nar_tvm.AnnotateLatency")
class AnnotateLatency:
    """Attach a predicted latency to `func_name` as function attributes.

    `nar_tvm.predicted_latency_ms` (float) and `nar_tvm.latency_model` (the level and the
    platform id the number holds for) show in the printed TVMScript as `R.func_attr`.
    The latency comes from the global function `func`, (IRModule, Target) -> ms, and what
    it holds for from `func + ".info"` (JSON); or from `predict` and `model_info` when
    given. The target is the pass's, else the one in scope (`with target:`).
    NAR-Former V2 pools node states before its regression head, so it has no per-node
    contributions to attach.
    """

    def __init__(self, func: str = PREDICT_FUNC, func_name: str = "main", target=None,
                 predict: Callable | None = None, model_info: dict | None = None):
        if predict is None:
            registered(func)  # fail here, in Python: errors raised inside a running pass reach the caller as RuntimeError
        self.func = func
        self.func_name = func_name
        self.target = target
        self.predict = predict
        self.model_info = model_info
        self.latency_ms = None

    def transform_module(self, mod, ctx):  # noqa: ARG002 - signature fixed by TVM
        predict = self.predict or registered(self.func)
        target = self.target if self.target is not None else tvm.target.Target.current(allow_none=True)
        self.latency_ms = float(predict(mod, _target_or_none(target)))
        info = self.model_info if self.model_info is not None else json.loads(registered(self.func + INFO_SUFFIX)())
        model = {"level": info.get("level", ""), "pipeline": info.get("pipeline", ""),
                 "platform_id": info.get("platform_id", "")}
        return with_func_attrs(mod, self.func_name, {LATENCY_ATTR: self.latency_ms, MODEL_ATTR: model})
