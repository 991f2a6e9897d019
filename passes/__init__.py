"""TVM side of nar-tvm: Relax passes, one concept per module (as tvm.relax.transform).

`extract` turns a module into an OpGraph, `pipeline` defines the graph-level passes a
fused graph comes out of, `annotate_latency`, `set_virtual_device`, `cost_guided_pipeline`
and `select_device` are the passes of the compiler integration. Predictions reach them as
callables, so nothing here imports torch (or any other part of nar_tvm).

`opgraph` is plain Python and is imported eagerly so that the learning side can
read stored graphs without TVM; everything that needs tvm loads on first use.
"""
from .opgraph import OpGraph, OpGraphError, OpNode, TensorSpec

_LAZY = {
    "ExtractOpGraph": "extract",
    "extract_opgraph": "extract",
    "prepare_for_level": "extract",
    "AnnotateLatency": "annotate_latency",
    "SetVirtualDevice": "set_virtual_device",
    "target_of": "set_virtual_device",
    "CostGuidedPipeline": "cost_guided_pipeline",
    "SelectDevice": "select_device",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["OpGraph", "OpGraphError", "OpNode", "TensorSpec", *_LAZY]
