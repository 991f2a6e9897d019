"""One-file checkpoints that load with torch.load(weights_only=True).

Only tensors and plain Python values go in, so loading never has to unpickle
arbitrary objects, and a file from elsewhere cannot run code when it is loaded.
"""
from __future__ import annotations

import os
import pickle
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


def read_payload(path: str | os.PathLike, fmt: str, versions, map_location: str | torch.device = "cpu") -> dict:
    """The payload of a checkpoint of format `fmt` in one of `versions`; CheckpointError,
    naming the file, for anything else. Every kind of checkpoint of the project is read here."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({exc})") from exc

    if not isinstance(payload, dict) or payload.get("format") != fmt:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: format is {got!r}, expected {fmt!r}")
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
