"""SelectDevice: choose the device a module runs on, then place it there.

The choice is a callable (`choose(mod)` returns a selection with `.choice`, the device's
name, and `.target`); nar_tvm.selection supplies one that predicts the latency on each
platform and applies latency and memory budgets. Placing is SetVirtualDevice's.
"""
from __future__ import annotations

from typing import Callable

import tvm

from .set_virtual_device import SetVirtualDevice


@tvm.ir.transform.module_pass(opt_level=0, name="nar_tvm.SelectDevice")
class SelectDevice:
    """Choose the device with `choose` and place the module there (VDevice + `nar_tvm.device`).

    Compile afterwards with `tvm.compile(mod, target_of(mod))`; the choice is in
    `.selection`. `resolve_target` turns the selection's target into a Target (default: as
    SetVirtualDevice reads it); `choose` raises when no device will do.
    """

    def __init__(self, choose: Callable, resolve_target: Callable | None = None):
        self.choose = choose
        self.resolve_target = resolve_target
        self.selection = None

    def transform_module(self, mod, ctx):  # noqa: ARG002 - signature fixed by TVM
        self.selection = self.choose(mod)
        target = self.selection.target
        if self.resolve_target is not None:
            target = self.resolve_target(target)
        return SetVirtualDevice(target, self.selection.choice)(mod)
