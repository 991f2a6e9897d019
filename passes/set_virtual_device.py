"""SetVirtualDevice: place a Relax module on a target (a Relax `VDevice`).

What to place it on is decided elsewhere (nar_tvm.selection chooses a device by predicted
latency); this pass only records the decision in the module so that compilation proceeds
for that device.
"""
from __future__ import annotations

import json

import tvm
from tvm import relax

DEVICE_ATTR = "nar_tvm.device"


def _target(target) -> tvm.target.Target:
    if isinstance(target, tvm.target.Target):
        return target
    if isinstance(target, str) and target.strip().startswith("{"):
        target = json.loads(target)
    if not target:
        raise ValueError("SetVirtualDevice needs a target (a Target, a dict or a JSON string)")
    return tvm.target.Target(target)


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
        self.target = _target(target)
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
