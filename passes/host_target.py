"""The LLVM target of the CPU this process runs on, limited to the instructions it can run.

LLVM names the host CPU by its model number (`llvm_get_system_cpu`), not by the instruction
set extensions the CPU reports. A virtual machine whose hypervisor hides AVX-512 from a Zen 4
host is still `znver4` to LLVM, and every kernel built for that target dies on its first
AVX-512 instruction (SIGILL), inside TVM, with no message. So the extensions the CPU model
implies but /proc/cpuinfo does not list are switched off with `mattr`.

Where the CPU lists every extension its model implies, the target is the bare `mcpu`, exactly
what it was before this check: the platform ids of the datasets measured so far do not change.
Only the vector extensions that float kernels are vectorised with are compared: LLVM's tuning
flags have no cpuinfo name, and a few extensions have another one there (sse3 is `pni`), so a
wider check would switch off, and re-identify, machines that run their code fine.
"""
from __future__ import annotations

import functools

import tvm

# LLVM feature names of the vector extensions LLVM emits for float kernels, which /proc/cpuinfo
# lists under the same name (up to '_', '-' and '.'); avx10 has no cpuinfo name of its own.
_CHECKED_PREFIXES = ("avx512", "avxvnni", "avx2", "avx", "fma", "f16c", "amx")
_UNCHECKED_PREFIXES = ("avx10",)


def _normalised(name: str) -> str:
    return name.replace("_", "").replace("-", "").replace(".", "").lower()


def cpuinfo_flags(path: str = "/proc/cpuinfo") -> set[str] | None:
    """The x86 feature flags the kernel reports for this CPU (normalised), or None where there
    is no such list (not Linux, not x86)."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return {_normalised(f) for f in line.split(":", 1)[1].split()}
    except OSError:
        pass
    return None


def missing_features(mcpu: str, flags: set[str] | None) -> list[str]:
    """Extensions LLVM's `mcpu` implies that the CPU does not report, sorted."""
    if flags is None:
        return []
    flags = {_normalised(f) for f in flags}
    implied = tvm.target.codegen.llvm_get_cpu_features(tvm.target.Target({"kind": "llvm", "mcpu": mcpu}))
    return sorted(f for f in map(str, implied) if f.startswith(_CHECKED_PREFIXES)
                  and not f.startswith(_UNCHECKED_PREFIXES) and _normalised(f) not in flags)


@functools.cache
def _this_cpu() -> tuple[str, tuple[str, ...]]:
    """(LLVM's name for this CPU, the extensions it lacks): fixed for the process, and asked for
    with every target the profiler and the passes build."""
    mcpu = str(tvm.target.codegen.llvm_get_system_cpu())
    return mcpu, tuple(missing_features(mcpu, cpuinfo_flags()))


def host_target(num_cores: int | None = None, flags: set[str] | None = None) -> dict:
    """This CPU as a TVM target dict (`flags` in place of this machine's /proc/cpuinfo)."""
    mcpu, missing = _this_cpu()
    if flags is not None:
        missing = missing_features(mcpu, flags)
    target = {"kind": "llvm", "mcpu": mcpu}
    if missing:
        target["mattr"] = [f"-{f}" for f in missing]
    if num_cores is not None:
        target["num-cores"] = num_cores
    return target
