"""`nar-tvm calibrate` and `nar-tvm probe`: adapt a predictor to the machine it runs on.

Calibration measures the machine speed probe and K zoo models on this machine (through the
profiler, so with the training data's protocol, pinning and threads), fits the adaptations
of `cost_model.calibration` and keeps the one with the lowest leave-one-out error on the K
shots. The calibrated checkpoint records this machine (fingerprint, probe, machine id) and is
written where `predict`, `compare`, `compile --select` and `select-device` look for one first.

The shots are zoo models with seeds no training or evaluation set uses, taken round-robin
over the families, so any K spans the model kinds the predictor was trained on. Measured
shots are kept in a dataset store beside the checkpoint: calibrating again (more shots,
another checkpoint) measures only what is new.

`--models` adds the user's own models (ONNX files or zoo specs) as shots. A family the
predictor never saw is mispredicted in a way of its own (bert at a median 0.64x of its time),
which zoo shots cannot see; about ten measured models of that family bring its interval's
coverage near the nominal 90% and its error down by a third to a half, three are too few
(`benchmarks/calibration_report.md`). The calibrated predictor then speaks for models like
the shots. Own models are keyed by their content, so calibrating again skips the files
already measured and measures a changed file anew.
"""
from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from pathlib import Path

# Seeds of the calibration shots: far from the training seeds (0..) and the held-out
# cross-machine panel (5000..), so no shot is a model the predictor trained or is judged on.
SHOT_SEED_BASE = 9000


def home() -> Path:
    """Where calibrated checkpoints and their shots live (`NAR_TVM_HOME`, else ~/.cache/nar-tvm)."""
    return Path(os.environ.get("NAR_TVM_HOME") or Path.home() / ".cache" / "nar-tvm")


def machine_id() -> str:
    """This machine, as far as the OS says: /etc/machine-id plus the host name.

    Cloned VM images can share a machine id; the probe (`nar-tvm probe --checkpoint`) is
    the measured check.
    """
    import platform as _platform

    try:
        ident = Path("/etc/machine-id").read_text().strip()
    except OSError:
        ident = ""
    return f"{ident or 'unknown'}@{_platform.node()}"


def calibrated_path(base_checkpoint: Path) -> Path:
    """Where this machine's calibration of `base_checkpoint` lives: one per checkpoint and machine."""
    import hashlib

    digest = hashlib.sha256(f"{Path(base_checkpoint).resolve()}|{machine_id()}".encode()).hexdigest()[:12]
    return home() / "calibrated" / f"{Path(base_checkpoint).stem}-{digest}.pt"


def find_calibrated(base_checkpoint: Path) -> Path | None:
    """The calibrated checkpoint of `base_checkpoint` for this machine, if one was made."""
    path = calibrated_path(base_checkpoint)
    return path if path.is_file() else None


def shot_models(k: int, families) -> list[tuple[str, int]]:
    families = list(families)
    return [(families[i % len(families)], SHOT_SEED_BASE + i // len(families)) for i in range(k)]


def own_model_job(spec: str, input_shapes: dict | None = None) -> tuple[str, callable]:
    """(job key, make_job) for a user's model: an ONNX path or a `zoo:FAMILY:SEED` spec.

    A file is keyed by a digest of its bytes and of the input shapes it is given, not by its
    path: the same file measured again is skipped, an edited one is a new shot."""
    import hashlib
    import json

    from . import zoo
    from .compare import model_bytes
    from .profiler import Job, zoo_entry

    if spec.startswith("zoo:"):
        return zoo_entry(*zoo.parse_spec(spec))
    name, data = model_bytes(spec)  # a missing file fails here, before anything is measured
    digest = hashlib.sha256(data + json.dumps(input_shapes or {}, sort_keys=True).encode()).hexdigest()[:16]
    key = f"file:{name}:{digest}"
    return key, lambda: Job(key=key, name=name, onnx_bytes=data, input_shapes=input_shapes,
                            params={"source": str(Path(spec).resolve())})


def calibrate(predictor, shots: int = 10, cpu_affinity=None, protocol=None, store_dir: Path | None = None,
              progress: bool = True, families=None, models=(), input_shapes: dict | None = None):
    """Measure the probe, `shots` zoo models and the user's `models` here; return
    (fit, probe, fingerprint, records)."""
    from nar_tvm.cost_model import calibration
    from nar_tvm.passes.opgraph import OpGraph

    from . import zoo
    from .dataset import DatasetStore
    from .measure import Protocol
    from .platform import PlatformSpec
    from .profiler import Profiler, WorkerConfig, zoo_entry

    if shots < 0 or (shots == 0 and not models):
        raise ValueError(f"--shots must be at least 1 (or 0 with --models), got {shots}")
    own = [own_model_job(m, input_shapes) for m in models]
    level = predictor.provenance.get("level", "op")
    spec = PlatformSpec(pipeline=predictor.platform.get("pipeline", "default"),
                        threads=int(predictor.platform.get("threads", 1)))
    cfg = WorkerConfig(spec, protocol or Protocol(), cpu_affinity=cpu_affinity)
    store_dir = store_dir or home() / "calibration-shots"
    profiler = Profiler(DatasetStore(store_dir), cfg)
    # Shots span the families the predictor learned: a family it never saw would calibrate
    # the machine and the model's blind spot at once.
    families = families or predictor.provenance.get("families") or zoo.FAMILIES
    jobs = [zoo_entry(f, s) for f, s in shot_models(shots, families)] + own
    try:
        profiler.measure_probe()
        profiler.profile(jobs, progress=progress)
    finally:
        profiler.close()
    keys = {profiler.job_id(key) for key, _ in jobs}
    own_keys = {profiler.job_id(key): spec for (key, _), spec in zip(own, models)}
    records = {}
    for r in DatasetStore(store_dir).records():
        if r["job"] in keys and r["status"] == "ok":
            records[r["job"]] = r
        elif r["job"] in own_keys and r["status"] == "failed":
            # The user named this model: dropping it silently would calibrate on less than asked.
            reason = (str(r.get("error") or "").strip().splitlines() or ["no error recorded"])[-1]
            print(f"warning: {own_keys[r['job']]} could not be measured ({r.get('stage')}): {reason}",
                  file=sys.stderr)
    # A shot whose graph duplicates an earlier one is stored once; it is then not a new shot.
    records = [records[k] for k in sorted(records)]
    if not records:
        raise RuntimeError(f"none of the {len(jobs)} calibration models could be measured; see {store_dir}")
    graphs = [OpGraph.from_dict(r["graphs"][level]) for r in records]
    measured = [r["measurement"]["median_ms"] for r in records]
    fit = calibration.fit(predictor, graphs, measured)
    return fit, profiler.probe, profiler.fingerprint, records


def calibrated_predictor(predictor, fit, probe: dict, fingerprint: dict, base_checkpoint: str):
    """A copy of `predictor` that carries the calibration and this machine's identity."""
    from nar_tvm.cost_model import LatencyPredictor

    from .platform import platform_id

    provenance = dict(predictor.provenance)
    provenance["calibration"] = {
        "method": fit.method, "params": fit.params, "loo_mape": fit.loo_mape, "shots": fit.shots,
        # The interval a calibrated prediction gets at least: the shots' leave-one-out error,
        # the choice of method included (CalibrationFit.half_width).
        "q": fit.half_width(),
        "probe": probe, "machine_id": machine_id(), "base_checkpoint": str(base_checkpoint),
        "base_platform": dict(predictor.platform),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    platform = dict(fingerprint, platform_id=platform_id(fingerprint))
    model = fit.model if fit.model is not None else predictor.model
    return LatencyPredictor(predictor.tokenizer, model, platform, provenance)


def machine_warnings(predictor) -> list[str]:
    """Why the predictor may not hold here: another machine than the one it was calibrated on."""
    cal = predictor.calibration
    if not cal:
        return []
    if cal.get("machine_id") != machine_id():
        return [f"calibrated on machine {cal.get('machine_id')!r}, this is {machine_id()!r}: "
                "run `nar-tvm calibrate` here"]
    return []


# ------------------------------------------------------------------------- CLI
def cmd_calibrate(args) -> int:
    from nar_tvm.cost_model import save_checkpoint

    from .api import load_predictor, resolve_base_checkpoint
    from .loaders import parse_input_shapes
    from .measure import Protocol

    base = resolve_base_checkpoint(args.checkpoint)
    # The base itself: recalibrating starts from the trained weights, not from an earlier calibration.
    predictor = load_predictor(base, use_calibration=False)
    if predictor.calibration:
        raise ValueError(f"{base} is already calibrated (for {predictor.calibration['machine_id']}); "
                         f"calibrate its base checkpoint {predictor.calibration['base_checkpoint']}")
    affinity = [int(c) for c in args.cpu_affinity.split(",")] if args.cpu_affinity else None
    shots = args.shots if args.shots is not None else (0 if args.models else 10)
    fit, probe, fingerprint, records = calibrate(predictor, shots, affinity, Protocol(repeat=args.repeat),
                                                 Path(args.store) if args.store else None, models=args.models or (),
                                                 input_shapes=parse_input_shapes(args.input_shape) or None)
    calibrated = calibrated_predictor(predictor, fit, probe, fingerprint, base)
    out = Path(args.out) if args.out else calibrated_path(base)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(calibrated, out)
    print(f"measured {len(records)} shots; leave-one-out MAPE on them by method: "
          + ", ".join(f"{m} {v:.3f}" for m, v in fit.loo_mape.items()))
    print(f"chose {fit.method}; wrote {out}")
    if not args.out:
        print("predict, compare, compile --select and select-device use it on this machine "
              "when no --checkpoint is given")
    return 0


def cmd_probe(args) -> int:
    from .measure import Protocol, Session
    from .platform import PlatformSpec
    from .probe import Probe, describe, measure_probe

    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    if args.cpu_affinity:
        os.sched_setaffinity(0, [int(c) for c in args.cpu_affinity.split(",")])
    spec = PlatformSpec(threads=args.threads)
    probe = measure_probe(spec, Session(spec), Protocol())
    reference = None
    if args.checkpoint:
        from .api import load_predictor

        cal = load_predictor(args.checkpoint).calibration or {}
        if not cal.get("probe"):
            print(f"{args.checkpoint} records no machine probe (it is not calibrated)", file=sys.stderr)
        else:
            reference = Probe.from_dict(cal["probe"])
    print(describe(probe, reference))
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("calibrate", help="adapt a predictor to this machine from a few measured models",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("--shots", type=int, help="zoo models to measure here (default 10, or 0 with --models)")
    p.add_argument("--models", nargs="+", metavar="MODEL",
                   help="your own models to calibrate on as well (ONNX paths or zoo:FAMILY:SEED): "
                        "the calibration then fits models like them, a family the predictor never saw too")
    p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                   help="fixes a dynamic input dimension of the --models files")
    p.add_argument("--checkpoint", help="predictor to calibrate (default: the one shipped with nar-tvm)")
    p.add_argument("--out", help="calibrated checkpoint to write (default: this machine's entry in "
                                 "$NAR_TVM_HOME/calibrated, which the other commands pick up)")
    p.add_argument("--store", help="dataset folder for the measured shots (default: $NAR_TVM_HOME/calibration-shots)")
    p.add_argument("--cpu-affinity", help="cores to pin the measuring process to, e.g. 1")
    p.add_argument("--repeat", type=int, default=5)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("probe", help="measure this machine's speed probe (and compare with a calibrated checkpoint)")
    p.add_argument("--checkpoint", help="compare with the probe recorded in this calibrated checkpoint")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cpu-affinity", help="cores to pin the measurement to")
    p.set_defaults(func=cmd_probe)
