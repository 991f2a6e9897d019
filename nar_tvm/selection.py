"""Cost-guided choices: which compile pipeline (graph-level candidate), which device.

Pipeline selection. A latency model holds for one platform, and the platform includes
the compile pipeline, so candidates are scored with one checkpoint per candidate: a
mapping candidate -> checkpoint, each trained on data profiled with that pipeline
(`nar-tvm profile --pipeline NAME`). For every candidate only its graph-level passes
run (`measure.graph_level_passes`: layout conversion, legalization, fusion; no code
generation); the resulting graph is scored by the candidate's checkpoint, and only the
winner is compiled. A checkpoint trained under another pipeline is refused unless
`allow_mismatch=True`: one fused-level checkpoint then scores the candidates' graphs
(fusion on/off, layouts change them) but cannot tell apart candidates whose graphs are
identical (dlight only changes schedules), which then tie.

Device selection. One checkpoint per platform (CPU, GPU, ...): predict on each, keep
those within the latency and memory budgets, take the fastest, and say why. As a pass,
`SelectDevice` places the module on the winner (`passes.SetVirtualDevice`); the pass
objects live in `nar_tvm.passes`, the policy that drives them here.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import tvm
from tvm import relax

from nar_tvm.passes import cost_guided_pipeline as _passes_cgp
from nar_tvm.passes import select_device as _passes_sd

from .integration import as_target, module_graph, predictor_level, predictor_pipeline, predictor_pipelines
from .platform import PIPELINES, PlatformSpec


class SelectionError(ValueError):
    pass


def _load(name: str, what: str, predictor):
    """A predictor object (anything with .predict/.platform/.provenance) or a checkpoint path."""
    if predictor is None or predictor == "":
        raise SelectionError(f"missing checkpoint for {what} {name!r}")
    if hasattr(predictor, "predict"):
        return predictor
    path = Path(predictor)
    if not path.is_file():
        raise SelectionError(f"missing checkpoint for {what} {name!r}: {path} does not exist")
    from .api import load_predictor

    return load_predictor(path)


def _module(model, input_shapes=None) -> tvm.IRModule:
    if isinstance(model, tvm.IRModule):
        return model
    from .loaders import load_model

    return load_model(model, input_shapes=input_shapes).mod


# ------------------------------------------------------------ pipelines
@dataclass
class CandidateScore:
    candidate: str
    predicted_ms: float
    nodes: int
    unknown_ops: int = 0
    graph_hash: str = ""


@dataclass
class PipelineSelection:
    scores: list[CandidateScore]
    choice: str
    select_s: float  # time spent applying graph-level passes and predicting

    def to_dict(self) -> dict:
        return {"choice": self.choice, "select_s": round(self.select_s, 3),
                "candidates": [asdict(s) for s in self.scores]}

    def report(self) -> str:
        best = min(s.predicted_ms for s in self.scores)
        lines = [f"{'candidate':<10} {'predicted ms':>13} {'vs best':>8} {'nodes':>6}"]
        for s in sorted(self.scores, key=lambda s: s.predicted_ms):
            mark = "  <- chosen" if s.candidate == self.choice else ""
            unk = f"  ({s.unknown_ops} nodes of unseen op types)" if s.unknown_ops else ""
            lines.append(f"{s.candidate:<10} {s.predicted_ms:13.3f} {s.predicted_ms / best - 1:+8.1%} "
                         f"{s.nodes:6d}{mark}{unk}")
        lines.append(f"scored {len(self.scores)} candidates in {self.select_s:.2f} s without code generation")
        return "\n".join(lines)


def score_candidates(model, predictors: Mapping[str, object], target=None, input_shapes=None,
                     allow_mismatch: bool = False) -> list[CandidateScore]:
    """Predicted latency of `model` under each candidate pipeline, from graph-level passes only.

    `predictors`: candidate pipeline name -> predictor or checkpoint path.
    """
    if not predictors:
        raise SelectionError("no candidates to select from")
    unknown = [c for c in predictors if c not in PIPELINES]
    if unknown:
        raise SelectionError(f"unknown candidate pipelines {unknown}; choose from {PIPELINES}")
    mod = _module(model, input_shapes)
    target = as_target(target)
    graphs: dict = {}
    scores = []
    for cand, pred in predictors.items():
        pred = _load(cand, "candidate pipeline", pred)
        trained = predictor_pipelines(pred)
        if cand not in trained and not allow_mismatch:
            raise SelectionError(f"the checkpoint for candidate {cand!r} was trained on pipeline "
                                 f"{', '.join(map(repr, trained))} data; give a checkpoint trained on {cand!r} "
                                 "measurements (or allow_mismatch=True)")
        level = predictor_level(pred)
        # At op level every candidate has the same graph; extract it once.
        key = (cand if level == "fused" else "", level)
        if key not in graphs:
            graphs[key] = module_graph(mod, cand, level, target)
        graph = graphs[key]
        res = pred.predict([graph])
        scores.append(CandidateScore(cand, float(res.latency_ms[0]), graph.num_nodes,
                                     int(res.unknown_ops[0]), graph.content_hash()))
    return scores


def select_pipeline(model, predictors: Mapping[str, object], target=None, input_shapes=None,
                    allow_mismatch: bool = False) -> PipelineSelection:
    t0 = time.perf_counter()
    scores = score_candidates(model, predictors, target, input_shapes, allow_mismatch)
    choice = min(scores, key=lambda s: s.predicted_ms).candidate
    return PipelineSelection(scores, choice, time.perf_counter() - t0)


def compile_candidate(mod: tvm.IRModule, pipeline: str, target=None):
    """Compile `mod` with one candidate pipeline, as the profiler measured it."""
    from .measure import build

    return build(mod, PlatformSpec(target=dict(as_target(target).export()), pipeline=pipeline))


def CostGuidedPipeline(predictors: Mapping[str, object], target=None, allow_mismatch: bool = False):  # noqa: N802
    """passes.CostGuidedPipeline driven by predictors: scores the candidates' graph-level
    results with `predictors` (candidate -> predictor or checkpoint, loaded once here) and
    runs the winner's pipeline as the profiler compiled it:

        tvm.compile(mod, target, relax_pipeline=CostGuidedPipeline({"default": a, "nhwc": b}, target))

    The choice made on the last module is in `.selection`.
    """
    predictors = {c: _load(c, "candidate pipeline", p) for c, p in predictors.items()}

    def select(mod, target):
        return select_pipeline(mod, predictors, as_target(target), allow_mismatch=allow_mismatch)

    def lower(mod, choice, target):
        from . import measure

        mod = relax.transform.DecomposeOpsForInference()(mod)
        return measure.compile_pipeline(choice, as_target(target))(mod)

    return _passes_cgp.CostGuidedPipeline(select, lower, target)


# -------------------------------------------------------------- devices
@dataclass
class DeviceOption:
    predictor: object  # predictor or checkpoint path
    memory_mb: float | None = None  # memory the device offers the model; None: unlimited


@dataclass
class DeviceScore:
    name: str
    predicted_ms: float
    target: dict
    excluded: str = ""  # why the device cannot take the model; empty if it can


@dataclass
class DeviceSelection:
    scores: list[DeviceScore]
    choice: str | None
    footprint_mb: float
    budgets: dict = field(default_factory=dict)

    @property
    def target(self):
        return next(s.target for s in self.scores if s.name == self.choice) if self.choice else None

    def to_dict(self) -> dict:
        return {"choice": self.choice, "footprint_mb": round(self.footprint_mb, 3), "budgets": self.budgets,
                "devices": [asdict(s) for s in self.scores]}

    def explain(self) -> str:
        lines = []
        for s in sorted(self.scores, key=lambda s: s.predicted_ms):
            why = f"  excluded: {s.excluded}" if s.excluded else ""
            mark = "  <- chosen" if s.name == self.choice else ""
            lines.append(f"{s.name:<16} {s.predicted_ms:10.3f} ms predicted{mark}{why}")
        ok = sorted((s for s in self.scores if not s.excluded), key=lambda s: s.predicted_ms)
        if not ok:
            lines.append(f"no device meets the budgets {self.budgets} (model needs ~{self.footprint_mb:.1f} MB)")
        elif len(ok) == 1:
            lines.append(f"{ok[0].name}: the only device within the budgets")
        else:
            lines.append(f"{ok[0].name}: fastest of {len(ok)} eligible devices, "
                         f"{ok[1].predicted_ms / ok[0].predicted_ms:.2f}x faster than {ok[1].name}")
        return "\n".join(lines)


def footprint_mb(graph) -> float:
    """Weights plus the largest single-node working set: a lower bound on what a device must hold."""
    weights = sum(w.nbytes for n in graph.nodes for w in n.weights)
    working = max((sum(t.nbytes for t in n.inputs + n.outputs) for n in graph.nodes), default=0)
    return (weights + working) / 2**20


def choose_device(predicted_ms: Mapping[str, float], latency_budget_ms: float | None = None,
                  excluded: Mapping[str, str] | None = None, targets: Mapping[str, dict] | None = None,
                  footprint: float = 0.0, memory_budget_mb: float | None = None) -> DeviceSelection:
    """The decision alone, from predicted latencies (whatever predicted them): the fastest
    device not `excluded` (name -> reason) and within the latency budget."""
    scores = []
    for name, ms in predicted_ms.items():
        why = [(excluded or {}).get(name, "")]
        if latency_budget_ms is not None and ms > latency_budget_ms:
            why.append(f"predicted {ms:.3f} ms > latency budget {latency_budget_ms} ms")
        scores.append(DeviceScore(name, float(ms), (targets or {}).get(name, {}), "; ".join(w for w in why if w)))
    ok = [s for s in scores if not s.excluded]
    choice = min(ok, key=lambda s: s.predicted_ms).name if ok else None
    return DeviceSelection(scores, choice, footprint, {"latency_ms": latency_budget_ms, "memory_mb": memory_budget_mb})


def select_device(model, platforms: Mapping[str, object], latency_budget_ms: float | None = None,
                  memory_budget_mb: float | None = None, input_shapes=None) -> DeviceSelection:
    """Fastest platform for `model` by prediction, within the budgets.

    `platforms`: name -> predictor, checkpoint path or DeviceOption. Each platform's graph is
    taken at its checkpoint's level and pipeline, on the target the checkpoint was measured for.
    """
    if not platforms:
        raise SelectionError("no platforms to select from")
    mod = _module(model, input_shapes)
    predicted, excluded, targets, need = {}, {}, {}, 0.0
    graphs = {}  # platforms that compile alike (pipeline, level, target) share one graph
    for name, option in platforms.items():
        option = option if isinstance(option, DeviceOption) else DeviceOption(option)
        pred = _load(name, "platform", option.predictor)
        target = pred.platform.get("target") or {}
        targets[name] = json.loads(target) if isinstance(target, str) else dict(target)
        how = (predictor_pipeline(pred), predictor_level(pred), json.dumps(targets[name], sort_keys=True))
        if how not in graphs:
            graphs[how] = module_graph(mod, how[0], how[1], targets[name] or None)
        graph = graphs[how]
        mb = footprint_mb(graph)
        need = max(need, mb)
        predicted[name] = float(pred.predict([graph]).latency_ms[0])
        cap = min((m for m in (option.memory_mb, memory_budget_mb) if m is not None), default=None)
        if cap is not None and mb > cap:
            excluded[name] = f"needs ~{mb:.1f} MB > {cap} MB available"
    return choose_device(predicted, latency_budget_ms, excluded, targets, need, memory_budget_mb)


def SelectDevice(platforms: Mapping[str, object], latency_budget_ms=None, memory_budget_mb=None):  # noqa: N802
    """passes.SelectDevice choosing by `select_device`: the fastest platform by prediction
    within the budgets, the module placed there (VDevice + `nar_tvm.device`).

    Compile afterwards with `tvm.compile(mod, integration.target_of(mod))`; the choice is in
    `.selection`. Raises SelectionError when no device meets the budgets.
    """
    def choose(mod):
        selection = select_device(mod, platforms, latency_budget_ms, memory_budget_mb)
        if selection.choice is None:
            raise SelectionError("no device meets the budgets:\n" + selection.explain())
        return selection

    return _passes_sd.SelectDevice(choose, lambda target: as_target(target or None))


# ------------------------------------------------------------------ CLI
def _named_paths(items: list[str] | None, what: str) -> dict[str, str]:
    """NAME=CHECKPOINT pairs; a NAME alone is a platform with its checkpoint missing."""
    out = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise SelectionError(f"missing checkpoint for {what} {name!r}: write {name}=CHECKPOINT")
        out[name] = path
    return out


def candidate_checkpoints(items: list[str] | None) -> dict:
    """--checkpoint values: CANDIDATE=CHECKPOINT pairs, and bare checkpoints trained on several
    pipelines (`pipelines` in their platform), which stand for every one of them."""
    pairs = [i for i in items or [] if "=" in i]
    out: dict = dict(_named_paths(pairs, "candidate pipeline"))
    for item in items or []:
        if "=" not in item:
            pred = _load(item, "candidate pipeline", item)
            for cand in predictor_pipelines(pred):
                out.setdefault(cand, pred)
    return out


def cmd_compile(args) -> int:
    from .loaders import load_model, parse_input_shapes

    loaded = load_model(args.model, input_shapes=parse_input_shapes(args.input_shape))
    target = json.loads(args.target) if args.target else None
    report = {"model": loaded.name}
    if args.select:
        from .api import PIPELINES_CHECKPOINT

        given = args.checkpoint or ([str(PIPELINES_CHECKPOINT)] if PIPELINES_CHECKPOINT.is_file() else [])
        checkpoints = candidate_checkpoints(given)
        if not checkpoints:
            raise SelectionError("--select needs --checkpoint CANDIDATE=CHECKPOINT for each candidate pipeline, "
                                 "or one --checkpoint trained on several pipelines (none ships here)")
        sel = select_pipeline(loaded.mod, checkpoints, target, allow_mismatch=args.allow_mismatch)
        pipeline = sel.choice
        report.update(sel.to_dict())
        print(sel.report())
    else:
        pipeline = args.pipeline
        report["choice"] = pipeline
    t0 = time.perf_counter()
    ex = compile_candidate(loaded.mod, pipeline, target)
    report["compile_s"] = round(time.perf_counter() - t0, 3)
    out = Path(args.out)
    ex.export_library(str(out))
    report_path = Path(args.report) if args.report else out.with_name(out.name + ".report.json")
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"compiled {loaded.name} with pipeline {pipeline!r} in {report['compile_s']:.1f} s -> {out} "
          f"(report: {report_path})")
    return 0


def cmd_select_device(args) -> int:
    from .loaders import parse_input_shapes

    platforms = {}
    for name, spec in _named_paths(args.platforms, "platform").items():
        path, _, mem = spec.partition("@")
        platforms[name] = DeviceOption(path, float(mem) if mem else None)
    sel = select_device(args.model, platforms, args.max_latency_ms, args.memory_budget_mb,
                        input_shapes=parse_input_shapes(args.input_shape))
    if args.json:
        json.dump(sel.to_dict(), sys.stdout, indent=2)
        print()
    else:
        print(sel.explain())
    return 0 if sel.choice else 3
