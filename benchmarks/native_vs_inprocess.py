"""Native runner vs in-process evaluator: do the two measurement backends agree?

Twenty zoo models (two per family, seeds the dataset does not use) are compiled once
each, exported, and timed four times on one core with one thread, alternating the
backends: in-process, native, in-process, native. Both backends use the profiler's
protocol (warm-up 1, then time_evaluator-style repeat 5 with min_repeat_ms 40):

- in-process: `relax.VirtualMachine` + `vm.time_evaluator` in this process, as `measure.py`;
- native: `nar-tvm-runner` on the exported library, in its own process (`nar_tvm.native`).

The noise floor is each backend measured twice, |m2 - m1| / m1 (the definition of
`nar_tvm.dataset.noise_floor`); agreement is |native - inprocess| / inprocess over the
two same-round pairs. The runner must be built first (native/README.md):

    taskset -c 0 python benchmarks/native_vs_inprocess.py --core 0 \
        --report benchmarks/native_vs_inprocess.md
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time


def loadavg() -> str:
    try:
        with open("/proc/loadavg", encoding="utf-8") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "n/a"


def rel(a: float, b: float) -> float:
    return abs(a - b) / b


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def quantile(values, q: float) -> float:
    import numpy as np

    return float(np.percentile(values, 100 * q))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=None, help="comma-separated zoo families (default: all ten)")
    parser.add_argument("--per-family", type=int, default=2)
    parser.add_argument("--start-seed", type=int, default=10000, help="zoo seeds; the dataset uses 0..")
    parser.add_argument("--core", type=int, default=0, help="core both backends are pinned to")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per backend and model (>= 2)")
    parser.add_argument("--json", help="write the raw results here")
    parser.add_argument("--report", help="write a Markdown report here")
    parser.add_argument("--from-json", help="only re-render --report from results saved with --json")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the noise floor compares rounds)")
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as fh:
            saved = json.load(fh)
        for key, value in saved.get("args", {}).items():
            if key in ("core", "rounds", "start_seed", "per_family"):
                setattr(args, key, value)
        from nar_tvm.measure import Protocol

        write_report(args, saved["rows"], saved["summary"], saved["platform"], Protocol(**saved["protocol"]))
        return 0

    # One thread, one core, before TVM starts its thread pool; the runner gets the same.
    os.environ["TVM_NUM_THREADS"] = "1"
    os.sched_setaffinity(0, [args.core])

    from nar_tvm import zoo
    from nar_tvm.loaders import load_onnx
    from nar_tvm.measure import Protocol, Session, build, input_specs, random_inputs
    from nar_tvm.native import find_runner, measure_native
    from nar_tvm.platform import PlatformSpec, fingerprint
    from nar_tvm.profiler import onnx_bytes_of

    runner = find_runner()  # RunnerNotBuilt says how to build it
    families = args.families.split(",") if args.families else list(zoo.FAMILIES)
    spec = PlatformSpec(threads=1)
    protocol = Protocol()
    session = Session(spec)

    def inprocess(ex, mod) -> float:
        # measure.measure's in-process path on an already compiled executable.
        vm = session.load(ex)
        vm_args = session.to_device(random_inputs(mod))
        for _ in range(protocol.warmup):
            vm["main"](*vm_args)
        result = vm.time_evaluator("main", session.dev, number=1, repeat=protocol.repeat,
                                   min_repeat_ms=protocol.min_repeat_ms)(*vm_args)
        return statistics.median(float(r) * 1e3 for r in result.results)

    def native(path, mod) -> float:
        return float(measure_native(path, input_specs(mod), protocol, threads=1, cpu_affinity=[args.core],
                                    runner=runner)["median_ms"])

    rows = []
    started = time.time()
    load_before = loadavg()
    for seed in range(args.start_seed, args.start_seed + args.per_family):
        for family in families:
            variant = zoo.generate(family, seed)
            loaded = load_onnx(onnx_bytes_of(variant.build(), variant.example_input()), name=variant.name)
            t0 = time.perf_counter()
            ex = build(loaded.mod, spec)
            compile_s = time.perf_counter() - t0
            with tempfile.TemporaryDirectory(prefix="nar-tvm-bench-") as tmp:
                path = os.path.join(tmp, "model.so")
                ex.export_library(path)
                inp, nat = [], []
                for _ in range(args.rounds):  # alternate so drifting load hits both alike
                    inp.append(inprocess(ex, loaded.mod))
                    nat.append(native(path, loaded.mod))
            row = {"model": variant.name, "family": family, "seed": seed, "compile_s": compile_s,
                   "inprocess_ms": inp, "native_ms": nat}
            rows.append(row)
            print(f"{variant.name:<32} in-process {' '.join(f'{x:9.3f}' for x in inp)}   "
                  f"native {' '.join(f'{x:9.3f}' for x in nat)} ms", flush=True)
    elapsed = time.time() - started
    load_after = loadavg()

    k = args.rounds
    agree = [rel(r["native_ms"][i], r["inprocess_ms"][i]) for r in rows for i in range(k)]
    per_model = [rel(statistics.median(r["native_ms"]), statistics.median(r["inprocess_ms"])) for r in rows]
    ratio = [statistics.median(r["native_ms"]) / statistics.median(r["inprocess_ms"]) for r in rows]
    noise_in = [rel(r["inprocess_ms"][i + 1], r["inprocess_ms"][i]) for r in rows for i in range(k - 1)]
    noise_nat = [rel(r["native_ms"][i + 1], r["native_ms"][i]) for r in rows for i in range(k - 1)]
    summary = {
        "models": len(rows),
        "agreement_median_rel_diff": statistics.median(agree),
        "agreement_p90_rel_diff": quantile(agree, 0.9),
        "per_model_median_rel_diff": statistics.median(per_model),
        "per_model_p90_rel_diff": quantile(per_model, 0.9),
        "native_over_inprocess_median_ratio": statistics.median(ratio),
        "noise_floor_inprocess_median": statistics.median(noise_in),
        "noise_floor_inprocess_p90": quantile(noise_in, 0.9),
        "noise_floor_native_median": statistics.median(noise_nat),
        "noise_floor_native_p90": quantile(noise_nat, 0.9),
        "elapsed_s": elapsed,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }
    fp = fingerprint(spec)
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"summary": summary, "rows": rows, "platform": fp, "protocol": protocol.to_dict(),
                       "core": args.core, "args": vars(args), "runner": runner}, fh, indent=1)
    if args.report:
        write_report(args, rows, summary, fp, protocol)
    return 0


def write_report(args, rows, s, fp, protocol) -> None:
    k = args.rounds
    floor = max(s["noise_floor_inprocess_median"], s["noise_floor_native_median"])
    within = s["agreement_median_rel_diff"] <= floor
    # Bias: is one backend systematically faster? Sign count and Wilcoxon signed-rank test on
    # the per-model log ratio of the medians over rounds.
    import math

    log_ratios = [math.log(statistics.median(r["native_ms"]) / statistics.median(r["inprocess_ms"]))
                  for r in rows]
    faster = sum(x < 0 for x in log_ratios)
    try:
        from scipy.stats import wilcoxon

        p_bias = float(wilcoxon(log_ratios).pvalue)
    except Exception:  # noqa: BLE001 - scipy missing or degenerate input
        p_bias = float("nan")
    lines = [
        "# Native runner vs in-process evaluator",
        "",
        f"Generated by `benchmarks/native_vs_inprocess.py` on {time.strftime('%Y-%m-%d')}: "
        f"{fp['cpu']} (`{fp['mcpu']}`, {fp['cores']} cores), TVM {fp['tvm']}, tvm-ffi {fp['tvm_ffi']}, "
        f"Python {platform.python_version()}, pipeline `{fp['pipeline']}`, 1 thread, "
        f"both backends pinned to core {args.core}.",
        "",
        f"- Protocol (the profiler's): warm-up {protocol.warmup}, repeat {protocol.repeat}, min_repeat_ms "
        f"{protocol.min_repeat_ms}; latency = median of the repeats.",
        f"- Each model is compiled once and exported once, then measured {k} times per backend, "
        "alternating in-process (`vm.time_evaluator` in the benchmark process) and native "
        "(`nar-tvm-runner` on the exported library, its own process).",
        f"- Models: `zoo.generate(family, seed)` for the ten families, seeds {args.start_seed}.."
        f"{args.start_seed + args.per_family - 1} (the dataset uses seeds from 0).",
        f"- Load average (1/5/15 min) {s['loadavg_before']} before and {s['loadavg_after']} after: the "
        "machine was shared with other jobs (a profiling run pinned to the other core, and other "
        f"engineers' jobs on core {args.core}), so both backends were timed under the same, "
        "uncontrolled background load. Absolute numbers and the noise floor are those of a busy core.",
        "",
        "## Summary",
        "",
        "| quantity | pairs | median | p90 |",
        "| --- | --- | --- | --- |",
        f"| native vs in-process, same round: \\|N-I\\|/I | {len(rows) * k} | "
        f"{pct(s['agreement_median_rel_diff'])} | {pct(s['agreement_p90_rel_diff'])} |",
        f"| native vs in-process, per model, medians over rounds | {len(rows)} | "
        f"{pct(s['per_model_median_rel_diff'])} | {pct(s['per_model_p90_rel_diff'])} |",
        f"| noise floor, in-process vs itself, consecutive rounds: \\|I2-I1\\|/I1 | {len(rows) * (k - 1)} | "
        f"{pct(s['noise_floor_inprocess_median'])} | {pct(s['noise_floor_inprocess_p90'])} |",
        f"| noise floor, native vs itself, consecutive rounds: \\|N2-N1\\|/N1 | {len(rows) * (k - 1)} | "
        f"{pct(s['noise_floor_native_median'])} | {pct(s['noise_floor_native_p90'])} |",
        "",
        f"Bias: median over models of native / in-process (medians over rounds) "
        f"{s['native_over_inprocess_median_ratio']:.4f}; native was the faster of the two on {faster} of "
        f"{len(rows)} models; Wilcoxon signed-rank test of the log ratios against 0: p = {p_bias:.2f}.",
        "",
        (f"**Agreement is within the noise floor**: the median same-round difference between the backends "
         f"({pct(s['agreement_median_rel_diff'])}) is no larger than the larger backend's own "
         f"round-to-round difference ({pct(floor)}); two unbiased measurements of the same latency "
         f"are expected to differ by about as much as each differs from itself." if within else
         f"**Agreement is NOT within the noise floor**: the median same-round difference between the "
         f"backends ({pct(s['agreement_median_rel_diff'])}) exceeds both backends' round-to-round "
         f"difference (up to {pct(floor)})."),
        "The dataset card (`benchmarks/data/cpu-znver4-1t/README.md`) had no noise floor yet when "
        "this ran (no re-measured records), so the noise floor above was measured here, on the "
        "same models, core and load, with the definition of `nar_tvm.dataset.noise_floor` "
        "(|second - first| / first). For scale, the card's median CV of the repeats is 3.4% on the "
        "other core.",
        "",
        "## Per model (ms, one column entry per round)",
        "",
        "| model | compile s | in-process | native | \\|med N - med I\\| / med I |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        i, n = r["inprocess_ms"], r["native_ms"]
        lines.append(f"| {r['model']} | {r['compile_s']:.1f} | {' / '.join(f'{x:.3f}' for x in i)} | "
                     f"{' / '.join(f'{x:.3f}' for x in n)} | "
                     f"{pct(rel(statistics.median(n), statistics.median(i)))} |")
    lines += [
        "",
        f"Run time {s['elapsed_s'] / 60:.1f} min. Reproduce (runner built as in `native/README.md`):",
        "",
        "```",
        f"taskset -c {args.core} python benchmarks/native_vs_inprocess.py --core {args.core} "
        f"--report benchmarks/native_vs_inprocess.md",
        "```",
        "",
    ]
    with open(args.report, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
