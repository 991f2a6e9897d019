"""Python API mirroring the CLI: extract an OpGraph, predict latency."""
from __future__ import annotations

from nar_tvm.passes.opgraph import OpGraph

from .loaders import load_model


def extract(model, level: str = "op", input_shapes: dict | None = None, example_inputs=None,
            target=None, name: str | None = None) -> OpGraph:
    """OpGraph of `model` (ONNX path/ModelProto, torch module + example_inputs, or IRModule)."""
    from nar_tvm.passes.extract import extract_opgraph

    loaded = load_model(model, input_shapes=input_shapes, example_inputs=example_inputs, name=name)
    graph = extract_opgraph(loaded.mod, level, target, loaded.name)
    graph.meta.update({"frontend": loaded.frontend, "input_shapes": loaded.input_shapes})
    return graph
