"""Analytic FLOP counts of Relax operators, from the shapes recorded in an OpNode.

Counted as in NNLQP/NAR-Former: a multiply-add is 2 FLOPs; element-wise ops
cost one FLOP per output element; pure data movement costs none.
"""
from __future__ import annotations

from .opgraph import OpNode, numel

_DATA_MOVEMENT = {
    "reshape", "permute_dims", "transpose", "concat", "split", "squeeze", "expand_dims",
    "flatten", "strided_slice", "take", "broadcast_to", "astype", "layout_transform",
    "dynamic_strided_slice", "tile", "repeat", "gather_elements", "gather_nd", "pad",
}
# Rough op counts per element of transcendental / normalising ops.
_PER_ELEMENT = {"softmax": 5, "log_softmax": 5, "layer_norm": 8, "group_norm": 8,
                "rms_norm": 6, "batch_norm": 4, "gelu": 8, "gelu_tanh": 8, "silu": 4,
                "sigmoid": 4, "tanh": 4, "erf": 4, "hardswish": 4, "hardsigmoid": 3, "exp": 1}


def _reduction_size(node: OpNode) -> int:
    """K of a (batched) matmul: every output element is a K-long dot product.

    The node lists its graph inputs before its weights, so a constant left operand
    (W @ x) comes second: then only the shapes tell which dimension is K.
    """
    operands = [t.shape for t in (*node.inputs, *node.weights)]
    if not operands or not operands[0]:
        return 1
    if len(operands) == 2 and len(operands[0]) >= 2 and len(operands[1]) >= 2:
        a, b = operands
        if a[-1] != b[-2] and b[-1] == a[-2]:
            return int(b[-1])  # the operands are swapped: b @ a
    return int(operands[0][-1])


def op_flops(name: str, node: OpNode) -> int:
    short = name.rsplit(".", 1)[-1]
    out = sum(numel(o.shape) for o in node.outputs)
    if short.startswith("conv") and node.weights:
        w = node.weights[0].shape
        if "transpose" in short:
            # Each input element scatters into out_channels/groups * kernel outputs.
            in_elems = numel(node.inputs[0].shape) if node.inputs else 0
            return 2 * in_elems * numel(w[1:])
        return 2 * out * numel(w[1:])
    if short in ("matmul", "dense", "linear"):
        return 2 * out * _reduction_size(node)
    if "pool" in short:
        size = node.attrs.get("pool_size")
        if size:
            return out * numel(size)
        return numel(node.inputs[0].shape) if node.inputs else out  # adaptive/global pooling
    if short in ("mean", "sum", "max", "min", "prod", "variance", "std", "argmax", "argmin"):
        return numel(node.inputs[0].shape) if node.inputs else out
    if short in _DATA_MOVEMENT:
        return 0
    return _PER_ELEMENT.get(short, 1) * out
