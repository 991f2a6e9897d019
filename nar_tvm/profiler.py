"""Offline profiling: compile and measure many models, appending to a dataset store.

Every model is imported, extracted and measured in a worker process, so a model
that crashes or hangs TVM becomes a failed record and the run goes on. The run
is resumable: jobs already in the store (ok, failed or duplicate) are skipped.
"""
from __future__ import annotations

import io
import multiprocessing as mp
import os
import random
import sys
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .dataset import DatasetStore
from .measure import Protocol, shared_core_warning
from .platform import PlatformSpec, fingerprint, platform_id


@dataclass
class Job:
    key: str  # unique per model source; the store keys records by key@platform
    name: str
    onnx_bytes: bytes
    family: str = "custom"
    seed: int | None = None
    params: dict = field(default_factory=dict)
    input_shapes: dict | None = None


@dataclass
class WorkerConfig:
    spec: PlatformSpec
    protocol: Protocol
    cpu_affinity: list[int] | None = None
    rpc_tracker: str | None = None
    rpc_key: str | None = None
    with_kernels: bool = True
    runner: str = "inprocess"  # or "native": the nar-tvm-runner binary times the exported library
    allow_fallback: bool = False  # native runner not built -> in-process evaluator instead of an error

    def __post_init__(self):
        if self.rpc_tracker and not self.rpc_key:
            raise ValueError("--rpc-tracker needs --rpc-key (the key the device's RPC server registered)")
        if self.rpc_tracker and not self.spec.target:
            # An empty target means this host's CPU (a GPU's host code included): the library
            # would be built for the machine running the profiler, and its fingerprint would
            # name that CPU, not the device's.
            raise ValueError(f"measuring on RPC device {self.rpc_key!r} needs its TVM target: give --target, "
                             "e.g. '{\"kind\":\"llvm\",\"mtriple\":\"aarch64-linux-gnu\",\"mcpu\":\"cortex-a76\"}'")


def _worker_main(conn, cfg: WorkerConfig):
    # Thread count and core pinning must be in place before TVM starts its thread pool.
    os.environ["TVM_NUM_THREADS"] = str(cfg.spec.threads)
    if cfg.cpu_affinity:
        os.sched_setaffinity(0, cfg.cpu_affinity)
    from nar_tvm.loaders import load_onnx
    from nar_tvm.measure import Session, measure
    from nar_tvm.passes.extract import ExtractOpGraph, extract_opgraph

    session = Session(cfg.spec, cfg.rpc_tracker, cfg.rpc_key)
    machine = None if session.remote is None else session.remote_machine(cfg.rpc_key)
    conn.send(("ready", fingerprint(cfg.spec, machine)))
    loaded = None
    while True:
        msg = conn.recv()
        try:
            if msg[0] == "extract":
                _, onnx_bytes, shapes, name = msg
                loaded = load_onnx(onnx_bytes, shapes, name)
                conn.send(("ok", extract_opgraph(loaded.mod, "op", cfg.spec.tvm_target(), name).to_dict()))
            elif msg[0] == "measure":
                probe = ExtractOpGraph()
                result = measure(loaded.mod, cfg.spec, session, cfg.protocol, cfg.with_kernels, probe,
                                 runner=getattr(cfg, "runner", "inprocess"), cpu_affinity=cfg.cpu_affinity)
                fused = probe.graph
                fused.name = loaded.name
                conn.send(("ok", (fused.to_dict(), result)))
            elif msg[0] == "probe":
                from nar_tvm.probe import measure_probe

                probe = measure_probe(cfg.spec, session, cfg.protocol, runner=getattr(cfg, "runner", "inprocess"),
                                      cpu_affinity=cfg.cpu_affinity)
                conn.send(("ok", probe.to_dict()))
            elif msg[0] == "stop":
                return
        except Exception as exc:  # noqa: BLE001 - every failure becomes a record, not a crash
            tail = traceback.format_exception_only(type(exc), exc)[-1].strip()
            conn.send(("error", tail[-2000:]))


class Worker:
    """A child process that survives nothing: crash or timeout -> killed and respawned."""

    def __init__(self, cfg: WorkerConfig, start_timeout: float = 300):
        self.cfg = cfg
        self.start_timeout = start_timeout
        self.proc = None
        self.conn = None
        self.fingerprint = None

    def start(self):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, self.cfg), daemon=True)
        self.proc.start()
        status, fp = self._recv(self.start_timeout)
        if status != "ready":
            raise RuntimeError(f"profiling worker failed to start: {fp}")
        self.fingerprint = fp

    def _recv(self, timeout: float):
        if not self.conn.poll(timeout):
            self.kill()
            return "error", f"timed out after {timeout:.0f} s"
        try:
            return self.conn.recv()
        except (EOFError, ConnectionError):
            code = self.proc.exitcode if self.proc else None
            self.kill()
            return "error", f"worker process died (exit code {code}): TVM crashed on this model"

    def call(self, msg, timeout: float):
        if self.proc is None or not self.proc.is_alive():
            self.start()
        self.conn.send(msg)
        return self._recv(timeout)

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.join(5)
        self.proc = None

    def stop(self):
        if self.proc is not None and self.proc.is_alive():
            self.conn.send(("stop",))
            self.proc.join(10)
        self.kill()


def onnx_bytes_of(module, example_input) -> bytes:
    """torch -> ONNX with the legacy exporter: it folds BatchNorm into convolutions,
    as deployment graphs (and NNLQP's) have it."""
    import torch

    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module, (example_input,), buf, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"])
    return buf.getvalue()


def zoo_job(family: str, seed: int) -> Job:
    from . import zoo

    v = zoo.generate(family, seed)
    return Job(key=f"zoo:{family}:{seed}", name=v.name, family=family, seed=seed, params=v.params,
               onnx_bytes=onnx_bytes_of(v.build(), v.example_input()))


def zoo_entry(family: str, seed: int):
    """(job key, make_job) of one zoo model, as `Profiler.profile` takes them: built only when
    its turn comes, and not at all when the store has it."""
    return f"zoo:{family}:{seed}", (lambda: zoo_job(family, seed))


def zoo_jobs(families, per_family: int, start_seed: int = 0):
    """Zoo jobs, interleaved across families so a partial run stays balanced."""
    for seed in range(start_seed, start_seed + per_family):
        for family in families:
            yield zoo_entry(family, seed)


def _unpack(built) -> tuple[Job, str | None]:
    return built if isinstance(built, tuple) else (built, None)


def _check_runner(cfg: WorkerConfig) -> WorkerConfig:
    """The native runner must be built, unless falling back to the in-process evaluator is allowed."""
    if cfg.runner == "inprocess":
        return cfg
    if cfg.runner != "native":
        raise ValueError(f"unknown runner {cfg.runner!r}; choose from inprocess, native")
    import dataclasses
    import sys

    from .native import RunnerNotBuilt, find_runner

    try:
        find_runner()
    except RunnerNotBuilt as exc:
        if not cfg.allow_fallback:
            raise
        print(f"warning: {exc}\nFalling back to the in-process evaluator (--allow-fallback).", file=sys.stderr)
        return dataclasses.replace(cfg, runner="inprocess")
    return cfg


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def builds_beside_measurement(cfg: WorkerConfig, own_cores: set[int]) -> bool:
    """Whether the next model may be exported (in this process, on `own_cores`) while
    the worker times the current one: only when the timing cannot feel it, i.e. on a
    remote device or with the worker pinned to other cores. Otherwise the export would
    inflate the measured latencies.
    """
    if cfg.rpc_tracker:
        return True
    if not cfg.cpu_affinity:
        return False
    return not set(cfg.cpu_affinity) & set(own_cores)


class Profiler:
    def __init__(self, store: DatasetStore, cfg: WorkerConfig, extract_timeout: float = 300,
                 measure_timeout: float = 600, probe: bool = True):
        self.store = store
        # The machine speed probe, measured once per run before the first model (`measure_probe`).
        self.probe: dict | None = None
        self.with_probe = probe
        self.cfg = cfg
        self.extract_timeout = extract_timeout
        self.measure_timeout = measure_timeout
        self.cfg = cfg = _check_runner(cfg)
        self.worker = Worker(cfg)
        self.worker.start()
        self.fingerprint = self.worker.fingerprint
        self.platform_id = platform_id(self.fingerprint)
        self.done = set()
        self.measured_graphs = {}
        for r in store.records():
            if r.get("platform_id") != self.platform_id:
                continue
            self.done.add(r["job"])
            if r["status"] == "ok":
                self.measured_graphs[r["graph_hash"]] = r["job"]

    def measure_probe(self) -> dict:
        """Time the probe panel (nar_tvm.probe) in the worker, where models are measured."""
        status, result = self.worker.call(("probe",), self.measure_timeout)
        if status != "ok":
            raise RuntimeError(f"the machine speed probe failed: {result}")
        from .probe import Probe, describe

        probe = Probe.from_dict(result)
        if not probe.steady:
            # Measuring goes on (the records are as noisy as the host), but the stored probe may
            # not recognise this machine later; say so while the user can still wait and rerun.
            print(describe(probe), file=sys.stderr)
        self.probe = result
        return result

    def job_id(self, key: str) -> str:
        return f"{key}@{self.platform_id}"

    def _base(self, job: Job) -> dict:
        return {
            "job": self.job_id(job.key),
            "model": {"name": job.name, "family": job.family, "seed": job.seed, "params": job.params},
            "platform_id": self.platform_id,
            "platform": self.fingerprint,
            **({"probe": self.probe} if self.probe else {}),
            "time": _now(),
        }

    def run_job(self, job: Job, remeasure_of: str | None = None) -> dict:
        record = self._base(job)
        status, op_graph = self.worker.call(("extract", job.onnx_bytes, job.input_shapes, job.name),
                                            self.extract_timeout)
        if status != "ok":
            record.update(status="failed", stage="extract", error=op_graph)
            return record
        from nar_tvm.passes.opgraph import OpGraph

        graph_hash = OpGraph.from_dict(op_graph).content_hash()
        record["graph_hash"] = graph_hash
        if remeasure_of is None and graph_hash in self.measured_graphs:
            record.update(status="duplicate", duplicate_of=self.measured_graphs[graph_hash])
            return record
        status, result = self.worker.call(("measure",), self.measure_timeout)
        if status != "ok":
            record.update(status="failed", stage="measure", error=result, graphs={"op": op_graph})
            return record
        fused_graph, measurement = result
        if remeasure_of is not None:
            # Same model measured again later: only the timing matters, not the graphs.
            record.update(status="remeasure", remeasure_of=remeasure_of, measurement=measurement)
            return record
        record.update(status="ok", graphs={"op": op_graph, "fused": fused_graph}, measurement=measurement)
        self.measured_graphs[graph_hash] = record["job"]
        return record

    def profile(self, jobs, total: int | None = None, progress: bool = True) -> dict:
        """Run `jobs`, pairs of (job key, make_job), skipping keys already in the store.

        Where `builds_beside_measurement`, the next job is built (torch export) in a
        thread while the worker measures the current one, so the measuring core is not
        left idle between models; otherwise jobs are built and measured in turn.
        """
        from concurrent.futures import ThreadPoolExecutor

        from tqdm import tqdm

        counts = {"ok": 0, "failed": 0, "duplicate": 0, "remeasure": 0, "skipped": 0}
        pending = []
        for key, make_job in jobs:
            if self.job_id(key) in self.done:
                counts["skipped"] += 1
            else:
                pending.append((key, make_job))
        if pending and self.with_probe and self.probe is None:
            self.measure_probe()
        bar = tqdm(total=len(pending), disable=not progress, unit="model", dynamic_ncols=True,
                   desc=f"skipped {counts['skipped']} already measured" if counts["skipped"] else None)
        ahead = builds_beside_measurement(self.cfg, os.sched_getaffinity(0))
        with ThreadPoolExecutor(max_workers=1) as builder:
            future = builder.submit(pending[0][1]) if pending and ahead else None
            for i, (key, make_job) in enumerate(pending):
                current = future if ahead else builder.submit(make_job)
                if ahead:
                    future = builder.submit(pending[i + 1][1]) if i + 1 < len(pending) else None
                try:
                    job, remeasure_of = _unpack(current.result())
                except Exception as exc:  # noqa: BLE001 - a model that cannot even be exported
                    rec = self._base(Job(key=key, name=key, onnx_bytes=b""))
                    rec.update(status="failed", stage="export", error=f"{type(exc).__name__}: {exc}"[:2000])
                else:
                    rec = self.run_job(job, remeasure_of)
                    shared = shared_core_warning(rec.get("measurement") or {})
                    if shared:
                        bar.write(f"warning: {rec['job']}: {shared}")
                self.store.append(rec)
                self.done.add(rec["job"])
                counts[rec["status"]] += 1
                bar.update()
                bar.set_postfix(ok=counts["ok"], failed=counts["failed"], dup=counts["duplicate"])
        bar.close()
        return counts

    def remeasure_jobs(self, fraction: float, seed: int = 0, families: list[str] | None = None):
        """A seeded random share of this platform's zoo records (of `families` only, if given),
        measured again: the noise floor."""
        ok = sorted((r for r in self.store.records("ok")
                     if r["platform_id"] == self.platform_id and r["job"].startswith("zoo:")
                     and (families is None or r["model"]["family"] in families)),
                    key=lambda r: r["job"])
        chosen = random.Random(seed).sample(ok, max(1, round(fraction * len(ok)))) if ok else []
        for r in chosen:
            original_key = r["job"].rsplit("@", 1)[0]

            def make(r=r, key=f"remeasure:{original_key}"):
                model = r["model"]
                job = zoo_job(model["family"], model["seed"])
                job.key = key
                return job, r["job"]

            yield f"remeasure:{original_key}", make

    def close(self):
        self.worker.stop()
