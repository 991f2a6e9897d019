"""LegalizeOps that lowers each distinct operator call once per process.

Legalization turns every high-level call into a `call_tir` to a PrimFunc built by TE (the
`FLegalize` of the op, through `BlockBuilder.call_te`). It is most of the cost of bringing a
model to the fused level (about 0.4 of 0.5 s CPU per zoo model), and most of that work is
repeated: a network's blocks call the same conv2d, add and relu on the same shapes, and the
models a NAS search or a batch prediction feeds in share most of their operator signatures.

This pass keeps LegalizeOps (same op table, same order, same naming) and wraps every op's
`FLegalize` with a cache keyed by what legalization reads: the op, its attributes, the
shape and dtype of each argument (and the value of non-tensor ones), the call's result type
and the current target. A call whose legalization is one `call_tir` on a PrimFunc over the
call's own arguments is stored as (PrimFunc, name hint, argument positions, output types);
a later equal call re-adds that PrimFunc under the same hint (so the builder deduplicates and
names it exactly as LegalizeOps would) and calls it on its own arguments. Anything else
(symbolic shapes, several emitted bindings, constants baked into the PrimFunc) is legalized
as usual and not stored. The module that comes out is structurally equal to LegalizeOps'.

Cost: one lookup per call; a hit skips TE and PrimFunc creation, and after the first hit of a
signature in a module also the builder's structural deduplication (hashing the PrimFunc, about
a tenth of a millisecond): within one pass the builder would hand back the same function.
Memory: one PrimFunc per distinct signature.
"""
from __future__ import annotations

from contextlib import contextmanager

import tvm
import tvm_ffi
from tvm import relax, tirx

CALL_TIR = tvm.ir.Op.get("relax.call_tir")


def _tensor_key(expr):
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or not isinstance(ty.shape, relax.ShapeExpr):
        return None
    dims = []
    # Slicing reads a TVM array in one pass; iterating bounds-checks every element in Python.
    for d in ty.shape.values[:]:
        if not isinstance(d, tirx.IntImm):
            return None
        dims.append(d.value)
    return tuple(dims), str(ty.dtype)


def _signature(call: relax.Call):
    """(tensor leaves in argument order, hashable key of the arguments), or None when the
    call has an argument whose legalization could depend on more than its shape and dtype."""
    leaves, keys = [], []
    for arg in call.args:
        fields = arg.fields if isinstance(arg, relax.Tuple) else None
        for leaf in fields if fields is not None else [arg]:
            if isinstance(leaf, (relax.Var, tvm.ir.Constant)):
                key = _tensor_key(leaf)
                if key is None:
                    return None
                leaves.append(leaf)
                keys.append(key)
            elif fields is not None:
                return None
            else:  # shapes, prim values, strings: their value is part of the signature
                keys.append((type(leaf).__name__, tvm_ffi.structural_hash(leaf)))
        if fields is not None:
            keys.append(("tuple", len(fields)))
    return leaves, tuple(keys)


class LegalizeCache:
    """Legalized calls by signature, shared by every CachedLegalizeOps given it."""

    def __init__(self):
        self.entries: dict = {}
        self.hits = 0
        self.misses = 0
        self._hints: list[str] | None = None
        self._added_in_module: dict = {}
        self._target_key = ""
        self._legalize_map: dict | None = None

    @contextmanager
    def legalizing_module(self):
        """Per-module state for one LegalizeOps run: the functions already added to its
        builder, the target it runs under, and the hint recording below."""
        target = tvm.target.Target.current(allow_none=True)
        self._target_key = str(target) if target is not None else ""
        self._added_in_module = {}
        try:
            with self.recording_hints():
                yield
        finally:
            self._added_in_module = {}

    @contextmanager
    def recording_hints(self):
        """While active, the name hint of every PrimFunc a legalization adds is noted.

        The hint (e.g. "conv2d") is what LegalizeOps names a kernel from; the builder's
        deduplicated name ("conv2d3") would not reproduce its naming in another module.
        FLegalize functions receive a new Python wrapper of the builder, so the hook has to
        sit on the class, and only for the duration of one pass.
        """
        original = relax.BlockBuilder.add_func
        cache = self

        def add_func(builder, func, func_name):
            if cache._hints is not None:
                cache._hints.append(func_name)
            return original(builder, func, func_name)

        relax.BlockBuilder.add_func = add_func
        try:
            yield
        finally:
            relax.BlockBuilder.add_func = original

    def legalize_map(self) -> dict:
        """Every op's FLegalize behind this cache, for LegalizeOps' customize map."""
        if self._legalize_map is None:
            self._legalize_map = {}
            for name in tvm.ir.Op.list_op_names():
                legalize = tvm.ir.Op.get(name).get_attr("FLegalize")
                if legalize is not None:
                    self._legalize_map[name] = self.wrap(name, legalize)
        return self._legalize_map

    def wrap(self, op_name: str, legalize):
        def cached_legalize(bb, call):
            signature = _signature(call)
            result_key = _tensor_key(call)
            if signature is None or result_key is None:
                return legalize(bb, call)
            leaves, arg_keys = signature
            key = (op_name, tvm_ffi.structural_hash(call.attrs) if call.attrs is not None else 0,
                   arg_keys, result_key, self._target_key)
            entry = self.entries.get(key)
            if entry is not None:
                prim, hint, positions, out_types = entry
                self.hits += 1
                gvar = self._added_in_module.get(key)
                if gvar is None:
                    gvar = self._added_in_module[key] = bb.add_func(prim, hint)
                return relax.call_tir(gvar, [leaves[p] for p in positions], out_types)
            self.misses += 1
            self._hints = []
            try:
                out = legalize(bb, call)
                hints = self._hints
            finally:
                self._hints = None
            stored = self._storable(bb, out, leaves, hints)
            if stored is not None:
                self.entries[key] = stored
            return out

        return cached_legalize

    @staticmethod
    def _storable(bb, out, leaves, hints):
        if (len(hints) != 1 or not isinstance(out, relax.Call) or not out.op.same_as(CALL_TIR)
                or len(out.args) != 2):
            return None
        positions = []
        for arg in out.args[1].fields:
            at = next((i for i, leaf in enumerate(leaves) if leaf.same_as(arg)), None)
            if at is None:
                return None
            positions.append(at)
        # A constant argument the PrimFunc does not take was folded into its body.
        if any(isinstance(leaf, tvm.ir.Constant) and i not in positions for i, leaf in enumerate(leaves)):
            return None
        return bb.get()[out.args[0]], hints[0], positions, list(out.ty_args)


# Every extraction in this process shares it.
_PROCESS_CACHE = LegalizeCache()


@tvm.transform.module_pass(opt_level=0, name="nar_tvm.CachedLegalizeOps")
class CachedLegalizeOps:
    """LegalizeOps with `cache` (default: the process-wide one) in front of every op's FLegalize."""

    def __init__(self, cache: LegalizeCache | None = None):
        self.cache = cache or _PROCESS_CACHE

    def transform_module(self, mod, ctx):  # noqa: ARG002 - signature fixed by TVM
        with self.cache.legalizing_module():
            return relax.transform.LegalizeOps(self.cache.legalize_map())(mod)


def with_cached_legalization(passes: list, cache: LegalizeCache | None = None) -> list:
    """`passes` with every plain LegalizeOps replaced by CachedLegalizeOps."""
    return [CachedLegalizeOps(cache) if p.info.name == "LegalizeOps" else p for p in passes]
