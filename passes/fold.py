"""Constant folding that keeps shapes and drops values, for graph extraction.

Relax's FoldConstant evaluates every `call_tir` whose arguments are all constants
(weight reshapes, BatchNorm scales folded into convolution weights, ...) by building
its PrimFunc with LLVM and running it. That is most of the time of the graph-level
passes (0.6 of 0.7 s on a ResNet of the zoo), yet an OpGraph keeps only the shapes of
weights. This pass folds the same calls into zero-filled constants of the same shape
and dtype, so the graph that comes out has the structure the real compile gives,
without any code generation.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, tirx

CALL_TIR = tvm.ir.Op.get("relax.call_tir")


def _static_shape(ty) -> tuple[list[int], str] | None:
    if not isinstance(ty, relax.TensorType) or not isinstance(ty.shape, relax.ShapeExpr):
        return None
    dims = [int(d) for d in ty.shape.values if isinstance(d, tirx.IntImm)]
    if len(dims) != len(ty.shape.values):
        return None
    return dims, str(ty.dtype)


@relax.expr_functor.mutator
class _ShapeOnlyFolder(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.module = mod

    def _folded(self, var):
        bound = self.lookup_binding(var)
        return bound if isinstance(bound, tvm.ir.Constant) else None

    def visit_var_(self, var):
        return self._folded(var) or super().visit_var_(var)

    def visit_dataflow_var_(self, var):
        return self._folded(var) or super().visit_dataflow_var_(var)

    def visit_call_(self, call):
        call = self.visit_expr_post_order(call)
        # The calls FoldConstant evaluates: a PrimFunc of this module, constant arguments,
        # one tensor output of static shape.
        if not call.op.same_as(CALL_TIR) or len(call.ty_args) != 1:
            return call
        if not isinstance(self.module.functions.get(call.args[0]), tirx.PrimFunc):
            return call
        if not all(isinstance(a, tvm.ir.Constant) for a in call.args[1].fields):
            return call
        out = _static_shape(call.ty_args[0])
        if out is None:
            return call
        shape, dtype = out
        return relax.const(np.zeros(shape, dtype=dtype), dtype)


@tvm.transform.module_pass(opt_level=0, name="nar_tvm.FoldConstantShapes")
class FoldConstantShapes:
    """Drop-in for `relax.transform.FoldConstant` where only the graph's shape matters."""

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:  # noqa: ARG002 - TVM's signature
        out = mod.clone()
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                folded = _ShapeOnlyFolder(mod).visit_expr(func)
                out.update_func(gv, relax.analysis.remove_all_unused(folded))
        return out


def shape_only_folding(passes: list) -> list:
    """`passes` with FoldConstant replaced by FoldConstantShapes."""
    return [FoldConstantShapes() if p.info.name == "FoldConstant" else p for p in passes]
