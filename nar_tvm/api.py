"""Python API mirroring the CLI: extract an OpGraph, predict latency."""
from __future__ import annotations

import math

from dataclasses import dataclass
from pathlib import Path

from nar_tvm.passes.opgraph import OpGraph

from .loaders import load_model


def load(model, input_shapes: dict | None = None, example_inputs=None, name: str | None = None):
    """`loaders.load_model`, and `zoo:FAMILY:SEED` specs as well (built and exported to ONNX)."""
    if isinstance(model, str) and model.startswith("zoo:"):
        import onnx

        from .compare import model_bytes

        zoo_name, data = model_bytes(model)
        model, name = onnx.load_from_string(data), name or zoo_name
    return load_model(model, input_shapes=input_shapes, example_inputs=example_inputs, name=name)


def extract(model, level: str = "op", input_shapes: dict | None = None, example_inputs=None,
            target=None, name: str | None = None) -> OpGraph:
    """OpGraph of `model` (ONNX path/ModelProto, `zoo:FAMILY:SEED`, torch module + example_inputs,
    or IRModule)."""
    from nar_tvm.passes.extract import extract_opgraph

    loaded = load(model, input_shapes, example_inputs, name)
    graph = extract_opgraph(loaded.mod, level, target, loaded.name)
    graph.meta.update({"frontend": loaded.frontend, "input_shapes": loaded.input_shapes})
    return graph


def _extract_or_error(model, level: str, input_shapes: dict | None):
    """(graph, None), or (None, the one-line reason) when the model cannot be extracted."""
    try:
        return extract(model, level, input_shapes), None
    except Exception as exc:  # noqa: BLE001 - one bad candidate must not end a batch of thousands
        message = str(exc).strip().splitlines()
        return None, message[-1] if message else type(exc).__name__


def iter_extract(models, level: str = "op", input_shapes: dict | None = None, jobs: int = 1,
                 keep_going: bool = False):
    """(model, OpGraph or None, error or None) for each of `models` (ONNX paths or
    `zoo:FAMILY:SEED` specs), in their order, as each is ready: a batch of thousands can be
    shown and saved as it goes. The first model that fails raises its own error, unless
    `keep_going`: then it comes out with the reason and the rest carry on.

    `jobs` > 1 extracts in worker processes. Extraction is single-threaded Python and TVM
    work, so a batch spreads over cores. Each worker is a fresh process (spawned: forking a
    process that holds torch and TVM is not safe) that imports TVM once (a few seconds of CPU)
    and keeps its own legalization cache; it pays off for batches of tens of models and more.
    It shortens the wait, not the CPU time per model.
    """
    models = list(models)
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    fn = _extract_or_error if keep_going else extract
    pool = None
    if jobs == 1 or len(models) < 2:
        results = (fn(m, level, input_shapes) for m in models)
    else:
        odd = [m for m in models if not isinstance(m, (str, Path))]
        if odd:
            raise ValueError(f"extracting in several processes takes ONNX paths and zoo: specs; "
                             f"got {type(odd[0]).__name__}")
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from itertools import repeat

        workers = min(jobs, len(models))
        # Contiguous chunks: neighbouring models of a batch often share operator signatures,
        # which a worker's legalization cache then lowers once.
        chunk = max(1, min(16, len(models) // (4 * workers)))
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(fn, map(str, models), repeat(level), repeat(input_shapes), chunksize=chunk)
    try:
        for m, result in zip(models, results):
            yield (m, *result) if keep_going else (m, result, None)
    finally:
        if pool is not None:
            # On an error or an interrupted consumer, the models not started are dropped, not extracted.
            pool.shutdown(wait=True, cancel_futures=True)


def extract_many(models, level: str = "op", input_shapes: dict | None = None, jobs: int = 1) -> list[OpGraph]:
    """OpGraphs of many ONNX paths or `zoo:FAMILY:SEED` specs (see `iter_extract`), in order;
    the first model that fails raises its own error."""
    return [graph for _, graph, _ in iter_extract(models, level, input_shapes, jobs)]


DEFAULT_CHECKPOINT = Path(__file__).parent / "checkpoints" / "default.pt"
# One predictor trained on every candidate pipeline's profiles: `compile --select`'s default.
PIPELINES_CHECKPOINT = Path(__file__).parent / "checkpoints" / "pipelines.pt"


class NoCheckpointError(FileNotFoundError):
    pass


def resolve_checkpoint(checkpoint=None, use_calibration: bool = True) -> Path:
    """The checkpoint asked for (by default the shipped one), or its calibration for this
    machine when `nar-tvm calibrate` made one."""
    base = resolve_base_checkpoint(checkpoint)
    if not use_calibration:
        return base
    from .calibrate import find_calibrated

    return find_calibrated(base) or base


def resolve_base_checkpoint(checkpoint=None) -> Path:
    if checkpoint is not None:
        return Path(checkpoint)
    if DEFAULT_CHECKPOINT.is_file():
        return DEFAULT_CHECKPOINT
    raise NoCheckpointError(
        "no trained default checkpoint ships with this installation; train one with "
        "`nar-tvm train DATASET --out model.pt` and pass --checkpoint model.pt"
    )


def platform_mismatch(checkpoint_platform: dict, spec=None) -> list[str]:
    """Fingerprint fields in which this machine differs from where the checkpoint's data was measured."""
    from .platform import PlatformSpec, fingerprint

    here = fingerprint(spec or PlatformSpec(threads=int(checkpoint_platform.get("threads", 1))))
    keys = ("cpu", "mcpu", "threads", "tvm", "pipeline", "device")
    return [f"{k}: checkpoint {checkpoint_platform.get(k)!r}, here {here.get(k)!r}"
            for k in keys if k in checkpoint_platform and str(checkpoint_platform[k]) != str(here.get(k))]


def predictor_warnings(predictor) -> list[str]:
    """Why `predictor` may not hold on this machine, one line each (empty: it was made here)."""
    from .calibrate import machine_warnings

    lines = [f"platform differs from the checkpoint's ({line})" for line in platform_mismatch(predictor.platform)]
    return lines + machine_warnings(predictor)


@dataclass
class Prediction:
    name: str
    latency_ms: float
    level: str
    nodes: int
    unknown_ops: int
    unknown_op_names: tuple
    # Nominal 90% interval and the "unlike the training data" flag (None: the checkpoint has
    # no interval fit; the interval alone: the graph is flagged and the checkpoint measured no
    # width for graphs unlike its training data).
    low_ms: float | None = None
    high_ms: float | None = None
    novel: bool | None = None
    # 1 when the graph's FLOPs and memory traffic lie within the training graphs' range; above 1,
    # that many times the largest; below 1, that fraction of the smallest (None: not recorded).
    size_factor: float | None = None


def load_predictor(checkpoint=None, use_calibration: bool = True):
    """Load once, predict many. A calibration of the checkpoint for this machine is preferred."""
    from nar_tvm.cost_model import load_checkpoint

    return load_checkpoint(resolve_checkpoint(checkpoint, use_calibration))


# Checkpoints `predict` has loaded, by (path, modification time, size): a changed file reloads.
_LOADED: dict[tuple, object] = {}


def _loaded_once(checkpoint=None):
    path = resolve_checkpoint(checkpoint)
    if not path.is_file():
        return load_predictor(path)  # its error names the file
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _LOADED:
        _LOADED.clear()  # one checkpoint at a time is the common case; keep memory flat
        _LOADED[key] = load_predictor(path)
    return _LOADED[key]


def predict(models, checkpoint=None, input_shapes: dict | None = None, example_inputs=None,
            predictor=None) -> list[Prediction]:
    """Predicted latency of one model or a list of them, in one batched forward pass.

    Models are OpGraphs or anything `extract` reads (ONNX paths, `zoo:FAMILY:SEED`,
    IRModules, torch modules). The checkpoint is loaded once and reused while its file is
    unchanged; `predictor=` (from `load_predictor`) skips even the check.
    """
    predictor = predictor or _loaded_once(checkpoint)
    level = predictor.provenance.get("level", "op")
    many = isinstance(models, (list, tuple))
    graphs = [m if isinstance(m, OpGraph) else extract(m, level, input_shapes, example_inputs)
              for m in (models if many else [models])]
    wrong = [g.name for g in graphs if g.level != level]
    if wrong:
        raise ValueError(f"graphs {wrong} are not at the checkpoint's level {level!r}")
    result = predictor.predict(graphs)
    def item(values, i, kind):
        return None if values is None or (kind is float and math.isnan(values[i])) else kind(values[i])

    out = [Prediction(g.name, float(result.latency_ms[i]), level, g.num_nodes, int(result.unknown_ops[i]),
                      tuple(result.unknown_op_names[i]), item(result.low_ms, i, float),
                      item(result.high_ms, i, float), item(result.novel, i, bool),
                      item(result.size_factor, i, float))
           for i, g in enumerate(graphs)]
    return out if many else out[0]
