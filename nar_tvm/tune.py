"""`nar-tvm tune`: MetaSchedule tuning of a model, its trial budget spread across the kernels.

Untuned TVM kernels on a CPU are naive single-threaded loops; MetaSchedule's tuning is where
compile time goes, and most of a model's latency sits in a few of its kernels. Three ways to
spend a global budget of N trials over a model's tuning tasks (its distinct fused kernels):

- "metaschedule": MetaSchedule's own gradient task scheduler (one round per task, then the
  tasks whose latency improves fastest);
- "round-robin": MetaSchedule's round-robin scheduler;
- "predicted": before anything is measured, the latency predictor's per-kernel times (the
  kernel-sum readout), summed over each task's call sites, split the budget in proportion;
  tasks predicted under `MIN_SHARE` of the model's time are not tuned at all. Each task is
  then tuned on its own with its share, all tasks sharing one builder, runner, cost model
  and database.

The database (`--database`, default OUT.tuning/) is MetaSchedule's JSON database: a killed run
resumes from it, and trials already in it count towards each task's allocation (the
schedulers' budget shrinks by the trials already recorded).

`import tvm.s_tir.tensor_intrin`, which MetaSchedule runs in every process that schedules or
builds, registers every target's tensor intrinsics and takes 60-80 s of CPU on the machines
seen here (CUDA's alone about 40 s): longer than the builder's default timeout, so every
build of the first round failed. For an x86 CPU target only the x86 intrinsics can apply, so
the others are skipped (see `skip_foreign_tensor_intrinsics`).
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

ALLOCATIONS = ("metaschedule", "predicted", "round-robin")
# A task predicted under this share of the model's time is left untuned by "predicted".
MIN_SHARE = 0.01
_FOREIGN_INTRINSICS = ("cuda", "rocm", "metal", "hexagon", "riscv_cpu", "arm_cpu")


def skip_foreign_tensor_intrinsics() -> None:
    """Make `import tvm.s_tir.tensor_intrin` register only the x86 CPU intrinsics.

    Run before MetaSchedule first imports it, in this process and (as the builder's and
    runner's initializer) in their workers. Only for x86 CPU targets: tensorization for a GPU
    or an ARM device needs the skipped modules.
    """
    import types

    for name in _FOREIGN_INTRINSICS:
        full = f"tvm.s_tir.tensor_intrin.{name}"
        sys.modules.setdefault(full, types.ModuleType(full))


def _is_x86_cpu(target) -> bool:
    import platform

    return target.kind.name == "llvm" and platform.machine() in ("x86_64", "AMD64") \
        and "mtriple" not in target.attrs


# ------------------------------------------------------------------------ tasks
def tuning_module(mod, target, probe=None):
    """`mod` brought to MetaSchedule's level by the default pipeline's graph-level part and
    FuseTIR: `main` calls one PrimFunc per fused kernel. `probe` (ExtractOpGraph) sees the
    fused-level graph on the way, as the profiler's compile shows it to the predictor."""
    import tvm
    from tvm import relax

    from .measure import fused_kernel_passes

    with target:
        return tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                         *fused_kernel_passes("default", target, probe)])(mod)


def _strip_symbol(prim):
    return prim.without_attr("global_symbol") if "global_symbol" in (prim.attrs or {}) else prim


def kernel_tasks(mod, tasks) -> dict[str, int]:
    """Kernel (PrimFunc) name -> index of the tuning task that tunes it.

    MetaSchedule merges structurally equal PrimFuncs into one task named after one of them;
    the other call sites' PrimFuncs carry other names (conv2d3, conv2d7, ...)."""
    import tvm_ffi
    from tvm import tirx

    by_hash: dict[int, list[str]] = {}
    for gv, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc):
            by_hash.setdefault(tvm_ffi.structural_hash(_strip_symbol(func)), []).append(gv.name_hint)
    name_to_group = {name: h for h, names in by_hash.items() for name in names}
    out = {}
    for i, task in enumerate(tasks):
        group = name_to_group.get(task.task_name)
        for name in by_hash.get(group, [task.task_name]):
            out[name] = i
    return out


def predicted_task_ms(graph, predictor, tasks, kernel_to_task: dict[str, int]) -> tuple[np.ndarray, float]:
    """Predicted ms of each task over all its call sites, and the predicted ms that no task
    covers (kernels MetaSchedule does not tune, e.g. VM builtins)."""
    from .kernel_errors import predicted_kernel_ms

    per_kernel = predicted_kernel_ms(predictor, graph)
    if not per_kernel:
        raise ValueError("--allocate predicted needs a checkpoint with per-kernel times (readout 'kernels')")
    totals = np.zeros(len(tasks))
    unmapped = 0.0
    for kernel, ms in per_kernel.items():
        if kernel in kernel_to_task:
            totals[kernel_to_task[kernel]] += ms
        else:
            unmapped += ms
    return totals, unmapped


def allocate_trials(task_ms: np.ndarray, budget: int, min_share: float = MIN_SHARE) -> np.ndarray:
    """Trials per task in proportion to its predicted time (largest remainders round); tasks
    under `min_share` of the total get none, and every other task at least one, taken from the
    largest allocations (with fewer trials than such tasks, the largest tasks get one each).
    Sums to `budget`."""
    task_ms = np.asarray(task_ms, dtype=np.float64)
    if budget < 0:
        raise ValueError(f"the trial budget must be >= 0, got {budget}")
    trials = np.zeros(len(task_ms), dtype=np.int64)
    total = task_ms.sum()
    if total <= 0 or budget == 0:
        return trials
    worth = task_ms / total >= min_share
    if not worth.any():
        worth = task_ms == task_ms.max()
    order = [i for i in np.argsort(-task_ms, kind="stable") if worth[i]]
    if budget <= len(order):
        trials[order[:budget]] = 1
        return trials
    share = np.where(worth, task_ms, 0.0)
    exact = budget * share / share.sum()
    trials = np.floor(exact).astype(np.int64)
    trials[np.argsort(-(exact - trials), kind="stable")[:budget - trials.sum()]] += 1
    for i in order[::-1]:
        if trials[i] == 0:
            trials[np.argmax(trials)] -= 1
            trials[i] = 1
    return trials


# ---------------------------------------------------------------------- tuning
@dataclass
class TuneResult:
    library: str
    database: str
    allocation: str
    budget: int
    trials_run: int
    tune_s: float
    tasks: list[dict] = field(default_factory=list)
    # Every trial in the database, in the order measured: (task index, ms; inf when it failed).
    history: list[tuple[int, float]] = field(default_factory=list)
    # Kernel (PrimFunc) name of the compiled model -> task index.
    kernels: dict[str, int] = field(default_factory=dict)
    # The fused-level graph the predictor saw (OpGraph), and the module tuned: not part of the report.
    graph: object = field(default=None, repr=False)
    module: object = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("graph", "module")}


def trial_history(database, contexts) -> list[tuple[int, float]]:
    """(task index, mean ms) of every trial recorded for `contexts`, in commit order."""
    import tvm_ffi

    index = {tvm_ffi.structural_hash(database.commit_workload(c.mod).mod): i for i, c in enumerate(contexts)}
    out = []
    for record in database.get_all_tuning_records():
        task = index.get(tvm_ffi.structural_hash(record.workload.mod))
        if task is None:
            continue
        secs = [float(x) for x in (record.run_secs or [])]
        ok = secs and all(x < 1e9 for x in secs)
        out.append((task, 1e3 * sum(secs) / len(secs) if ok else float("inf")))
    return out


def _recorded_trials(database, task_mod) -> int:
    workload = database.commit_workload(task_mod)
    return len(database.get_top_k(workload, 1 << 30))


def _progress_callback(bar):
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class ProgressBar(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):  # noqa: ARG002
            bar.update(len(runner_results))

    return ProgressBar()


def tune(model, trials: int, out: str | os.PathLike, allocate: str = "metaschedule",
         database_dir: str | os.PathLike | None = None, checkpoint=None, threads: int = 1,
         trials_per_iter: int | None = None, input_shapes: dict | None = None, seed: int = 0,
         progress: bool = True, search: dict | None = None) -> TuneResult:
    """Tune `model` (ONNX path, `zoo:` spec, IRModule) with `trials` trials in all, compile it
    with the tuned database and export the library to `out`.

    `trials_per_iter` (default: the budget over the tasks, 1 to 64) is how many candidates a
    task measures per round in every strategy. `search`: EvolutionarySearch settings (default
    MetaSchedule's own).
    """
    from tqdm import tqdm

    if allocate not in ALLOCATIONS:
        raise ValueError(f"unknown allocation {allocate!r}; choose from {', '.join(ALLOCATIONS)}")
    if trials < 1:
        raise ValueError(f"--trials must be >= 1, got {trials}")
    from .platform import PlatformSpec

    target = PlatformSpec(threads=threads).tvm_target()
    light = _is_x86_cpu(target)
    if light:
        skip_foreign_tensor_intrinsics()
    from tvm.s_tir import meta_schedule as ms

    from nar_tvm.passes.extract import ExtractOpGraph

    from .api import load

    mod = load(model, input_shapes).mod
    probe = ExtractOpGraph()
    fused = tuning_module(mod, target, probe)
    extracted = [t for t in ms.relax_integration.extract_tasks(fused, target)
                 if not t.mod.attrs.get("tirx.is_scheduled", False)]
    if not extracted:
        raise ValueError("the model has no kernel MetaSchedule can tune")
    database_dir = Path(database_dir or f"{out}.tuning")
    database_dir.mkdir(parents=True, exist_ok=True)
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        extracted, str(database_dir), strategy=ms.search_strategy.EvolutionarySearch(**(search or {})),
        num_threads=threads, seed=seed)
    database = ms.database.JSONDatabase(work_dir=str(database_dir))
    kernels = kernel_tasks(fused, extracted)
    done = np.array([_recorded_trials(database, c.mod) for c in contexts])
    per_iter = trials_per_iter or int(min(64, max(1, trials // len(contexts))))

    if allocate == "predicted":
        from .api import load_predictor

        task_ms, unmapped = predicted_task_ms(probe.graph, load_predictor(checkpoint), extracted, kernels)
        plan = allocate_trials(task_ms, trials)
        todo = np.maximum(plan - done, 0)
    else:
        task_ms, unmapped, plan = None, None, None
        todo = np.array([max(0, trials - int(done.sum()))])

    initializer = skip_foreign_tensor_intrinsics if light else None
    builder = ms.builder.LocalBuilder(max_workers=1, timeout_sec=120, initializer=initializer)
    runner = ms.runner.LocalRunner(timeout_sec=60, initializer=initializer)
    cost_model = ms.cost_model.XGBModel(num_tuning_cores=threads)
    bar = tqdm(total=int(todo.sum()), desc=f"tuning ({allocate})", unit="trial", disable=not progress)
    callbacks = [*ms.measure_callback.MeasureCallback.create("default"), _progress_callback(bar)]
    common = dict(work_dir=str(database_dir), builder=builder, runner=runner, database=database,
                  cost_model=cost_model, measure_callbacks=callbacks)
    start = time.perf_counter()
    try:
        if allocate == "predicted":
            for i in np.flatnonzero(todo):
                ms.tune_tasks(tasks=[contexts[i]], task_weights=[weights[i]], max_trials_global=int(todo[i]),
                              max_trials_per_task=int(todo[i]), num_trials_per_iter=int(min(per_iter, todo[i])),
                              task_scheduler="round-robin", **common)
        elif todo[0] > 0:
            ms.tune_tasks(tasks=contexts, task_weights=weights, max_trials_global=int(todo[0]),
                          max_trials_per_task=int(todo[0]), num_trials_per_iter=per_iter,
                          task_scheduler="gradient" if allocate == "metaschedule" else "round-robin", **common)
    finally:
        bar.close()
    tune_s = time.perf_counter() - start

    after = [_recorded_trials(database, c.mod) for c in contexts]
    _compile_tuned(fused, target, database, out)
    tasks = []
    for i, task in enumerate(extracted):
        row = {"task": task.task_name, "weight": int(weights[i]), "trials": int(after[i])}
        if task_ms is not None:
            row.update(predicted_ms=float(task_ms[i]), allocated=int(plan[i]))
        tasks.append(row)
    result = TuneResult(str(out), str(database_dir), allocate, trials, int(sum(after) - done.sum()), tune_s, tasks,
                        trial_history(database, contexts), kernels, probe.graph, mod)
    if unmapped:
        result.tasks.append({"task": "(kernels outside any task)", "predicted_ms": float(unmapped)})
    return result


def _compile_tuned(fused, target, database, out) -> None:
    """The tuned kernels from `database` applied to the fused module, then the default
    pipeline's remaining passes; kernels without a record compile untuned."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    @tvm.transform.module_pass(opt_level=0, name="nar_tvm.tuned_lowering")
    def lowering(mod, _ctx):
        with target, database:
            return tvm.transform.Sequential([relax.transform.MetaScheduleApplyDatabase(enable_warning=False),
                                             *cpu.dataflow_lower_passes(target), *cpu.finalize_passes(target)])(mod)

    ex = tvm.compile(fused, target=target, relax_pipeline=lowering)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    ex.export_library(str(out))


# ------------------------------------------------------------------------- CLI
def cmd_tune(args) -> int:
    from .loaders import parse_input_shapes

    result = tune(args.model, args.trials, args.out, args.allocate, args.database, args.checkpoint,
                  args.threads, args.trials_per_iter, parse_input_shapes(args.input_shape), args.seed)
    print(f"{'task':<40} {'weight':>6} {'trials':>6}" + ("  predicted ms  allocated" if args.allocate == "predicted" else ""))
    for row in result.tasks:
        line = f"{row['task']:<40} {row.get('weight', ''):>6} {row.get('trials', ''):>6}"
        if "predicted_ms" in row:
            line += f"  {row['predicted_ms']:12.3f}  {row.get('allocated', ''):>9}"
        print(line)
    print(f"{result.trials_run} trials in {result.tune_s:.0f} s ({args.allocate}); database {result.database}; "
          f"wrote {result.library}")
    if args.report:
        Path(args.report).write_text(json.dumps(result.to_dict(), indent=1))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("tune", help="tune a model with MetaSchedule, the trial budget spread by the predictor or "
                                    "MetaSchedule's scheduler", description=__doc__.split("\n\n")[1])
    p.add_argument("model", metavar="MODEL", help="ONNX file or zoo:FAMILY:SEED")
    p.add_argument("--trials", type=int, required=True, help="trials in all, over every task")
    p.add_argument("-o", "--out", required=True, help="compiled library to write (.so)")
    p.add_argument("--allocate", choices=ALLOCATIONS, default="metaschedule",
                   help="how the trials are spread over the tasks (default: MetaSchedule's gradient scheduler)")
    p.add_argument("--database", help="MetaSchedule database folder; an earlier run's resumes (default OUT.tuning)")
    p.add_argument("--checkpoint", help="predictor for --allocate predicted (default: the shipped one)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--trials-per-iter", type=int, help="candidates a task measures per round "
                                                       "(default: trials / tasks, 1 to 64)")
    p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", help="write the per-task allocation and trials as JSON here")
    p.set_defaults(func=cmd_tune)
