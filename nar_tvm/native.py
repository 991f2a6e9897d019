"""The native measurement runner (`nar-tvm-runner`, built from native/ with CMake).

Measures a library exported by `tvm.compile(...).export_library(path)` in its own
process, without a Python interpreter, with the same protocol as the in-process
evaluator in `measure.py`. This module finds the binary, runs it and parses its JSON;
as a script it prints where the installed wheels keep the headers and libraries the
runner is built against (CMakeLists.txt calls it):

    python nar_tvm/native.py --cmake-vars    # VAR=value lines, read by CMakeLists.txt
    python nar_tvm/native.py --cmake-args    # -DVAR=value ..., for a cmake command line

It imports only the standard library at module level so that it runs as a plain
script, before (or without) the package being installed.
"""
from __future__ import annotations

import os
import sys

if __name__ == "__main__" and sys.path and \
        os.path.realpath(sys.path[0] or ".") == os.path.dirname(os.path.realpath(__file__)):
    # Run as a script: drop nar_tvm/ from the path, or its platform.py shadows the stdlib's.
    del sys.path[0]

import importlib.util
import json
import resource
import shutil
import subprocess
import time
from pathlib import Path

RUNNER_NAME = "nar-tvm-runner"
ENV_VAR = "NAR_TVM_RUNNER"
REPO_ROOT = Path(__file__).resolve().parent.parent


class RunnerNotBuilt(FileNotFoundError):
    """The native runner binary is nowhere to be found (the CLI reports it as an error)."""

    def __init__(self, searched: list[str]):
        self.searched = searched
        super().__init__(
            f"the native runner `{RUNNER_NAME}` is not built (looked in: {', '.join(searched)}).\n"
            f"Build it from the repository root with:\n{build_commands()}\n"
            f"or point ${ENV_VAR} at a built binary."
        )


class RunnerError(RuntimeError):
    """The runner ran but failed (bad library, bad input spec, crash)."""


def build_commands(python: str | None = None) -> str:
    python = python or sys.executable
    return (f"  cd {REPO_ROOT}\n"
            f"  cmake -S . -B build -DPython3_EXECUTABLE={python}\n"
            f"  cmake --build build -j2")


def find_runner(required: bool = True) -> str | None:
    """$NAR_TVM_RUNNER, then build/native/nar-tvm-runner in the repository, then PATH."""
    searched = []
    env = os.environ.get(ENV_VAR)
    if env:
        searched.append(f"${ENV_VAR}={env}")
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return os.path.abspath(env)
        if required:
            raise RunnerNotBuilt(searched)
        return None
    local = REPO_ROOT / "build" / "native" / RUNNER_NAME
    searched.append(str(local))
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    searched.append("PATH")
    found = shutil.which(RUNNER_NAME)
    if found:
        return found
    if required:
        raise RunnerNotBuilt(searched)
    return None


def input_spec(shape, dtype) -> str:
    """`float32:1,3,32,32` for the runner's --input."""
    return f"{dtype}:{','.join(str(int(d)) for d in shape)}"


def runner_command(runner: str, library: str, inputs, protocol=None, threads: int = 1,
                   cpu_affinity=None, seed: int = 0) -> list[str]:
    warmup, repeat, min_repeat_ms = _protocol_fields(protocol)
    cmd = [runner, "--lib", os.path.abspath(library)]
    for spec in inputs:
        cmd += ["--input", spec if isinstance(spec, str) else input_spec(*spec)]
    cmd += ["--warmup", str(warmup), "--repeat", str(repeat), "--min-repeat-ms", str(min_repeat_ms),
            "--threads", str(threads), "--seed", str(seed), "--die-with-parent"]
    if cpu_affinity:
        cmd += ["--cpu-affinity", ",".join(str(int(c)) for c in cpu_affinity)]
    return cmd


def _protocol_fields(protocol) -> tuple[int, int, int]:
    if protocol is None:
        return 1, 5, 40
    if isinstance(protocol, dict):
        return int(protocol["warmup"]), int(protocol["repeat"]), int(protocol["min_repeat_ms"])
    return int(protocol.warmup), int(protocol.repeat), int(protocol.min_repeat_ms)


def measure_native(library, inputs, protocol=None, threads: int = 1, cpu_affinity=None,
                   runner: str | None = None, timeout: float | None = None, seed: int = 0) -> dict:
    """Time an exported library with the native runner in a subprocess.

    `library`: a `.so` from `export_library`, or an executable (relax `VMExecutable`), which
    is exported to a temporary folder first. `inputs`: one per parameter of `main`, each a
    (shape, dtype) pair or a ready `"dtype:d0,d1"` string. Returns the runner's JSON object.
    """
    runner = runner or find_runner()
    if not isinstance(library, (str, os.PathLike)):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="nar-tvm-native-") as tmp:
            path = os.path.join(tmp, "model.so")
            library.export_library(path)
            return measure_native(path, inputs, protocol, threads, cpu_affinity, runner, timeout, seed)
    cmd = runner_command(runner, os.fspath(library), inputs, protocol, threads, cpu_affinity, seed)
    children0, wall0 = children_cpu_s(), time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RunnerError(f"{RUNNER_NAME} timed out after {timeout:.0f} s") from exc
    if proc.returncode != 0:
        why = f"exit code {proc.returncode}" if proc.returncode > 0 else f"killed by signal {-proc.returncode}"
        raise RunnerError(f"{RUNNER_NAME} failed ({why}): {proc.stderr.strip()[-2000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RunnerError(f"{RUNNER_NAME} printed no JSON: {proc.stdout.strip()[-500:]!r}")
    # Over the runner's whole life (loading the library too, also CPU-bound): see SHARED_CORE_BELOW.
    return {**json.loads(lines[-1]), "cpu_share": cpu_share(children_cpu_s() - children0, time.perf_counter() - wall0)}


# The timer reads wall-clock time, so a core shared with other work inflates every repeat alike
# and the CV stays low: only the CPU time the timed process got, against the wall time it
# waited, shows it. Below this share of one core, the timing was not the core's only work. A
# multi-threaded timing reads above one, so there only a starvation below one core shows.
SHARED_CORE_BELOW = 0.9


def shared_core(share: float | None) -> bool:
    """Whether a timing with this `cpu_share` ran beside other work on its core (None: not recorded)."""
    return share is not None and share < SHARED_CORE_BELOW


def cpu_share(cpu_s: float, wall_s: float) -> float:
    """CPU seconds a timing used per wall-clock second: about 1 for one thread on a quiet core."""
    return round(cpu_s / wall_s, 3) if wall_s > 0 else float("nan")


def children_cpu_s() -> float:
    """CPU seconds used so far by this process's finished children (the runner's runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ----------------------------------------------------------- build configuration
def _load_module_file(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wheel_paths() -> dict[str, str]:
    """Headers and libraries of the installed tvm-ffi and TVM wheels, from their libinfo.

    TVM's libinfo is loaded from its file, so the (heavy) compiler library is not loaded.
    TVM's own runtime headers are not used: they include tvm/support/io.h, which the wheel
    does not ship; the runner needs only tvm-ffi's headers.
    """
    from tvm_ffi import libinfo as ffi_info

    tvm_spec = importlib.util.find_spec("tvm")
    if tvm_spec is None or not tvm_spec.submodule_search_locations:
        raise RuntimeError("the apache-tvm wheel is not installed in this interpreter")
    tvm_dir = Path(list(tvm_spec.submodule_search_locations)[0])
    tvm_info = _load_module_file("_nar_tvm_tvm_libinfo", tvm_dir / "libinfo.py")
    return {
        "NAR_TVM_FFI_INCLUDE_DIR": str(ffi_info.find_include_path()),
        "NAR_TVM_DLPACK_INCLUDE_DIR": str(ffi_info.find_dlpack_include_path()),
        "NAR_TVM_FFI_LIBRARY": str(ffi_info.find_libtvm_ffi()),
        "NAR_TVM_RUNTIME_LIBRARY": str(tvm_info.find_libtvm_runtime()),
    }


def _main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Build configuration of the native runner.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--cmake-vars", action="store_true", help="VAR=value lines (for CMakeLists.txt)")
    group.add_argument("--cmake-args", action="store_true", help="-DVAR=value arguments for cmake")
    group.add_argument("--which", action="store_true", help="print the runner binary's path")
    args = parser.parse_args(argv)
    if args.which:
        try:
            print(find_runner())
        except RunnerNotBuilt as exc:
            print(exc, file=sys.stderr)
            return 1
        return 0
    paths = wheel_paths()
    if args.cmake_vars:
        for k, v in paths.items():
            print(f"{k}={v}")
    else:
        print(" ".join(f"-D{k}={v}" for k, v in paths.items()))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
