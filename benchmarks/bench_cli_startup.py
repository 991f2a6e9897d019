"""Start-up and per-model cost of the `nar-tvm` command line, as a user meets them.

Three figures, each timed as separate processes from the outside:

  (a) `nar-tvm --help`: median wall time of --help-runs runs (target < 1 s);
  (b) `nar-tvm predict one.onnx` against `python -c "import torch, tvm"`, the floor any
      prediction pays (target: within 1.5 s of it);
  (c) predicting --models ONNX files in one `nar-tvm predict` call against compiling and
      measuring them: the marginal cost per model of each (target: predicting >= 30x cheaper).
      Prediction's marginal cost is (t(N files) - t(1 file)) / (N - 1). Compiling and measuring
      every model would take several times the rest of the run, so --measure of them (one per
      family, seeded) go through the profiler's worker as `nar-tvm compare` does (same protocol,
      same process), and the per-model figure is their mean compile + measure time, extrapolated
      to the rest.

The models are seeded zoo variants across the families, exported to ONNX as the profiler
exports them, in a temporary folder. Wall time depends on what else runs on the machine, so
every run also records the child processes' CPU time (user + system), and the load average.

    taskset -c 0 python benchmarks/bench_cli_startup.py --note "core 1 ran a profiling job"
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

TARGET_HELP_S = 1.0
TARGET_PREDICT_OVER_IMPORT_S = 1.5
TARGET_SPEEDUP = 30.0


def nar_tvm_command() -> list[str]:
    """The installed console script, as a user runs it; the module when it is not installed."""
    script = Path(sys.executable).with_name("nar-tvm")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "nar_tvm.cli"]


def timed(argv: list[str], expect_lines: int | None = None) -> dict:
    """Wall and CPU seconds of one child process; it must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    lines = proc.stdout.strip().splitlines()
    if expect_lines is not None and len(lines) != expect_lines:
        raise SystemExit(f"{' '.join(argv[:4])} ...: expected {expect_lines} lines of output, got {len(lines)}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu}


def medians(runs: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in runs) for key in ("wall_s", "cpu_s")}


def export_models(folder: Path, count: int) -> list[tuple[str, int, Path]]:
    """`count` zoo variants, round-robin over the families with increasing seeds."""
    from nar_tvm import zoo
    from nar_tvm.profiler import zoo_job

    models = []
    for i in range(count):
        family, seed = zoo.FAMILIES[i % len(zoo.FAMILIES)], i // len(zoo.FAMILIES)
        path = folder / f"{family}-{seed}.onnx"
        if not path.is_file():  # a --models-dir from an earlier run already holds it
            path.write_bytes(zoo_job(family, seed).onnx_bytes)
        models.append((family, seed, path))
    return models


def measure_models(paths: list[Path], checkpoint: str | None) -> list[dict]:
    """Compile and measure each model in the profiler's worker, with the platform and protocol
    `nar-tvm compare` uses for this checkpoint; the time of each model's two worker calls."""
    from nar_tvm.api import load_predictor
    from nar_tvm.measure import Protocol
    from nar_tvm.platform import PlatformSpec
    from nar_tvm.profiler import Worker, WorkerConfig

    predictor = load_predictor(checkpoint)
    spec = PlatformSpec(pipeline=predictor.platform.get("pipeline", "default"),
                        threads=int(predictor.platform.get("threads", 1)))
    worker = Worker(WorkerConfig(spec, Protocol()))
    worker.start()
    out = []
    try:
        for path in paths:
            cpu_start = _cpu_of(worker.proc.pid)
            start = time.perf_counter()
            status, result = worker.call(("extract", path.read_bytes(), None, path.stem), 600)
            loaded = time.perf_counter()
            if status != "ok":
                raise SystemExit(f"{path.name}: extract failed: {result}")
            cpu_loaded = _cpu_of(worker.proc.pid)
            status, result = worker.call(("measure",), 1200)
            done = time.perf_counter()
            cpu_done = _cpu_of(worker.proc.pid)
            if status != "ok":
                raise SystemExit(f"{path.name}: compile/measure failed: {result}")
            out.append({"model": path.stem, "load_extract_s": loaded - start, "compile_measure_s": done - loaded,
                        "load_extract_cpu_s": cpu_loaded - cpu_start, "compile_measure_cpu_s": cpu_done - cpu_loaded,
                        "compile_s": result[1]["compile_s"], "median_ms": result[1]["median_ms"]})
            print(f"  measured {path.stem}: compile + measure {done - loaded:.1f} s "
                  f"(compile {result[1]['compile_s']:.1f} s, {result[1]['median_ms']:.2f} ms)", flush=True)
    finally:
        worker.stop()
    return out


def _cpu_of(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def one_per_family(models, count: int, seed: int = 0) -> list[Path]:
    """`count` models from different families (seeded), so the measured subset mixes them as
    the full set does."""
    rng = random.Random(seed)
    by_family: dict[str, list[Path]] = {}
    for family, _, path in models:
        by_family.setdefault(family, []).append(path)
    families = rng.sample(sorted(by_family), min(count, len(by_family)))
    return [rng.choice(by_family[f]) for f in families]


def machine() -> dict:
    from nar_tvm.platform import cpu_model_name

    return {"cpu": cpu_model_name(), "cores_allowed": sorted(os.sched_getaffinity(0)),
            "cores": os.cpu_count(), "python": sys.version.split()[0]}


def write_report(res: dict, path: Path) -> None:
    a, b, c = res["help"], res["predict_one"], res["many"]
    ok = lambda passed: "met" if passed else "**missed**"  # noqa: E731
    lines = [
        "# `nar-tvm` start-up and per-model cost",
        "",
        f"Measured by `benchmarks/bench_cli_startup.py` on {res['machine']['cpu']}, "
        f"pinned to core(s) {res['machine']['cores_allowed']} of {res['machine']['cores']}; "
        f"Python {res['machine']['python']}; {res['date']}. "
        f"Load average {res['load_before'][0]:.2f} before, {res['load_after'][0]:.2f} after.",
    ]
    if res["note"]:
        lines += ["", f"Conditions: {res['note']}"]
    lines += [
        "",
        "Wall time is what a user waits; CPU time (user + system of the child process) is the",
        "same work with the waiting for a shared core taken out.",
        "",
        "| figure | wall | CPU | target | |",
        "| --- | ---: | ---: | --- | --- |",
        f"| (a) `nar-tvm --help`, median of {len(a['runs'])} | {a['wall_s']:.2f} s | {a['cpu_s']:.2f} s "
        f"| < {TARGET_HELP_S:g} s | {ok(a['wall_s'] < TARGET_HELP_S)} |",
        f"| (b) `python -c \"import torch, tvm\"`, median of {len(b['import_runs'])} "
        f"| {b['import']['wall_s']:.2f} s | {b['import']['cpu_s']:.2f} s | | |",
        f"| (b) `nar-tvm predict one.onnx`, median of {len(b['predict_runs'])} "
        f"| {b['predict']['wall_s']:.2f} s | {b['predict']['cpu_s']:.2f} s | | |",
        f"| (b) predict minus import | {b['over_import']['wall_s']:+.2f} s | {b['over_import']['cpu_s']:+.2f} s "
        f"| <= {TARGET_PREDICT_OVER_IMPORT_S:g} s | {ok(b['over_import']['wall_s'] <= TARGET_PREDICT_OVER_IMPORT_S)} |",
        f"| (c) `nar-tvm predict` on {c['models']} files, one call | {c['predict_all']['wall_s']:.1f} s "
        f"| {c['predict_all']['cpu_s']:.1f} s | | |",
        f"| (c) predict, marginal per model | {c['predict_per_model_s']:.3f} s | {c['predict_per_model_cpu_s']:.3f} s "
        f"| | |",
        f"| (c) compile + measure, per model (mean of {len(c['measured'])}) | {c['measure_per_model_s']:.2f} s "
        f"| {c['measure_per_model_cpu_s']:.2f} s | | |",
        f"| (c) compile + measure / predict, per model | {c['speedup']:.1f}x | {c['speedup_cpu']:.1f}x "
        f"| >= {TARGET_SPEEDUP:g}x | {ok(c['speedup'] >= TARGET_SPEEDUP)} |",
        "",
        f"(b) predicts with the shipped checkpoint on `{b['model']}`. (c) exports {c['models']} zoo variants",
        f"(round-robin over the families, seeds 0..{c['max_seed']}) and predicts them in one process; the",
        f"marginal cost is (t({c['models']} files) - t(1 file)) / {c['models'] - 1}, with t(1 file) from (b).",
        f"Compiling and measuring all {c['models']} would take several times the rest of the run, so "
        f"{len(c['measured'])} of them, one per",
        "family (seeded), went through the profiler's worker as `nar-tvm compare` sends them (its",
        "protocol: 1 warm-up, 5 timings of at least 40 ms); their mean compile + measure time stands",
        f"for every model. Loading each ONNX file into that worker (another {c['measure_load_per_model_s']:.2f} s",
        "per model on average) is left out of the ratio, which makes it conservative.",
        "",
        "| measured model | compile + measure | of which compile | latency |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {m['model']} | {m['compile_measure_s']:.1f} s ({m['compile_measure_cpu_s']:.1f} s CPU) "
              f"| {m['compile_s']:.1f} s | {m['median_ms']:.2f} ms |" for m in c["measured"]]
    lines += ["", "Raw timings: `bench_cli_startup.json`.", ""]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=100, help="ONNX files predicted in one call (default 100)")
    parser.add_argument("--measure", type=int, default=16,
                        help="of them, how many to compile and measure, one per family (default 16: every "
                             "family once, so their mean weighs the families as the round-robin set does)")
    parser.add_argument("--help-runs", type=int, default=5, help="runs of nar-tvm --help (default 5)")
    parser.add_argument("--runs", type=int, default=3,
                        help="runs each of the import floor and the one-file prediction (default 3)")
    parser.add_argument("--checkpoint", help="default: the shipped one")
    parser.add_argument("--models-dir", help="keep the exported ONNX files here and reuse them on the next run "
                                             "(default: a temporary folder, removed at the end)")
    parser.add_argument("--note", default="", help="conditions to state in the report (what else ran)")
    parser.add_argument("--out", default=str(HERE / "bench_cli_startup.md"),
                        help="report to write; the raw timings go beside it as .json")
    args = parser.parse_args()
    if args.models < 2:
        parser.error("--models must be at least 2 (the marginal cost needs two points)")

    cli = nar_tvm_command()
    ckpt = ["--checkpoint", args.checkpoint] if args.checkpoint else []
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "note": args.note,
           "load_before": list(os.getloadavg()), "command": cli}
    folder = Path(args.models_dir) if args.models_dir else Path(tempfile.mkdtemp(prefix="nar-tvm-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        models = export_models(folder, args.models)
        print(f"exported {len(models)} zoo models to ONNX in {time.perf_counter() - start:.0f} s", flush=True)

        runs = [timed([*cli, "--help"]) for _ in range(args.help_runs)]
        res["help"] = dict(medians(runs), runs=runs)
        print(f"(a) nar-tvm --help: {res['help']['wall_s']:.2f} s wall, {res['help']['cpu_s']:.2f} s CPU "
              f"(median of {len(runs)}; target < {TARGET_HELP_S:g} s)", flush=True)

        one = models[0][2]
        import_runs, predict_runs = [], []
        for _ in range(args.runs):  # interleaved, so a burst of load from elsewhere hits both alike
            import_runs.append(timed([sys.executable, "-c", "import torch, tvm"]))
            predict_runs.append(timed([*cli, "predict", str(one), *ckpt], expect_lines=1))
        imp, pred = medians(import_runs), medians(predict_runs)
        over = {k: pred[k] - imp[k] for k in imp}
        res["predict_one"] = {"model": one.name, "import": imp, "predict": pred, "over_import": over,
                              "import_runs": import_runs, "predict_runs": predict_runs}
        print(f"(b) import torch, tvm: {imp['wall_s']:.2f} s wall ({imp['cpu_s']:.2f} s CPU); predict one.onnx: "
              f"{pred['wall_s']:.2f} s wall ({pred['cpu_s']:.2f} s CPU); difference {over['wall_s']:+.2f} s wall, "
              f"{over['cpu_s']:+.2f} s CPU (target <= {TARGET_PREDICT_OVER_IMPORT_S:g} s)", flush=True)

        many = timed([*cli, "predict", *(str(p) for _, _, p in models), *ckpt], expect_lines=len(models))
        per_model = (many["wall_s"] - pred["wall_s"]) / (len(models) - 1)
        per_model_cpu = (many["cpu_s"] - pred["cpu_s"]) / (len(models) - 1)
        print(f"(c) predict {len(models)} files in one call: {many['wall_s']:.1f} s wall; marginal "
              f"{per_model:.3f} s per model ({per_model_cpu:.3f} s CPU)", flush=True)
        measured = measure_models(one_per_family(models, args.measure), args.checkpoint)
        per_measure = statistics.mean(m["compile_measure_s"] for m in measured)
        per_measure_cpu = statistics.mean(m["compile_measure_cpu_s"] for m in measured)
        res["many"] = {
            "models": len(models), "max_seed": max(s for _, s, _ in models), "predict_all": many,
            "predict_per_model_s": per_model, "predict_per_model_cpu_s": per_model_cpu,
            "measured": measured, "measure_per_model_s": per_measure, "measure_per_model_cpu_s": per_measure_cpu,
            "measure_load_per_model_s": statistics.mean(m["load_extract_s"] for m in measured),
            "speedup": per_measure / per_model, "speedup_cpu": per_measure_cpu / per_model_cpu,
        }
        print(f"(c) compile + measure: {per_measure:.2f} s wall, {per_measure_cpu:.2f} s CPU per model (mean of "
              f"{len(measured)}); predicting is {res['many']['speedup']:.1f}x cheaper per model in wall time, "
              f"{res['many']['speedup_cpu']:.1f}x in CPU time (target >= {TARGET_SPEEDUP:g}x)", flush=True)
    finally:
        if not args.models_dir:
            shutil.rmtree(folder, ignore_errors=True)
    res["load_after"] = list(os.getloadavg())
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    write_report(res, out)
    print(f"wrote {out} and {out.with_suffix('.json').name}")


if __name__ == "__main__":
    main()
