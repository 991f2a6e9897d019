"""`nar-tvm` command line."""
from __future__ import annotations

import argparse
import json
import os
import sys


class CLIError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that can add its arguments only when it is used.

    A sub-command whose defaults or choices live in modules that are slow to import (torch,
    scipy, numpy) defers them, so `--help` and every other command never import those modules.
    """

    _deferred = None

    def defer(self, add_arguments) -> None:
        self._deferred = add_arguments

    def _complete(self) -> None:
        if self._deferred is not None:
            add_arguments, self._deferred = self._deferred, None
            add_arguments(self)

    def parse_known_args(self, args=None, namespace=None):
        self._complete()
        return super().parse_known_args(args, namespace)

    def format_usage(self):
        self._complete()
        return super().format_usage()

    def format_help(self):
        self._complete()
        return super().format_help()


def _command(module: str, name: str):
    """`module.name` as a command function, imported only when that command runs."""

    def run(args):
        import importlib

        return getattr(importlib.import_module(module), name)(args)

    run.__name__ = name
    return run


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL", help="ONNX file(s), folder(s) of them, or zoo:FAMILY:SEED")
    p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                   help="static shape for a dynamic input (repeatable)")
    p.add_argument("--level", choices=["op", "fused"], default=None,
                   help="graph level: op (one node per Relax op) or fused (one node per fused kernel)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _model_arguments(specs: list[str]) -> list[str]:
    """The models named on the command line, checked before any slow work (loading the
    checkpoint, extracting): a malformed zoo:FAMILY:SEED or a missing file fails at once, and
    a folder stands for the .onnx files in it (a NAS search's candidates), in name order."""
    from pathlib import Path

    from .loaders import ModelLoadError

    models = []
    for spec in specs:
        if spec.startswith("zoo:"):
            from . import zoo

            zoo.parse_spec(spec)
            models.append(spec)
            continue
        path = Path(spec)
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.suffix.lower() == ".onnx" and p.is_file())
            if not found:
                raise ModelLoadError(f"{path}: a folder with no .onnx files in it")
            models += found
        elif not path.exists():
            raise ModelLoadError(f"{path}: no such file")
        else:
            models.append(spec)
    return models


# ------------------------------------------------------------------- inspect
def cmd_inspect(args) -> int:
    from .api import extract
    from .loaders import parse_input_shapes

    models = _model_arguments(args.models)
    shapes = parse_input_shapes(args.input_shape)
    out = []
    for model in models:
        graph = extract(model, level=args.level or "op", input_shapes=shapes)
        info = graph.summary()
        if args.nodes:
            info["node_list"] = [
                {"id": i, "op": n.op, "ops": n.ops, "out": [o.shape for o in n.outputs], "flops": n.flops}
                for i, n in enumerate(graph.nodes)
            ]
        out.append(info)
    if args.json:
        _print_json(out if len(out) > 1 else out[0])
        return 0
    for info in out:
        print(f"{info['name']}  level={info['level']}  nodes={info['nodes']}  edges={info['edges']}  "
              f"depth={info['depth']}  hash={info['hash']}")
        print(f"  FLOPs {info['flops'] / 1e6:,.2f} M   params {info['params'] / 1e6:,.3f} M   "
              f"memory access {info['memory_access_bytes'] / 2**20:,.2f} MiB   batch {info['batch']}")
        for op, n in info["op_counts"].items():
            print(f"  {n:5d}  {op}")
        for node in info.get("node_list", []):
            print(f"  [{node['id']:4d}] {node['op']:<32} out={node['out']}  flops={node['flops']:,}")
    return 0


def _warn_about(predictor, consequence: str) -> None:
    from .api import predictor_warnings

    cal = predictor.calibration
    if cal:
        print(f"note: calibrated for this machine ({cal['method']} from {len(cal['shots'])} shots)", file=sys.stderr)
    lines = predictor_warnings(predictor)
    for line in lines:
        print(f"warning: {line}; {consequence}", file=sys.stderr)
    if lines and not predictor.calibration:
        print("note: `nar-tvm calibrate` adapts the predictor to this machine from a few measured models",
              file=sys.stderr)


# ------------------------------------------------------------------- predict
# Graphs predicted in one forward pass while a batch streams: small enough that results show
# up every few tens of seconds, large enough that the forward pass costs nothing per model.
PREDICT_CHUNK = 32


def _predicted_before(path) -> set[str]:
    """Models already in a --out file of an earlier, interrupted run (a torn last line is not)."""
    done = set()
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    done.add(json.loads(line)["model"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
    return done


def _open_lines_for_append(path):
    """`path` opened to append lines; a last line cut short by a crash is ended first, so that
    it stays one unreadable line instead of spoiling the next."""
    torn = False
    if os.path.exists(path) and os.path.getsize(path) > 0:
        with open(path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            torn = fh.read(1) != b"\n"
    out = open(path, "a", encoding="utf-8")  # noqa: SIM115 - the caller closes it
    if torn:
        out.write("\n")
    return out


def _prediction_line(p) -> str:
    note = f"  ({p.unknown_ops} nodes of op types unseen in training: {', '.join(p.unknown_op_names)})" \
        if p.unknown_ops else ""
    interval = "" if p.low_ms is None else f" (90% interval {p.low_ms:.3f} .. {p.high_ms:.3f} ms)"
    flag = "  UNLIKE THE TRAINING DATA" if p.novel else ""
    if p.novel and p.low_ms is None:
        flag += " (no interval: the checkpoint measured none for such graphs)"
    if p.size_factor is not None and p.size_factor > 1.0:
        note += f"  ({p.size_factor:.1f}x the size of the largest training graph: extrapolated)"
    elif p.size_factor is not None and p.size_factor < 1.0:
        note += f"  ({p.size_factor:.2f}x the size of the smallest training graph: extrapolated)"
    return f"{p.name}: {p.latency_ms:.3f} ms predicted{interval}  [{p.nodes} {p.level}-level nodes]{flag}{note}"


def cmd_predict(args) -> int:
    from tqdm import tqdm

    from .api import iter_extract, load_predictor, predict
    from .loaders import parse_input_shapes

    models = _model_arguments(args.models)
    predictor = load_predictor(args.checkpoint)
    level = predictor.provenance.get("level", "op")
    if args.level and args.level != level:
        raise CLIError(f"the checkpoint was trained on {level!r} graphs; --level {args.level} does not apply")
    _warn_about(predictor, "predictions may not transfer")
    shapes = parse_input_shapes(args.input_shape)
    done = _predicted_before(args.out)
    todo = [m for m in models if m not in done]
    if done:
        print(f"{len(models) - len(todo)} of the {len(models)} models are in {args.out} already; "
              f"predicting the other {len(todo)}", file=sys.stderr)
    out = _open_lines_for_append(args.out) if args.out else None
    collected, pending, failed = [], [], 0
    bar = tqdm(total=len(todo), unit="model", file=sys.stderr, disable=None if len(todo) > 1 else True)

    def flush():
        if not pending:
            return
        for (model, _), p in zip(pending, predict([g for _, g in pending], predictor=predictor)):
            if out is not None:
                out.write(json.dumps({"model": model, **p.__dict__}) + "\n")
                out.flush()
            if args.json:
                collected.append(p.__dict__)
            else:
                bar.write(_prediction_line(p), file=sys.stdout)
        pending.clear()

    try:
        for model, graph, error in iter_extract(todo, level, shapes, args.jobs, keep_going=args.keep_going):
            bar.update()
            if error is not None:
                failed += 1
                bar.write(f"{model}: error: {error}", file=sys.stderr)
                continue
            pending.append((model, graph))
            if len(pending) == PREDICT_CHUNK:
                flush()
        flush()
    finally:
        bar.close()
        if out is not None:
            out.close()
    if args.json:
        _print_json(collected)
    if failed:
        print(f"nar-tvm predict: {failed} of {len(todo)} models failed (listed above)", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------- compare
def cmd_compare(args) -> int:
    from .api import load_predictor
    from .compare import compare, plot, summary
    from .loaders import parse_input_shapes
    from .measure import Protocol

    models = _model_arguments(args.models)
    predictor = load_predictor(args.checkpoint)
    _warn_about(predictor, "expect larger errors")
    affinity = [int(c) for c in args.cpu_affinity.split(",")] if args.cpu_affinity else None
    results = compare(models, predictor, parse_input_shapes(args.input_shape),
                      Protocol(repeat=args.repeat), affinity)
    stats = summary(results) if len(results) > 1 else None
    if args.plot:
        plot(results, args.plot)
    if args.json:
        _print_json({"models": [dict(r.__dict__, error=r.error) for r in results], "summary": stats})
        return 0
    for r in results:
        print(f"{r.name}: predicted {r.predicted_ms:.3f} ms, measured {r.measured_ms:.3f} ms "
              f"(CV {r.cv:.3f}), error {r.error:+.1%}, compiled in {r.compile_s:.1f} s")
        if r.shared_core:
            print(f"    warning: {r.shared_core}")
        for kernel, ms, predicted_ms in r.top_kernels:
            guess = "" if predicted_ms is None else f"  (predicted {predicted_ms:.3f} ms)"
            print(f"    {ms:9.3f} ms  {kernel}{guess}")
    if stats:
        print(f"{stats['n']} models: MAPE {stats['mape']:.4f}, Acc(10%) {stats['acc@10%']:.3f}, "
              f"Kendall tau {stats['kendall_tau']:.3f}")
    return 0


# --------------------------------------------------------------- train/eval
def cmd_train(args) -> int:
    from dataclasses import replace

    from nar_tvm.cost_model import recipes, save_checkpoint
    from nar_tvm.cost_model.tokenizer import TokenizerConfig

    from .training import evaluate_predictor, train_on_dataset

    overrides = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "loss", "patience")
                 if getattr(args, k) is not None}
    cfg = replace(recipes.TRAINING, seed=args.seed, **overrides)
    model_cfg = recipes.model_config(args.model, width=args.width, layers=args.layers, readout=args.readout)
    extra = {k: v for k, v in (("attention", args.attention), ("n_heads", args.heads),
                               ("cost_prior", {} if args.cost_prior else None)) if v is not None}
    if extra:
        if args.model == "nnlp":
            raise CLIError("--attention, --heads and --cost-prior apply to nar-former-v2 and transformer, not nnlp")
        model_cfg = replace(model_cfg, **extra)
    if args.transcendentals and not args.cost_prior:
        raise CLIError("--transcendentals prices transcendental evaluations in the cost prior: add --cost-prior")
    predictor, history, parts = train_on_dataset(args.dataset, level=args.level, split=args.split,
                                                 seed=args.seed, platform_id=args.platform,
                                                 model_cfg=model_cfg, train_cfg=cfg, node_weight=args.kernel_times,
                                                 labels=args.labels,
                                                 tokenizer_cfg=TokenizerConfig.with_options(
                                                     args.transcendentals, args.input_shapes))
    path = save_checkpoint(predictor, args.out)
    val = evaluate_predictor(predictor, parts["val"])["overall"]
    print(f"saved {path}: best epoch {history.best_epoch}, validation MAPE {val['mape']:.4f}, "
          f"Acc(10%) {val['acc@10%']:.3f} on {len(parts['val'])} models ({len(parts['train'])} trained on)")
    return 0


def cmd_evaluate(args) -> int:
    from .training import evaluate_checkpoint

    res = evaluate_checkpoint(args.checkpoint, args.dataset, split=args.split, part=args.part,
                              seed=args.seed, platform_id=args.platform, labels=args.labels)
    if args.json:
        _print_json({k: v for k, v in res.items() if k in ("overall", "families")})
        return 0
    header = f"{'family':<14} {'n':>5} {'MAPE':>8} {'RMSE':>9} {'Acc5%':>7} {'Acc10%':>7} {'tau':>6}"
    print(header)
    for name, m in [*res["families"].items(), ("ALL", res["overall"])]:
        print(f"{name:<14} {m['n']:5d} {m['mape']:8.4f} {m['rmse']:9.3f} {m['acc@5%']:7.3f} "
              f"{m['acc@10%']:7.3f} {m['kendall_tau']:6.3f}")
    return 0


SPLIT_HELP = ("in-domain, ood:<family>, or size (train on the smallest 80%% of graphs by FLOPs, validate on "
              "the next 10%%, test on the largest)")


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    from .dataset import LABELS, TRAINING_LABELS

    p.add_argument("dataset")
    p.add_argument("--out", required=True, help="checkpoint file to write")
    p.add_argument("--model", choices=["nar-former-v2", "transformer", "nnlp"], default="nar-former-v2",
                   help="network: NAR-Former V2, the same without graph-aided attention, or NNLP's GraphSAGE")
    p.add_argument("--level", choices=["op", "fused"], default="fused",
                   help="graph level (default: fused, which validated at least as well as op at a third of the cost)")
    p.add_argument("--split", default="in-domain", help=SPLIT_HELP)
    p.add_argument("--platform", help="platform id, when the dataset holds several")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--loss", choices=["rse", "rse+sr", "log_mse"])
    p.add_argument("--patience", type=int)
    p.add_argument("--width", type=int, help="d_model (hidden size for nnlp)")
    p.add_argument("--layers", type=int)
    p.add_argument("--readout", choices=["sum", "mean", "kernels"],
                   help="how node states become the latency (default: the recipe's); kernels: the sum of "
                        "per-node kernel times, best trained with --kernel-times (nnlp: sum or kernels)")
    p.add_argument("--attention", choices=["softmax", "sigmoid-adjacency"],
                   help="NAR-Former V2's graph attention: softmax over neighbours (default) or the paper's "
                        "sigmoid score times the normalised adjacency (use with --heads 1 for its single head)")
    p.add_argument("--heads", type=int, help="attention heads (NAR-Former V2)")
    p.add_argument("--cost-prior", action="store_true",
                   help="with the kernels readout: scale each kernel's time with its FLOPs + bytes, so graphs "
                        "larger than any in training extrapolate instead of saturating (NAR-Former V2)")
    p.add_argument("--transcendentals", action="store_true",
                   help="with --cost-prior: also charge each sigmoid, exp, erf or tanh evaluation in a kernel "
                        "(SiLU and GELU activations cost more than their FLOPs say on a CPU; "
                        "benchmarks/families16.md)")
    p.add_argument("--input-shapes", action="store_true",
                   help="tokens also carry each node's first input shape (a convolution's input channels and "
                        "plane size, which untuned code is sensitive to; benchmarks/families16.md)")
    p.add_argument("--kernel-times", type=float, default=0.0, metavar="WEIGHT",
                   help="also learn each fused kernel's measured time, with this loss weight (fused level)")
    p.add_argument("--labels", choices=LABELS, default=TRAINING_LABELS,
                   help="a model's latency: its first measurement, or the fastest of it and its re-measurements "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)


def _add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    from .dataset import LABELS

    p.add_argument("checkpoint")
    p.add_argument("dataset")
    p.add_argument("--split", default="in-domain", help=SPLIT_HELP)
    p.add_argument("--part", default="test", choices=["train", "val", "test"])
    p.add_argument("--seed", type=int, default=None, help="split seed (default: the checkpoint's)")
    p.add_argument("--platform")
    p.add_argument("--labels", choices=LABELS, help="label rule (default: the checkpoint's)")
    p.add_argument("--json", action="store_true")


# ------------------------------------------------------------------- profile
def _platform_from_args(args):
    from .platform import PlatformSpec

    target = json.loads(args.target) if args.target else {}
    return PlatformSpec(target=target, pipeline=args.pipeline, threads=args.threads, device=args.device)


def _add_platform_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", help='TVM target as JSON, e.g. \'{"kind":"llvm","mcpu":"znver4"}\' '
                                    "(default: this CPU)")
    from .platform import PIPELINES

    p.add_argument("--pipeline", default="default", choices=PIPELINES, help="compile pipeline")
    p.add_argument("--threads", type=int, default=1, help="TVM_NUM_THREADS for measurement (default 1)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])


def cmd_profile(args) -> int:
    from .dataset import DatasetStore, stats
    from .measure import Protocol
    from .profiler import Profiler, WorkerConfig, zoo_jobs
    from . import zoo

    families = args.families.split(",") if args.families else list(zoo.FAMILIES)
    unknown = set(families) - set(zoo.FAMILIES)
    if unknown:
        raise CLIError(f"unknown families {sorted(unknown)}; choose from {', '.join(zoo.FAMILIES)}")
    if args.remeasure and (args.per_family is not None or args.start_seed):
        # The stored models are what gets re-measured; silently ignoring a seed range would
        # leave a user believing they chose which ones.
        raise CLIError("--remeasure measures again what the store holds (of --families, if given): "
                       "--per-family and --start-seed do not apply to it")
    affinity = [int(c) for c in args.cpu_affinity.split(",")] if args.cpu_affinity else None
    cfg = WorkerConfig(
        spec=_platform_from_args(args),
        protocol=Protocol(warmup=args.warmup, repeat=args.repeat, min_repeat_ms=args.min_repeat_ms),
        cpu_affinity=affinity, rpc_tracker=args.rpc_tracker, rpc_key=args.rpc_key,
        runner=args.runner, allow_fallback=args.allow_fallback,
    )
    store = DatasetStore(args.out, shard_size=args.shard_size)
    profiler = Profiler(store, cfg, measure_timeout=args.timeout)
    print(f"platform {profiler.platform_id}: {json.dumps(profiler.fingerprint)}", file=sys.stderr)
    try:
        if args.remeasure:
            counts = profiler.profile(profiler.remeasure_jobs(
                args.remeasure, seed=args.seed, families=families if args.families else None))
        else:
            per_family = 10 if args.per_family is None else args.per_family
            counts = profiler.profile(zoo_jobs(families, per_family, args.start_seed), total=len(families) * per_family)
    finally:
        profiler.close()
    if args.seal:
        store.seal_active()
    print(f"this run: {counts}")
    _print_stats(stats(args.out))
    return 0


def _print_stats(s: dict) -> None:
    from .native import SHARED_CORE_BELOW

    print(f"records: {s['status']}   platforms: {s['platforms']}")
    for fam, f in s["families"].items():
        print(f"  {fam:<14} {f['count']:5d}   {f['min_ms']:9.3f} .. {f['median_ms']:9.3f} .. {f['max_ms']:9.3f} ms")
    if s["median_cv"] is not None:
        print(f"median CV of repeats: {s['median_cv']:.4f}   median compile: {s['median_compile_s']:.2f} s")
    if s.get("shared_core"):
        print(f"timed on a core other work shared (< {SHARED_CORE_BELOW:.0%} of it), so inflated: "
              f"{s['shared_core']} measurement{'s' if s['shared_core'] > 1 else ''}")
    if s["noise_floor"]:
        nf = s["noise_floor"]
        print(f"noise floor: median relative difference {nf['median_rel_diff']:.4f} over {nf['count']} "
              f"re-measured models (p90 {nf['p90_rel_diff']:.4f}); as a prediction of the first run: "
              f"MAPE {nf['mape']:.4f}, Acc(10%) {nf['acc@10%']:.1%}")
    _print_probes(s.get("probes", []))


def _print_probes(runs: list[dict]) -> None:
    if not runs:
        return
    print("machine speed probes (one per profiling run):")
    earlier = False
    for run in runs:
        if run["id"] is None:
            print(f"  {'(none)':<10} {run['records']:6d} records of platform {run['platform_id']} "
                  "measured before probes were recorded")
            continue
        ms = ", ".join(f"{k} {v:.2f}" for k, v in run["probe"]["ms"].items())
        compared = run["compared_with"] != run["id"]
        if compared:
            verdict = f"x{run['speed_vs_first']:.3f} of {run['compared_with']}"
            verdict += "" if run["same_machine_as_first"] else "  <- another machine"
        elif earlier:  # probes of an older panel cannot be compared with it
            verdict = f"first probe of panel v{run['probe']['version']}; not comparable with the ones above"
        else:
            verdict = "the first"
        if not run.get("steady", True):
            verdict += f"  (host unsteady during this probe{': the comparison is unreliable' if compared else ''})"
        earlier = True
        print(f"  {run['id']:<10} {run['records']:6d} records  {run['probe'].get('time', '')}  "
              f"{verdict}\n      {ms} ms")


def cmd_dataset(args) -> int:
    from .dataset import DatasetStore, stats

    if not os.path.exists(args.dataset):
        raise CLIError(f"{args.dataset}: no such dataset")
    if args.action == "stats":
        s = stats(args.dataset)
        _print_json(s) if args.json else _print_stats(s)
    elif args.action == "seal":
        sealed = DatasetStore(args.dataset).seal_active()
        print(f"sealed {sealed}" if sealed else "nothing to seal")
    return 0


# ------------------------------------------------------- compile, select-device
def add_compile_parser(subparsers) -> argparse.ArgumentParser:
    from .platform import PIPELINES

    p = subparsers.add_parser("compile", help="compile a model; --select picks the pipeline by predicted latency")
    p.add_argument("model", metavar="MODEL", help="ONNX file")
    p.add_argument("-o", "--out", required=True, help="compiled library to write (.so)")
    p.add_argument("--select", action="store_true",
                   help="score every candidate's graph-level passes with its checkpoint, compile the fastest")
    p.add_argument("--checkpoint", action="append", metavar="CANDIDATE=CHECKPOINT",
                   help=f"checkpoint per candidate pipeline (repeatable; candidates: {', '.join(PIPELINES)}); "
                        "a bare CHECKPOINT trained on several pipelines' profiles covers each of them "
                        "(default: the shipped one, when this installation has it)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="accept a checkpoint trained under another pipeline than its candidate")
    p.add_argument("--pipeline", default="default", choices=PIPELINES, help="pipeline without --select")
    p.add_argument("--target", help="TVM target as JSON (default: this CPU)")
    p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...")
    p.add_argument("--report", help="report file (default: OUT.report.json)")
    p.set_defaults(func=_command("nar_tvm.selection", "cmd_compile"))
    return p


def add_select_device_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("select-device", help="predict on each platform and pick the fastest device")
    p.add_argument("model", metavar="MODEL", help="ONNX file")
    p.add_argument("--platforms", nargs="+", required=True, metavar="NAME=CHECKPOINT[@MEMORY_MB]",
                   help="a checkpoint per platform, optionally with the memory the device offers")
    p.add_argument("--max-latency-ms", type=float, help="exclude devices predicted slower than this")
    p.add_argument("--memory-budget-mb", type=float, help="exclude devices when the model needs more than this")
    p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_command("nar_tvm.selection", "cmd_select_device"))
    return p


# ---------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nar-tvm", description=__doc__.strip() + " NAR-Former V2 latency "
                                     "prediction for models compiled with Apache TVM.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("inspect", help="print a model's operator graph")
    _add_model_args(p)
    p.add_argument("--nodes", action="store_true", help="list every node")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("predict", help="predict latency with a trained checkpoint")
    _add_model_args(p)
    p.add_argument("--checkpoint", help="trained checkpoint (default: the one shipped with nar-tvm)")
    p.add_argument("--jobs", type=int, default=1,
                   help="worker processes that load and extract the models (default 1); each costs a few "
                        "seconds of start-up, so use it for tens of models and more")
    p.add_argument("--keep-going", action="store_true",
                   help="a model that cannot be loaded or extracted is reported and skipped (exit status 1 "
                        "at the end) instead of stopping the batch")
    p.add_argument("--out", metavar="JSONL",
                   help="also append each prediction to this file as it is made, one JSON object per line "
                        "with the model as given; models already in it are skipped, so an interrupted "
                        "batch resumes where it stopped")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("compare", help="compile and measure models here, and compare with predictions")
    p.add_argument("models", nargs="+", metavar="MODEL", help="ONNX file(s), folder(s) of them, or zoo:FAMILY:SEED")
    p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...")
    p.add_argument("--checkpoint", help="trained checkpoint (default: the one shipped with nar-tvm)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--cpu-affinity", help="cores to pin the measuring process to")
    p.add_argument("--plot", metavar="PNG", help="save a predicted-vs-measured scatter plot")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("train", help="train a latency predictor on a measured dataset",
                       description="Train with the latency report's recipe (nar_tvm.cost_model.recipes); "
                                   "options given here override it.")
    # --labels takes its choices from the dataset module (numpy).
    p.defer(_add_train_arguments)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics of a checkpoint on a dataset split")
    p.defer(_add_evaluate_arguments)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("profile", help="compile and measure zoo models into a dataset")
    p.add_argument("--families", help="comma-separated zoo families (default: all)")
    p.add_argument("--per-family", type=int, help="seeds per family (default 10)")
    p.add_argument("--start-seed", type=int, default=0)
    p.add_argument("--out", required=True, help="dataset folder (created; resumed if it exists)")
    _add_platform_args(p)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--min-repeat-ms", type=int, default=40)
    p.add_argument("--timeout", type=float, default=600, help="seconds allowed to compile and measure one model")
    p.add_argument("--cpu-affinity", help="cores to pin the measuring process to, e.g. 1")
    p.add_argument("--rpc-tracker", metavar="HOST:PORT", help="measure on a device from this RPC tracker")
    p.add_argument("--rpc-key", help="device key registered with the tracker")
    p.add_argument("--runner", choices=["inprocess", "native"], default="inprocess",
                   help="measurement backend: the VM's time evaluator in the worker process (default), "
                        "or the nar-tvm-runner binary on the exported library (build: native/README.md)")
    p.add_argument("--allow-fallback", action="store_true",
                   help="with --runner native: use the in-process evaluator if the runner is not built")
    p.add_argument("--remeasure", type=float, metavar="FRACTION",
                   help="re-measure this share of measured models (of --families, if given) instead (noise floor)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-size", type=int, default=200)
    p.add_argument("--seal", action="store_true", help="gzip the open shard at the end")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("dataset", help="dataset utilities")
    p.add_argument("action", choices=["stats", "seal"])
    p.add_argument("dataset")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_dataset)

    add_compile_parser(sub)
    add_select_device_parser(sub)

    from .nasbench import COMMAND_HELP, add_nasbench_arguments

    p = sub.add_parser("nasbench", help=COMMAND_HELP)
    # Its defaults and choices live beside the NAS-Bench-201 learning code (torch, scipy).
    p.defer(add_nasbench_arguments)

    from .calibrate import add_parsers as add_calibration_parsers
    from .tune import add_parser as add_tune_parser

    add_calibration_parsers(sub)
    add_tune_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # The package's error classes (ModelLoadError, CheckpointError, DatasetError, ExtractionError, ...)
    # all derive from ValueError or FileNotFoundError: naming them here would import torch and tvm
    # for every command.
    try:
        return args.func(args)
    except (CLIError, FileNotFoundError, ValueError) as exc:
        print(f"nar-tvm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
