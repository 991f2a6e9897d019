"""TVM side of nar-tvm: Relax passes that extract an OpGraph.

`opgraph` is plain Python and is imported eagerly so that the learning side can
read stored graphs without TVM; everything that needs tvm loads on first use.
"""
from .opgraph import OpGraph, OpGraphError, OpNode, TensorSpec

_LAZY = {
    "ExtractOpGraph": "extract",
    "extract_opgraph": "extract",
    "prepare_for_level": "extract",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["OpGraph", "OpGraphError", "OpNode", "TensorSpec", *_LAZY]
