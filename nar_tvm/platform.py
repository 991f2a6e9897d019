"""What a latency was measured on: target, compile pipeline, threads, batch, and the machine.

Two records are comparable only when their platform ids match; the id hashes
everything that changes latency, so datasets never pool platforms silently.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform as _platform
from dataclasses import asdict, dataclass, field

from nar_tvm.passes.pipeline import PIPELINES  # noqa: F401 - defined beside the passes they name


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return _platform.processor() or _platform.machine()


@dataclass
class PlatformSpec:
    """The knobs a user chooses; `fingerprint()` adds what the machine and versions are."""

    target: dict = field(default_factory=dict)  # TVM target in dict form; empty = this CPU
    pipeline: str = "default"
    threads: int = 1
    batch: int = 1
    dtype: str = "float32"
    device: str = "cpu"  # "cpu" or "cuda"

    def __post_init__(self):
        if self.pipeline not in PIPELINES:
            raise ValueError(f"unknown compile pipeline {self.pipeline!r}; choose from {PIPELINES}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")

    def resolved_target(self) -> dict:
        if self.target:
            return dict(self.target)
        from nar_tvm.passes.host_target import host_target

        if self.device == "cuda":
            return {"kind": "cuda", "host": {"kind": "llvm"}}
        return host_target(num_cores=self.threads)

    def tvm_target(self):
        import tvm

        return tvm.target.Target(self.resolved_target())


def fingerprint(spec: PlatformSpec, machine: dict | None = None) -> dict:
    """Everything that identifies where and how a latency was measured.

    `machine` comes from the measuring device (remote over RPC); by default, this host.
    """
    import tvm
    import tvm_ffi

    machine = machine or local_machine()
    return {
        "cpu": machine["cpu"],
        "mcpu": spec.resolved_target().get("mcpu", ""),
        "cores": machine["cores"],
        "threads": spec.threads,
        "tvm": tvm.__version__,
        "tvm_ffi": getattr(tvm_ffi, "__version__", "unknown"),
        "target": json.dumps(spec.resolved_target(), sort_keys=True),
        "pipeline": spec.pipeline,
        "batch": spec.batch,
        "dtype": spec.dtype,
        "device": spec.device,
        "host": machine.get("host", ""),
    }


def local_machine() -> dict:
    return {"cpu": cpu_model_name(), "cores": os.cpu_count() or 1, "host": _platform.machine()}


def platform_id(fp: dict) -> str:
    """Short stable id of a fingerprint (hostname-free, so identical machines share it)."""
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]


def spec_to_dict(spec: PlatformSpec) -> dict:
    return asdict(spec)
