"""nar-tvm: NAR-Former V2 latency prediction inside Apache TVM.

Heavy dependencies (tvm, torch) load on first use, so that importing
`nar_tvm.cost_model` does not pull in TVM and `nar_tvm.passes` does not pull in torch.
"""
__version__ = "0.1.0"

_LAZY = {
    "extract": "nar_tvm.api",
    "extract_many": "nar_tvm.api",
    "iter_extract": "nar_tvm.api",
    "predict": "nar_tvm.api",
    "load_model": "nar_tvm.loaders",
    "register": "nar_tvm.integration",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nar_tvm' has no attribute {name!r}")
