"""Machine speed probe: a fixed panel of small models whose latencies identify a machine.

Two machines with one fingerprint (same CPU model name, TVM, target, threads) still differ:
a fresh VM of the same CPU model ran the zoo 8-27% slower than the one that measured the
shipped data. The fingerprint cannot see that, so every profiling run and every calibration
measures this panel first, on the core and thread count it measures with, and stores the
result with its records. Each panel model stresses one kind of kernel (direct conv,
depthwise conv, dense, pooling, transcendental element-wise, attention), so a probe also
says *which* kinds of work a machine is slow at, not only that it is slow.

The probe has to survive a shared host. On a KVM guest, back-to-back probes that timed each
model once (median of five, models in turn: panel v1) moved the panel's geometric mean by
9% (standard deviation of its log; 32% between the extremes of eight probes), because a
neighbour's burst slows whichever model is being timed. Panel v2 compiles every model
first, then times them in interleaved rounds and keeps a low percentile of all timings: a
burst slows some samples, never the fastest ones, so the same eight-probe test moved by
3.6%. Against slow drift no probe of seconds helps: two hours later the same guest drifted
by up to 1.5x within minutes and both kinds of probe moved by 13-14%
(`benchmarks/probe_noise.py`). A probe identifies a machine only while its host is steady,
so each probe records how far its own rounds disagreed and reports itself unsteady when they
disagree by more than a machine comparison tolerates.

The panel is versioned: changing a model or the way it is timed changes `PANEL_VERSION`, and
probes of different versions are never compared.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field

PANEL_VERSION = 2
ROUNDS = 7
REPEATS_PER_ROUND = 3
# Noise on a shared machine only ever adds time, so the fastest timings are the stable ones;
# the 10th percentile rather than the minimum, so that one lucky timing does not decide.
PROBE_PERCENTILE = 10
# A probe's rounds take a second or two each. When the fastest timings of its rounds disagree by
# more than this (panel geometric mean, fastest round against slowest), the host's speed moved
# during the probe, and a machine comparison made from it cannot be trusted.
UNSTEADY_ROUND_SPREAD = 0.10


def _panel_modules():
    """name -> (module, example input). Built here so that importing this module costs nothing."""
    import torch
    from torch import nn

    class Elementwise(nn.Module):
        def forward(self, x):
            return torch.tanh(x * torch.sigmoid(x)) + torch.exp(-x * x)

    class Attention(nn.Module):
        def forward(self, x):
            q, k, v = x, x.flip(-1), x * 0.5
            scores = torch.softmax(q @ k.transpose(-1, -2) * 0.125, dim=-1)
            return scores @ v

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        panel = {
            "conv3x3": (nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU()), (1, 16, 24, 24)),
            "depthwise": (nn.Sequential(nn.Conv2d(64, 64, 5, padding=2, groups=64), nn.Conv2d(64, 64, 1)),
                          (1, 64, 24, 24)),
            "dense": (nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256)), (16, 256)),
            "pool": (nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.AvgPool2d(3, 1, 1)), (1, 96, 96, 96)),
            "elementwise": (Elementwise(), (1, 64, 48, 48)),
            "attention": (Attention(), (4, 128, 32)),
        }
    return {name: (module.eval(), shape) for name, (module, shape) in panel.items()}


PANEL = ("conv3x3", "depthwise", "dense", "pool", "elementwise", "attention")


@dataclass
class Probe:
    """The 10th-percentile ms of each panel model on one machine, core and thread count
    (`cv`: spread of all its timings, which shows how noisy the machine was; `round_spread`:
    how far its rounds disagreed, None for probes that did not record it; `cpu_share`: CPU
    time its timings got per wall second, under native.SHARED_CORE_BELOW when other work
    shared the core, None for remote probes and probes that did not record it)."""

    ms: dict[str, float]
    version: int = PANEL_VERSION
    time: str = ""
    cv: dict[str, float] = field(default_factory=dict)
    round_spread: float | None = None
    cpu_share: float | None = None

    @property
    def shared_core(self) -> bool:
        from .native import shared_core

        return shared_core(self.cpu_share)

    @property
    def steady(self) -> bool:
        """Whether the host held its speed during the probe (unknown counts as steady). A core
        shared throughout slows every round alike, which the rounds' spread cannot show."""
        return (self.round_spread is None or self.round_spread <= UNSTEADY_ROUND_SPREAD) and not self.shared_core

    @property
    def id(self) -> str:
        """Identifies this probe run (values and time), for grouping the records it came with."""
        blob = json.dumps({"ms": self.ms, "version": self.version, "time": self.time}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    def to_dict(self) -> dict:
        out = {"id": self.id, "version": self.version, "time": self.time, "ms": dict(self.ms),
               "cv": dict(self.cv)}
        if self.round_spread is not None:
            out["round_spread"] = self.round_spread
        if self.cpu_share is not None:
            out["cpu_share"] = self.cpu_share
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Probe":
        if not isinstance(d, dict) or not isinstance(d.get("ms"), dict) or not d["ms"]:
            raise ValueError(f"not a machine probe: {str(d)[:80]!r}")
        return cls(ms={k: float(v) for k, v in d["ms"].items()}, version=int(d.get("version", 0)),
                   time=str(d.get("time", "")), cv={k: float(v) for k, v in d.get("cv", {}).items()},
                   round_spread=None if d.get("round_spread") is None else float(d["round_spread"]),
                   cpu_share=None if d.get("cpu_share") is None else float(d["cpu_share"]))


# Two v2 probes of one steady machine differ by about 5% (the 3.6% of one probe, times sqrt 2):
# two standard deviations of that. Machines of one CPU model were seen to differ by 8-27%, so
# the larger differences are caught on a steady host; on a drifting one nothing is.
SAME_MACHINE_TOLERANCE = 0.10


def speed_ratio(reference: Probe, other: Probe) -> float:
    """How much slower `other` runs the panel than `reference`: geometric mean of time ratios."""
    if reference.version != other.version:
        raise ValueError(f"probe panels differ (version {reference.version} vs {other.version}); "
                         "they cannot be compared")
    common = sorted(set(reference.ms) & set(other.ms))
    if not common:
        raise ValueError("the two probes share no panel model")
    return math.exp(sum(math.log(other.ms[k] / reference.ms[k]) for k in common) / len(common))


def per_model_ratios(reference: Probe, other: Probe) -> dict[str, float]:
    return {k: other.ms[k] / reference.ms[k] for k in sorted(set(reference.ms) & set(other.ms))}


def same_machine(reference: Probe, other: Probe, tolerance: float = SAME_MACHINE_TOLERANCE) -> bool:
    """Whether two probes are within the probe's own noise of each other."""
    return abs(math.log(speed_ratio(reference, other))) <= math.log1p(tolerance)


def spread_of_rounds(fastest: dict[str, list[float]]) -> float:
    """How far a probe's rounds disagree: `fastest[model][r]` is the fastest timing of `model` in
    round r; each round scores the geometric mean over models of that against the model's median
    round, and the spread is the slowest round's score over the fastest's, minus one."""
    import numpy as np

    logs = np.array([np.log(np.asarray(t, dtype=float) / np.median(t)) for t in fastest.values()])
    scores = logs.mean(axis=0)
    return float(np.exp(scores.max() - scores.min()) - 1.0)


def panel_onnx(names=PANEL) -> dict[str, bytes]:
    """The panel models as ONNX, exported as the profiler exports zoo models."""
    import torch

    from .profiler import onnx_bytes_of

    modules = _panel_modules()
    out = {}
    for name in names:
        module, shape = modules[name]
        out[name] = onnx_bytes_of(module, torch.zeros(shape))
    return out


def measure_probe(spec, session, protocol, names=PANEL, runner: str = "inprocess", cpu_affinity=None,
                  rounds: int = ROUNDS) -> Probe:
    """Compile the panel, then time it in `rounds` interleaved rounds where the caller measures
    (its process, core, threads), with `protocol`'s warm-up and minimum timing length."""
    from datetime import datetime, timezone

    import numpy as np

    from .loaders import load_onnx
    from .measure import (RUNNERS, Protocol, build, coefficient_of_variation, random_inputs, require_local_cpu,
                          time_exported, time_loaded)
    from .native import children_cpu_s, cpu_share

    if runner not in RUNNERS:
        raise ValueError(f"unknown runner {runner!r}; choose from {RUNNERS}")
    if runner == "native":
        require_local_cpu(spec, session)
    per_round = Protocol(warmup=protocol.warmup, repeat=REPEATS_PER_ROUND, min_repeat_ms=protocol.min_repeat_ms)
    with tempfile.TemporaryDirectory(prefix="nar-tvm-probe-") as libraries:
        timers = {}
        for name, data in panel_onnx(names).items():
            mod = load_onnx(data, None, f"probe-{name}").mod
            ex = build(mod, spec)
            if runner == "native":  # exported once, timed by the runner every round
                path = os.path.join(libraries, f"{name}.so")
                ex.export_library(path)
                timers[name] = lambda path=path, mod=mod: time_exported(
                    path, mod, spec, per_round, cpu_affinity)["repeats_ms"]
            else:  # loaded (uploaded, for a remote session) once, timed every round
                vm, args = session.load(ex), session.to_device(random_inputs(mod))
                timers[name] = lambda vm=vm, args=args: time_loaded(vm, args, session, per_round)
        # This process's CPU time (in-process timings) and its runner children's (native ones).
        cpu0, wall0 = time.process_time() + children_cpu_s(), time.perf_counter()
        samples, fastest = _time_in_rounds(timers, rounds)
        share = cpu_share(time.process_time() + children_cpu_s() - cpu0, time.perf_counter() - wall0)
    ms = {name: round(float(np.percentile(s, PROBE_PERCENTILE)), 6) for name, s in samples.items()}
    cv = {name: round(coefficient_of_variation(s), 6) for name, s in samples.items()}
    return Probe(ms=ms, time=datetime.now(timezone.utc).isoformat(timespec="seconds"), cv=cv,
                 round_spread=round(spread_of_rounds(fastest), 6),
                 cpu_share=share if session.remote is None else None)


def _time_in_rounds(timers: dict, rounds: int) -> tuple[dict, dict]:
    """Every timing of each panel model, and its fastest per round, over interleaved rounds."""
    samples: dict[str, list[float]] = {name: [] for name in timers}
    fastest: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timed in timers.items():
            timings = list(timed())
            samples[name].extend(timings)
            fastest[name].append(min(timings))
    return samples, fastest


def describe(probe: Probe, reference: Probe | None = None) -> str:
    parts = [f"{k} {v:.3f} ms" for k, v in probe.ms.items()]
    line = f"probe {probe.id} (panel v{probe.version}): " + ", ".join(parts)
    unsteady = [p for p in (probe, reference) if p is not None and not p.steady]
    for p in unsteady:
        if p.shared_core:
            line += (f"\n  other work shared the core during probe {p.id}: its timings got {p.cpu_share:.0%} of it, "
                     "so the panel reads slower than this machine is; probe again on an idle core (--cpu-affinity)")
        else:
            line += (f"\n  the host was unsteady during probe {p.id}: its rounds differ by {p.round_spread:.0%} "
                     f"(more than {UNSTEADY_ROUND_SPREAD:.0%}); probe again when the host is quiet "
                     "(little `st` in top)")
    if reference is not None and reference.version != probe.version:
        line += (f"\n  not comparable with probe {reference.id}: it was measured with panel v{reference.version} "
                 f"(this is v{probe.version}); calibrate again to record a current probe")
    elif reference is not None:
        ratio = speed_ratio(reference, probe)
        verdict = "same machine" if same_machine(reference, probe) else "a different machine"
        if unsteady:
            verdict += ", but an unsteady probe makes this verdict unreliable"
        line += f"\n  {ratio:.3f}x the time of probe {reference.id}: {verdict} " \
                f"(tolerance {SAME_MACHINE_TOLERANCE:.0%})"
    return line
