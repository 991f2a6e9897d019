"""Relax module pass that turns a model's `main` function into an OpGraph.

It reads the module as it finds it, so it works at any point of the pipeline:
plain Relax operator calls (after import), `call_tir` kernels (after
legalization or FuseTIR) and calls to primitive functions (after FuseOps).
`prepare_for_level` brings a freshly imported module to one of the two levels
the project trains on, with the passes `pipeline.level_passes` defines.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import tvm
from tvm import relax

from .flops import op_flops
from .opgraph import FusedOp, OpGraph, OpNode, TensorSpec
from .pipeline import level_passes


class ExtractionError(ValueError):
    """The module cannot be turned into an OpGraph (dynamic shape, no `main`, ...)."""


# ---------------------------------------------------------------- conversions
def to_python(value):
    """TVM attribute values as plain JSON-able Python values."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return str(value)  # DataType and String are str subclasses with a TVM repr
    if isinstance(value, (tvm.tirx.IntImm,)):
        return int(value.value)
    if isinstance(value, (tvm.tirx.FloatImm,)):
        return float(value.value)
    if isinstance(value, (list, tuple)) or type(value).__name__ in ("Array", "List"):
        return [to_python(v) for v in value]
    if type(value).__name__ in ("Map", "Dict") or isinstance(value, dict):
        return {str(k): to_python(v) for k, v in value.items()}
    if hasattr(value, "value") and isinstance(getattr(value, "value"), (int, float, str)):
        return value.value
    return str(value)


def attrs_to_dict(attrs) -> dict:
    if attrs is None:
        return {}
    info = getattr(type(attrs), "__tvm_ffi_type_info__", None)
    if info is None:
        return {}
    return {f.name: to_python(getattr(attrs, f.name)) for f in info.fields}


def _static_dims(shape, where: str) -> list[int]:
    dims = []
    # Slicing reads a TVM array in one pass; iterating bounds-checks every element in Python.
    for d in shape.values[:] if hasattr(shape, "values") else shape:
        if isinstance(d, tvm.tirx.IntImm):
            dims.append(int(d.value))
        elif isinstance(d, int):
            dims.append(d)
        else:
            raise ExtractionError(
                f"{where} has a dynamic dimension {d}: latency prediction needs static shapes; "
                "give the input shapes explicitly (e.g. --input-shape input=1,3,224,224)"
            )
    return dims


def call_attrs(call: relax.Call) -> tuple[dict, list]:
    """An operator call's attributes (shape and scalar arguments included) and its data arguments."""
    attrs = attrs_to_dict(call.attrs)
    data_args = []
    for i, a in enumerate(call.args):
        if isinstance(a, relax.ShapeExpr):
            attrs[f"arg{i}_shape"] = [to_python(v) for v in a.values]
        elif type(a).__name__ == "PrimValue":
            attrs[f"arg{i}"] = to_python(a.value)
        else:
            data_args.append(a)
    return attrs, data_args


def tensor_specs(ty, where: str) -> list[TensorSpec]:
    """Flattened tensor specs of a Relax type (tuples expand to their fields)."""
    if isinstance(ty, relax.TensorType):
        if ty.shape is None:
            raise ExtractionError(f"{where} has an unknown rank/shape; static shapes are required")
        return [TensorSpec(_static_dims(ty.shape, where), str(ty.dtype))]
    if isinstance(ty, tvm.ir.TupleType):
        return [spec for field in ty.fields for spec in tensor_specs(field, where)]
    return []  # shapes, prim values, objects: not tensors, not data


# ------------------------------------------------------------------ sources
@dataclass(frozen=True)
class _Src:
    """Where a value comes from: a node's output, a graph input, or a constant."""

    kind: str  # "node" | "input" | "const"
    index: int = -1
    spec: TensorSpec | None = None


_KERNEL_SUFFIX = re.compile(r"\d+$")


# Legalized kernel names that contain underscores themselves.
_MULTIWORD_KERNELS = {
    "max_pool2d", "avg_pool2d", "max_pool1d", "avg_pool1d", "max_pool3d", "avg_pool3d",
    "adaptive_avg_pool2d", "adaptive_avg_pool1d", "adaptive_max_pool2d", "strided_slice",
    "layer_norm", "batch_norm", "group_norm", "rms_norm", "expand_dims", "log_softmax",
    "permute_dims", "conv2d_transpose", "conv1d_transpose", "broadcast_to", "image_resize2d",
    "collapse_sum", "dynamic_strided_slice", "gelu_tanh", "zeros_like", "ones_like", "full_like",
}


def _kernel_ops(name: str) -> list[str]:
    """Op list of an already fused PrimFunc, recovered from its name (fused_conv2d_add_relu)."""
    name = _KERNEL_SUFFIX.sub("", name)
    if name.startswith("fused_"):
        name = name[len("fused_"):]
    words = [_KERNEL_SUFFIX.sub("", w) if not w.endswith("d") else w for w in name.split("_")]
    ops, i = [], 0
    while i < len(words):
        for j in range(len(words), i, -1):
            joined = "_".join(words[i:j])
            if j - i == 1 or joined in _MULTIWORD_KERNELS:
                ops.append(joined)
                i = j
                break
    return ops


class _Extractor:
    def __init__(self, mod: tvm.IRModule, func_name: str, level: str, kernel_attrs: dict | None = None):
        if func_name not in [gv.name_hint for gv in mod.get_global_vars()]:
            raise ExtractionError(f"the module has no function {func_name!r} to extract")
        self.mod = mod
        self.func = mod[func_name]
        if not isinstance(self.func, relax.Function):
            raise ExtractionError(f"{func_name!r} is not a Relax function")
        self.level = level
        self.nodes: list[OpNode] = []
        self.edges: set[tuple[int, int]] = set()
        self.env: dict = {}  # relax Var -> list[_Src] (a tuple value has several)
        self.inputs: list[TensorSpec] = []
        # PrimFunc name -> attributes of the operator it was legalized from (RecordKernelAttrs).
        self.kernel_attrs = kernel_attrs or {}

    # Values that only depend on constants (weight transposes, reshaped biases)
    # are weights of their consumer, not operators of the network.
    def _sources(self, expr) -> list[_Src]:
        if isinstance(expr, tvm.ir.Constant):
            return [_Src("const", spec=s) for s in tensor_specs(expr.ty, "constant")]
        if isinstance(expr, relax.Var):
            if expr not in self.env:
                raise ExtractionError(f"variable {expr.name} is used before it is defined")
            return self.env[expr]
        if isinstance(expr, relax.Tuple):
            return [s for field in expr.fields for s in self._sources(field)]
        if isinstance(expr, relax.TupleGetItem):
            return [self._sources(expr.tuple_value)[expr.index]]
        return []  # shape expressions, prim values, strings: attributes, not data

    def _add_node(self, var, op: str, ops: list[str], data_args, attrs: dict, flops_fn, kernel=None,
                  fused=()):
        where = f"{op} (binding {var.name})"
        srcs = [s for a in data_args for s in self._sources(a)]
        outputs = tensor_specs(var.ty, where)
        if srcs and all(s.kind == "const" for s in srcs):
            self.env[var] = [_Src("const", spec=o) for o in outputs]
            return
        inputs, weights = [], []
        node_id = len(self.nodes)
        for s in srcs:
            if s.kind == "const":
                weights.append(s.spec)
            else:
                inputs.append(s.spec)
                if s.kind == "node":
                    self.edges.add((s.index, node_id))
        # TVM hands out its own String type; the graph must hold plain Python values.
        node = OpNode(op=str(op), attrs=attrs, inputs=inputs, weights=weights, outputs=outputs,
                      ops=[str(o) for o in ops], kernel=None if kernel is None else str(kernel),
                      fused=list(fused))
        node.flops = int(flops_fn(node))
        self.nodes.append(node)
        self.env[var] = [_Src("node", node_id, o) for o in outputs]

    def _bind_call(self, var, call: relax.Call):
        op = call.op
        if isinstance(op, tvm.ir.Op):
            if op.name in ("relax.call_tir", "relax.call_tir_inplace", "relax.call_tir_with_grad"):
                gv = call.args[0]
                prim = self.mod[gv]
                ops = _kernel_ops(gv.name_hint)
                # A kernel left alone by FuseOps: one legalized operator, whose attributes
                # are known when legalization was watched.
                recorded = self.kernel_attrs.get(gv.name_hint)
                fused = [] if recorded is None else [self._fused_op(var, call, _KERNEL_SUFFIX.sub("", gv.name_hint))]
                self._add_node(var, "kernel:" + _anchor(ops), ops, [call.args[1]],
                               dict(recorded or {}), lambda n: _tir_flops(prim), kernel=gv.name_hint, fused=fused)
                return
            attrs, data_args = call_attrs(call)
            name = op.name
            self._add_node(var, name, [name], data_args, attrs, lambda n: op_flops(name, n))
            return
        if isinstance(op, tvm.ir.GlobalVar):
            callee = self.mod[op]
            if isinstance(callee, relax.Function):
                self._add_fused(var, call, op, callee)
                return
            raise ExtractionError(f"call to {op.name_hint}, a {type(callee).__name__}, is not supported")
        raise ExtractionError(f"call to {op} ({type(op).__name__}) at {var.name} is not supported")

    def _fused_op(self, var, call: relax.Call, name: str) -> FusedOp:
        """An operator of a kernel: a `call_tir` to a legalized PrimFunc, or a Relax operator."""
        if call.op.name.startswith("relax.call_tir"):
            attrs, args = dict(self.kernel_attrs.get(call.args[0].name_hint, {})), [call.args[1]]
        else:
            attrs, args = call_attrs(call)
        where = f"{name} (binding {var.name})"
        inputs = [spec for a in args for spec in _arg_specs(a, where)]
        return FusedOp(name, attrs, inputs, tensor_specs(var.ty, where))

    def _add_fused(self, var, call, gv, fn: relax.Function):
        """A FuseOps group: one kernel after FuseTIR, carrying the ops it contains."""
        ops, parts, flops = [], [], 0
        for block in fn.body.blocks:
            for b in block.bindings:
                inner = b.value
                if not isinstance(inner, relax.Call) or not isinstance(inner.op, tvm.ir.Op):
                    continue
                if inner.op.name.startswith("relax.call_tir"):
                    prim_gv = inner.args[0]
                    ops.append(_KERNEL_SUFFIX.sub("", prim_gv.name_hint))
                    flops += _tir_flops(self.mod[prim_gv])
                else:
                    ops.append(inner.op.name)
                parts.append(self._fused_op(b.var, inner, ops[-1]))
        anchor = _anchor_index(ops)
        attrs = dict(parts[anchor].attrs) if parts else {}
        self._add_node(var, "kernel:" + (ops[anchor] if ops else "empty"), ops, list(call.args), attrs,
                       lambda n: flops, kernel=gv.name_hint, fused=parts)

    def run(self) -> OpGraph:
        for p in self.func.params:
            specs = tensor_specs(p.ty, f"input {p.name}")
            base = len(self.inputs)
            self.inputs.extend(specs)
            self.env[p] = [_Src("input", base + i, s) for i, s in enumerate(specs)]
        body = self.func.body
        if not isinstance(body, relax.SeqExpr):
            raise ExtractionError("main's body is not a sequence of bindings; run relax.transform.Normalize first")
        for block in body.blocks:
            for b in block.bindings:
                value = b.value
                if isinstance(value, relax.Call):
                    self._bind_call(b.var, value)
                else:
                    self.env[b.var] = self._sources(value)
        return self._live_graph(self._sources(body.body))

    def _live_graph(self, outputs: list[_Src]) -> OpGraph:
        """Keep the nodes the result depends on: frontends leave dead values behind
        (torch.export's max-pool indices) that are never computed after DCE."""
        preds: dict[int, list[int]] = {}
        for s, d in self.edges:
            preds.setdefault(d, []).append(s)
        live, stack = set(), [o.index for o in outputs if o.kind == "node"]
        while stack:
            n = stack.pop()
            if n not in live:
                live.add(n)
                stack.extend(preds.get(n, []))
        order = sorted(live)
        new_id = {old: new for new, old in enumerate(order)}
        edges = sorted((new_id[s], new_id[d]) for s, d in self.edges if s in live and d in live)
        return OpGraph(nodes=[self.nodes[i] for i in order], edges=edges, level=self.level, inputs=self.inputs)


# Higher rank = the op that dominates a fused kernel's cost (TVM's OpPatternKind order).
_ANCHOR_HINTS = ("conv", "matmul", "dense", "pool", "softmax", "norm", "mean", "sum", "max", "take")


def _anchor_index(ops: list[str]) -> int:
    for hint in _ANCHOR_HINTS:
        for i, o in enumerate(ops):
            if hint in o:
                return i
    return 0


def _anchor(ops: list[str]) -> str:
    return ops[_anchor_index(ops)] if ops else "empty"


def _arg_specs(arg, where: str) -> list[TensorSpec]:
    if isinstance(arg, relax.Tuple):
        return [s for field in arg.fields for s in _arg_specs(field, where)]
    ty = getattr(arg, "ty", None)
    return tensor_specs(ty, where) if ty is not None else []


def _tir_flops(prim) -> int:
    try:
        return int(tvm.s_tir.analysis.estimate_tir_flops(tvm.IRModule({"main": prim})))
    except Exception:  # noqa: BLE001 - opaque/extern kernels have no countable loop nest
        return 0


def _calls(mod: tvm.IRModule, func_name: str):
    for block in mod[func_name].body.blocks:
        for b in block.bindings:
            if isinstance(b.value, relax.Call):
                yield b.value


def _is_kernel_call(call: relax.Call) -> bool:
    return isinstance(call.op, tvm.ir.GlobalVar) or (
        isinstance(call.op, tvm.ir.Op) and call.op.name.startswith("relax.call_tir"))


def _detect_level(mod: tvm.IRModule, func_name: str) -> str:
    return "fused" if any(_is_kernel_call(c) for c in _calls(mod, func_name)) else "op"


def past_legalization(mod: tvm.IRModule, func_name: str = "main") -> bool:
    """Whether `func_name` calls kernels and no operator is left to legalize.

    Kernel calls alone do not tell: frontends emit some operators straight as `call_tir`
    (the ONNX importer does for Clip, hence for every ReLU6), beside high-level ones.
    """
    calls = list(_calls(mod, func_name))
    legalizable = any(isinstance(c.op, tvm.ir.Op) and c.op.get_attr("FLegalize") is not None for c in calls)
    return not legalizable and any(_is_kernel_call(c) for c in calls)


def extract_from_module(mod: tvm.IRModule, func_name: str = "main", kernel_attrs: dict | None = None) -> OpGraph:
    """Extract the graph of `mod` as it is (no passes applied).

    `kernel_attrs` (PrimFunc name -> operator attributes, from RecordKernelAttrs) gives fused
    nodes the attributes of their operators, which legalization does not keep.
    """
    return _Extractor(mod, func_name, _detect_level(mod, func_name), kernel_attrs).run()


def _relax_bindings(mod: tvm.IRModule):
    for _, func in mod.functions_items():
        if isinstance(func, relax.Function) and isinstance(func.body, relax.SeqExpr):
            for block in func.body.blocks:
                for b in block.bindings:
                    yield b.var, b.value


@tvm.transform.module_pass(opt_level=0, name="nar_tvm.RecordKernelAttrs")
class RecordKernelAttrs:
    """Runs a LegalizeOps pass and notes which operator call each new PrimFunc came from.

    Legalization replaces `conv2d(x, w, strides=..., groups=...)` by a `call_tir` to a PrimFunc
    that keeps none of those attributes, so kernels fused from PrimFuncs cannot tell them. The
    binding keeps its variable through legalization, which pairs each operator call with the
    PrimFunc that replaced it. Returns LegalizeOps' module untouched: put it in a measured
    pipeline without changing what is measured.
    """

    def __init__(self, legalize, sink: dict):
        self.legalize = legalize
        self.sink = sink

    def transform_module(self, mod, ctx):  # noqa: ARG002 - signature fixed by TVM
        calls = {var: value for var, value in _relax_bindings(mod)
                 if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op)
                 and not value.op.name.startswith("relax.call_tir")}
        out = self.legalize(mod)
        # Names are per module: a later module's conv2d is another PrimFunc.
        self.sink.clear()
        for var, value in _relax_bindings(out):
            if (var in calls and isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op)
                    and value.op.name.startswith("relax.call_tir")):
                # Structurally equal PrimFuncs are shared, and equal PrimFuncs mean equal attributes.
                self.sink.setdefault(value.args[0].name_hint, call_attrs(calls[var])[0])
        return out


LEGALIZE_PASSES = ("LegalizeOps", "nar_tvm.CachedLegalizeOps")


def record_kernel_attrs(passes: list, probe) -> list:
    """`passes` with each LegalizeOps wrapped to tell `probe` (an ExtractOpGraph that runs
    later in the same sequence) the operator attributes of the kernels it will see."""
    if not isinstance(probe, ExtractOpGraph):
        return list(passes)
    return [RecordKernelAttrs(p, probe.kernel_attrs) if p.info.name in LEGALIZE_PASSES else p for p in passes]


@tvm.ir.transform.module_pass(opt_level=0, name="nar_tvm.ExtractOpGraph")
class ExtractOpGraph:
    """Analysis pass: records the OpGraph of `main` and returns the module unchanged.

    Use it inside any `tvm.transform.Sequential`; the graphs it saw are in
    `.graphs` (one per module it ran on), the last one in `.graph`.
    """

    def __init__(self, func_name: str = "main"):
        self.func_name = func_name
        self.graphs: list[OpGraph] = []
        # Filled by RecordKernelAttrs when legalization runs earlier in the sequence.
        self.kernel_attrs: dict[str, dict] = {}

    @property
    def graph(self) -> OpGraph | None:
        return self.graphs[-1] if self.graphs else None

    def transform_module(self, mod, ctx):  # noqa: ARG002 - signature fixed by TVM
        self.graphs.append(extract_from_module(mod, self.func_name, self.kernel_attrs))
        return mod


def default_target() -> tvm.target.Target:
    from .host_target import host_target

    return tvm.target.Target(host_target())


def prepare_for_level(mod: tvm.IRModule, level: str, target=None) -> tvm.IRModule:
    target = target or default_target()
    with target:
        return tvm.transform.Sequential(level_passes(level, target))(mod)


def extract_opgraph(mod: tvm.IRModule, level: str = "op", target=None, name: str = "") -> OpGraph:
    """Bring an imported module to `level`, then extract its OpGraph.

    The module brought there is thrown away, so constants are folded by shape only
    (fold.FoldConstantShapes): the same graph without building any kernel; and operator
    calls are legalized through the process-wide cache (cached_legalize), so a signature
    met before is not lowered again.
    """
    from .cached_legalize import with_cached_legalization
    from .fold import shape_only_folding

    extractor = ExtractOpGraph()
    target = target or default_target()
    with target:
        passes = with_cached_legalization(shape_only_folding(level_passes(level, target)))
        tvm.transform.Sequential([*record_kernel_attrs(passes, extractor), extractor])(mod)
    graph = extractor.graph
    graph.level = level
    graph.name = name
    return graph
