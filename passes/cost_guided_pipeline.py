"""CostGuidedPipeline: a Relax pipeline that picks its own passes by predicted cost.

The pass is the mechanism only: `select(mod, target)` scores the candidate pipelines and
returns the selection (anything with a `.choice`); `lower(mod, choice, target)` runs the
chosen pipeline. nar_tvm.selection supplies both (scoring graph-level results with
latency predictors), so this module needs tvm alone.
"""
from __future__ import annotations

from typing import Callable

import tvm


@tvm.ir.transform.module_pass(opt_level=0, name="nar_tvm.CostGuidedPipeline")
class CostGuidedPipeline:
    """A Relax pipeline that scores the candidates and runs the winner's pipeline:

        tvm.compile(mod, target, relax_pipeline=CostGuidedPipeline(select, lower, target))

    `target`: the pass's target, else the one in scope, else None for the callables to
    choose. The choice made on the last module is in `.selection`.
    """

    def __init__(self, select: Callable, lower: Callable, target=None):
        self.select = select
        self.lower = lower
        self.target = target
        self.selection = None

    def transform_module(self, mod, ctx):  # noqa: ARG002 - signature fixed by TVM
        target = self.target if self.target is not None else tvm.target.Target.current(allow_none=True)
        self.selection = self.select(mod, target)
        return self.lower(mod, self.selection.choice, target)
