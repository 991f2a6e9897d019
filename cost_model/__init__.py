"""Learning side of nar-tvm: NAR-Former V2 latency prediction from OpGraphs.

Needs torch but never tvm, so models can be trained and used where TVM is absent.
"""
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .metrics import acc_within, kendall_tau, mape, regression_report, relative_error, rmse, spearman
from .model import ModelOutput, NARFormerV2, NARFormerV2Config
from .predictor import LatencyPredictor, PredictionResult
from .tokenizer import GraphTokens, Tokenizer, TokenizerConfig, Vocabulary, collate
from .train import TrainConfig, TrainHistory, train
from . import calibration, uncertainty  # noqa: E402,F401 - submodules, loaded on import for users

__all__ = [
    "CheckpointError", "load_checkpoint", "save_checkpoint",
    "acc_within", "kendall_tau", "mape", "regression_report", "relative_error", "rmse", "spearman",
    "ModelOutput", "NARFormerV2", "NARFormerV2Config",
    "LatencyPredictor", "PredictionResult",
    "GraphTokens", "Tokenizer", "TokenizerConfig", "Vocabulary", "collate",
    "TrainConfig", "TrainHistory", "train",
]
