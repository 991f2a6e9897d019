"""Turn what a user has (ONNX file, ModelProto, torch module, IRModule) into a Relax IRModule."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import tvm


class ModelLoadError(ValueError):
    """The model cannot be loaded; the message names the file, input or op at fault."""


@dataclass
class LoadedModel:
    mod: tvm.IRModule
    name: str
    frontend: str
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    input_dtypes: dict[str, str] = field(default_factory=dict)


def parse_input_shapes(specs: list[str] | None) -> dict[str, list[int]]:
    """`name=1,3,224,224` (or just `1,3,224,224` for a single input) -> {name: [dims]}."""
    shapes: dict[str, list[int]] = {}
    for spec in specs or []:
        name, _, dims = spec.rpartition("=")
        try:
            shapes[name] = [int(d) for d in dims.replace("x", ",").split(",") if d]
        except ValueError as exc:
            raise ModelLoadError(f"bad --input-shape {spec!r}: expected NAME=D0,D1,... with integers") from exc
    return shapes


# ----------------------------------------------------------------------- ONNX

def _materialize_stripped_weights(model) -> int:
    """Latency datasets publish ONNX files whose initializers keep shapes but no data;
    prediction needs shapes only, so such tensors are filled with zeros."""
    from onnx import TensorProto, helper, numpy_helper

    filled = 0
    for init in model.graph.initializer:
        external = init.data_location == TensorProto.EXTERNAL
        has_data = init.raw_data or any(
            len(getattr(init, f)) for f in ("float_data", "int32_data", "int64_data", "double_data",
                                            "uint64_data", "string_data")
        )
        if has_data and not external:
            continue
        if not init.dims and not external and init.data_type != 0:
            continue  # a genuine empty scalar list is rare; leave the importer to judge
        dtype = helper.tensor_dtype_to_np_dtype(init.data_type)
        zeros = numpy_helper.from_array(np.zeros(list(init.dims), dtype=dtype), init.name)
        init.CopyFrom(zeros)
        filled += 1
    return filled


def _onnx_inputs(model) -> dict[str, tuple[list, str]]:
    from onnx import helper

    init_names = {i.name for i in model.graph.initializer}
    found = {}
    for inp in model.graph.input:
        if inp.name in init_names:
            continue
        tt = inp.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
                for d in tt.shape.dim]
        found[inp.name] = (dims, str(helper.tensor_dtype_to_np_dtype(tt.elem_type)))
    return found


def load_onnx(source, input_shapes: dict[str, list[int]] | None = None, name: str | None = None) -> LoadedModel:
    import onnx

    label = (name or "onnx-model") if isinstance(source, (onnx.ModelProto, bytes)) else str(source)
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
    elif isinstance(source, bytes):
        try:
            model = onnx.load_from_string(source)
        except Exception as exc:  # noqa: BLE001 - protobuf raises several unrelated types
            raise ModelLoadError(f"{label}: not an ONNX model ({exc.__class__.__name__}: {exc})") from exc
    else:
        path = Path(source)
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such file")
        try:
            # External data may be missing next to a published file: shapes suffice.
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - protobuf raises several unrelated types
            raise ModelLoadError(f"{path}: not an ONNX model ({exc.__class__.__name__}: {exc})") from exc
        if not model.graph.node:
            raise ModelLoadError(f"{path}: not an ONNX model (no graph nodes)")
        name = name or path.stem
    _materialize_stripped_weights(model)

    declared = _onnx_inputs(model)
    given = dict(input_shapes or {})
    if "" in given:  # a bare shape applies to the only input
        if len(declared) != 1:
            raise ModelLoadError(f"{label}: has inputs {list(declared)}; name the input in --input-shape")
        given[next(iter(declared))] = given.pop("")
    unknown = set(given) - set(declared)
    if unknown:
        raise ModelLoadError(f"{label}: --input-shape names {sorted(unknown)}, but the inputs are {list(declared)}")
    shapes, dtypes = {}, {}
    for inp, (dims, dtype) in declared.items():
        if inp in given:
            if len(given[inp]) != len(dims):
                raise ModelLoadError(f"{label}: input {inp!r} has rank {len(dims)} {dims}, "
                                     f"--input-shape gave {given[inp]}")
            shapes[inp] = given[inp]
        elif all(isinstance(d, int) for d in dims):
            shapes[inp] = dims
        else:
            raise ModelLoadError(
                f"{label}: input {inp!r} has dynamic shape {dims}; "
                f"give it with --input-shape {inp}={','.join(str(d) if isinstance(d, int) else 'N' for d in dims)}"
            )
        dtypes[inp] = dtype

    model = simplify_onnx(model, shapes)

    from tvm.relax.frontend.onnx import from_onnx

    try:
        mod = from_onnx(model, shape_dict=shapes, dtype_dict=dtypes)
    except Exception as exc:  # noqa: BLE001 - the importer raises bare TVMError/ValueError/KeyError
        ops = sorted({n.op_type for n in model.graph.node})
        raise ModelLoadError(f"{label}: TVM's ONNX importer failed ({exc.__class__.__name__}: "
                             f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}); "
                             f"ops in the model: {', '.join(ops)}") from exc
    return LoadedModel(mod, name or "onnx-model", "onnx", shapes, dtypes)


def _op_domains(model) -> set[str]:
    return {node.domain or "ai.onnx" for node in model.graph.node}


def simplify_onnx(model, shapes: dict[str, list[int]]):
    """The model with its input shapes fixed and shape arithmetic constant-folded, for TVM.

    Legacy torch exports compute shapes at run time (Shape/Gather/Concat), which TVM's importer
    rejects; onnxsim folds them away once the input shapes are fixed. onnxsim's optimizer also
    rewrites some patterns into ONNX Runtime's own operators (BERT's self-attention becomes one
    `com.microsoft` Attention node), which TVM's importer cannot take or only partly; when a
    domain the model did not use appears, the model is simplified again without the optimizer's
    rewrites. Constant folding alone never changes the operator set, so models that never meet
    such a rewrite (every zoo family) keep the graph they always had. onnxsim's folder prints a
    line to the process's stderr for every node it cannot evaluate ahead of time (hundreds for a
    Swin transformer's shifted-window masks); those nodes simply stay in the graph, so the lines
    are dropped. If simplification fails, TVM gets the model as it was.
    """
    onnxsim = import_onnxsim()
    # Custom operator schemas from the Python onnx registry: TVM's importer has no converter
    # for a custom op either, and copying the registry costs ~10 ms per model.
    options = dict(overwrite_input_shapes=shapes, check_n=0, import_custom_schemas=False)
    try:
        with _native_stderr_dropped():
            simplified, ok = onnxsim.simplify(model, **options)
            if ok and not _op_domains(simplified) <= _op_domains(model):
                simplified, ok = onnxsim.simplify(model, perform_optimization=False, **options)
    except Exception:  # noqa: BLE001 - the simplifier is an optimisation; TVM gets the original
        return model
    return simplified if ok else model


@contextmanager
def _native_stderr_dropped():
    """Discard what native code writes to file descriptor 2 meanwhile (Python's own
    sys.stderr is flushed first, so nothing of ours is lost)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_onnxsim():
    """onnxsim, imported without its optional sympy dependency.

    onnxsim's package imports sympy (half a second, more than the rest of onnxsim once torch is
    loaded) only to print symbolic shape formulas in its model summaries, which `simplify` never
    uses; onnxsim treats a missing sympy as a supported configuration. Blocking sympy for the
    duration of the import keeps a prediction's start-up short; simplified graphs are identical
    (tests/test_zoo.py), and sympy stays importable for torch afterwards.
    """
    if "onnxsim" in sys.modules or "sympy" in sys.modules:
        import onnxsim
        return onnxsim
    sys.modules["sympy"] = None  # makes `import sympy` raise ImportError
    try:
        import onnxsim
    finally:
        if sys.modules.get("sympy", 0) is None:
            del sys.modules["sympy"]
    return onnxsim


# ---------------------------------------------------------------------- torch
def load_torch(module, example_inputs, name: str | None = None) -> LoadedModel:
    import torch
    from tvm.relax.frontend.torch import from_exported_program

    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    module = module.eval()
    try:
        with torch.no_grad():
            exported = torch.export.export(module, example_inputs)
        mod = from_exported_program(exported)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{name or type(module).__name__}: torch.export/TVM import failed: "
                             f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    shapes = {f"input{i}": list(t.shape) for i, t in enumerate(example_inputs)}
    dtypes = {f"input{i}": str(t.dtype).replace("torch.", "") for i, t in enumerate(example_inputs)}
    return LoadedModel(mod, name or type(module).__name__, "torch.export", shapes, dtypes)


def load_model(source, input_shapes=None, example_inputs=None, name: str | None = None) -> LoadedModel:
    """Load an ONNX path/ModelProto, a torch module (with `example_inputs`) or an IRModule."""
    if isinstance(source, tvm.IRModule):
        return LoadedModel(source, name or "irmodule", "relax")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix.lower() not in (".onnx", "") and path.is_file():
            raise ModelLoadError(f"{path}: unsupported model file type {path.suffix!r}; expected an .onnx file")
        return load_onnx(path, input_shapes, name)
    try:
        import onnx

        if isinstance(source, onnx.ModelProto):
            return load_onnx(source, input_shapes, name)
    except ImportError:
        pass
    try:
        import torch

        if isinstance(source, torch.nn.Module):
            if example_inputs is None:
                raise ModelLoadError("a torch module needs example_inputs to be exported")
            return load_torch(source, example_inputs, name)
    except ImportError:
        pass
    raise ModelLoadError(f"cannot load a model from a {type(source).__name__}; "
                         "give an .onnx path, an onnx.ModelProto, a torch.nn.Module or a tvm.IRModule")
