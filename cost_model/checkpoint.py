"""One-file checkpoints that load with torch.load(weights_only=True).

Only tensors and plain Python values go in, so loading never has to unpickle
arbitrary objects, and a file from elsewhere cannot run code when it is loaded.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict
from pathlib import Path

import torch

from .architectures import architecture_of, build_model, make_config
from .predictor import LatencyPredictor
from .tokenizer import Tokenizer

FORMAT = "nar-tvm.cost-model"
VERSION = 2
# Version 1 files predate the architecture field: they all hold a NAR-Former V2.
READABLE_VERSIONS = (1, 2)
_PLAIN = (str, int, float, bool, type(None))


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable, or not one this code can load."""


def _check_plain(value, where: str) -> None:
    # Exact types: weights_only loading refuses subclasses too (torch.__version__ is one).
    if type(value) is dict:
        for k, v in value.items():
            if type(k) not in _PLAIN:
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}, not a plain value")
            _check_plain(v, f"{where}[{k!r}]")
    elif type(value) in (list, tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif type(value) not in _PLAIN:
        # weights_only loading would refuse it, so refuse it when saving instead.
        raise TypeError(f"{where} is a {type(value).__name__}; checkpoints hold only plain Python values")


def write_payload(payload: dict, path: str | os.PathLike, plain_keys=()) -> Path:
    """Save a checkpoint's payload (its "format" tag and "version" included): the values
    under `plain_keys` are checked to be plain Python first, and the file is written whole
    or not at all. Every kind of checkpoint of the project is written here."""
    path = Path(path)
    if not isinstance(payload.get("format"), str) or not isinstance(payload.get("version"), int):
        raise ValueError("a checkpoint payload needs a 'format' tag and an integer 'version'")
    for key in plain_keys:
        _check_plain(payload[key], key)
    # Write-then-rename: an interrupted save must not leave a truncated checkpoint behind.
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


# What torch.save writes: a zip archive, or (before torch 1.6) a pickle stream.
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def _unreadable_reason(exc: Exception) -> str:
    """One line for why torch.load failed; torch's own messages run to several lines of advice
    about weights_only that do not apply to a file that is not a checkpoint."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (f"it holds a pickled {found.group(1)}, and checkpoints hold only tensors and plain values "
                "(a file saved by other code?)")
    if "Weights only load failed" in text:
        return "its pickle data is corrupt"
    if "zip archive" in text:
        return "truncated or corrupt zip archive"
    # torch's C++ checks prefix their message with the source location that failed.
    text = re.sub(r"^\[enforce fail at [^\]]*\][\s.]*", "", text.strip())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else exc.__class__.__name__


def read_payload(path: str | os.PathLike, fmt: str, versions, map_location: str | torch.device = "cpu") -> dict:
    """The payload of a checkpoint of format `fmt` in one of `versions`; CheckpointError,
    one line naming the file, for anything else. Every kind of checkpoint of the project is read here."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with path.open("rb") as fh:
        head = fh.read(4)
    if not head:
        raise CheckpointError(f"{path}: not a readable checkpoint: the file is empty")
    if not head.startswith(_TORCH_MAGIC):
        raise CheckpointError(f"{path}: not a readable checkpoint: the file starts with {head!r}, "
                              "not with the zip or pickle header that torch.save writes")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged file makes torch.load raise almost any type
        raise CheckpointError(f"{path}: not a readable checkpoint: {_unreadable_reason(exc)}") from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: not a nar-tvm checkpoint: it holds a {type(payload).__name__}, "
                              f"expected a dict with format {fmt!r}")
    if "format" not in payload:
        keys = ", ".join(sorted(map(str, payload))[:5]) + (", ..." if len(payload) > 5 else "")
        raise CheckpointError(f"{path}: not a nar-tvm checkpoint: a dict with no 'format' field "
                              f"(keys: {keys or 'none'}), expected format {fmt!r}")
    if payload["format"] != fmt:
        raise CheckpointError(f"{path}: format is {payload['format']!r}, expected {fmt!r}")
    if payload.get("version") not in versions:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')!r}, "
                              f"this code reads versions {tuple(versions)}")
    return payload


def save_checkpoint(predictor: LatencyPredictor, path: str | os.PathLike) -> Path:
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": architecture_of(predictor.model.cfg),
        "model_config": asdict(predictor.model.cfg),
        "state_dict": {k: v.detach().cpu() for k, v in predictor.model.state_dict().items()},
        "tokenizer": predictor.tokenizer.state_dict(),
        "platform": predictor.platform,
        "provenance": predictor.provenance,
    }
    return write_payload(payload, path, ("model_config", "tokenizer", "platform", "provenance"))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> LatencyPredictor:
    path = Path(path)
    payload = read_payload(path, FORMAT, READABLE_VERSIONS, map_location)
    missing = {"model_config", "state_dict", "tokenizer"} - payload.keys()
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {sorted(missing)}")
    try:
        cfg = make_config(payload.get("architecture", "nar-former-v2"), payload["model_config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    try:
        tokenizer = Tokenizer.from_state(payload["tokenizer"])
        if (cfg.token_dim, cfg.static_dim) != (tokenizer.token_dim, tokenizer.static_dim):
            raise ValueError(f"model expects tokens of width {cfg.token_dim} and {cfg.static_dim} static "
                             f"features, the tokenizer makes {tokenizer.token_dim} and {tokenizer.static_dim}")
        model = build_model(cfg)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: config and weights do not fit together: {exc}") from exc
    model.to(map_location).eval()
    return LatencyPredictor(tokenizer, model, payload.get("platform"), payload.get("provenance"))
