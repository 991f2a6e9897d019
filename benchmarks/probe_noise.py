"""How much the machine speed probe moves between back-to-back runs on one machine.

`nar_tvm.probe.same_machine` calls two probes one machine when their panel times are within
SAME_MACHINE_TOLERANCE; that is only meaningful if one machine's probes agree much more
closely than that. This script alternates the current probe (panel v2: interleaved rounds,
10th percentile) with the v1 way of timing the same panel (each model once, in turn, median
of the profiler's five repeats) on one core, and reports each one's spread; and whether the v2
probes that call themselves steady (round spread within UNSTEADY_ROUND_SPREAD) agree more closely
than the others.

    taskset -c 1 python benchmarks/probe_noise.py --probes 8

Run it on a quiet machine (nothing else measuring); it takes about 20 s per pair. On a cloud VM
the figures depend on the host's load at the time: check `top`'s steal time (`st`) alongside.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def v1_probe(spec, session, protocol) -> dict[str, float]:
    """The panel timed as panel v1 did: each model compiled and timed once, models in turn."""
    from nar_tvm.loaders import load_onnx
    from nar_tvm.measure import measure
    from nar_tvm.probe import panel_onnx

    return {name: float(measure(load_onnx(data, None, f"probe-{name}").mod, spec, session, protocol,
                                with_kernels=False)["median_ms"])
            for name, data in panel_onnx().items()}


def panel_geomean(ms: dict[str, float]) -> float:
    return math.exp(sum(math.log(v) for v in ms.values()) / len(ms))


def spread_row(label: str, geomeans: list[float]) -> str:
    g = np.array(geomeans)
    rel = ", ".join(f"{v:.3f}" for v in g / np.median(g))
    return f"| {label} | {np.std(np.log(g)):.3f} | {g.max() / g.min():.3f} | {rel} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=8, help="probes of each kind (default 8)")
    parser.add_argument("--out", default=str(HERE / "probe_noise.md"))
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = "1"

    from nar_tvm.measure import Protocol, Session
    from nar_tvm.platform import PlatformSpec, fingerprint
    from nar_tvm.probe import PANEL_VERSION, SAME_MACHINE_TOLERANCE, UNSTEADY_ROUND_SPREAD, measure_probe

    spec = PlatformSpec(threads=1)
    session = Session(spec)
    protocol = Protocol()
    v1, v2, spreads, seconds = [], [], [], {"v1": 0.0, "v2": 0.0}
    for i in range(args.probes):  # alternated, so drift of the machine hits both alike
        t0 = time.perf_counter()
        v1.append(panel_geomean(v1_probe(spec, session, protocol)))
        t1 = time.perf_counter()
        probe = measure_probe(spec, session, protocol)
        v2.append(panel_geomean(probe.ms))
        spreads.append(probe.round_spread)
        t2 = time.perf_counter()
        seconds["v1"] += t1 - t0
        seconds["v2"] += t2 - t1
        print(f"{i + 1}/{args.probes}: v1 {v1[-1]:.3f} ms, v2 {v2[-1]:.3f} ms "
              f"(round spread {spreads[-1]:.3f})", flush=True)

    fp = fingerprint(spec)
    affinity = sorted(os.sched_getaffinity(0))
    lines = ["# Machine speed probe: spread of back-to-back probes on one machine", "",
             "Regenerate: `taskset -c 1 python benchmarks/probe_noise.py --probes 8` on a quiet machine.", "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {fp.get('cpu')} (LLVM mcpu {fp.get('mcpu')}), "
             f"cores {affinity}, one thread; {args.probes} probes of each kind, alternated.", "",
             "| probe | sd of log panel time | max / min | each probe / median |", "|---|---|---|---|",
             spread_row(f"v1: each model once, median of {protocol.repeat} "
                        f"({seconds['v1'] / args.probes:.1f} s per probe)", v1),
             spread_row(f"v{PANEL_VERSION}: interleaved rounds, 10th percentile "
                        f"({seconds['v2'] / args.probes:.1f} s per probe)", v2)]
    steady = [g for g, sp in zip(v2, spreads) if sp <= UNSTEADY_ROUND_SPREAD]
    if len(steady) >= 2:
        lines.append(spread_row(f"v{PANEL_VERSION}, only the {len(steady)} probes whose rounds agree within "
                                f"{UNSTEADY_ROUND_SPREAD:.0%}", steady))
    lines += ["", f"Round spread of each v{PANEL_VERSION} probe (its slowest round's panel time over its fastest's, "
              f"minus one; above {UNSTEADY_ROUND_SPREAD:.0%} the probe reports the host unsteady): "
              + ", ".join(f"{sp:.3f}" for sp in spreads) + ".", "",
             f"`same_machine` tolerance: {SAME_MACHINE_TOLERANCE:.0%} of panel time. Two probes of one machine "
             "differ by about sqrt(2) times the sd above; the tolerance should sit at about two of those.", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
