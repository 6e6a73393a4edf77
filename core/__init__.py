"""quatrain: a poetry autoencoder whose encoder-decoder attention runs on interchangeable backends.

Names load on first use, so that ``quatrain --help`` and plugin metadata do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._checkpoint import STANDARD_KEYS as STANDARD_KEYS
    from ._checkpoint import CheckpointInfo as CheckpointInfo
    from ._checkpoint import atomic_write_bytes as atomic_write_bytes
    from ._checkpoint import check_loadable as check_loadable
    from ._checkpoint import load as load
    from ._checkpoint import read_info as read_info
    from ._checkpoint import save as save
    from ._config import ModelConfig as ModelConfig
    from ._contract import AttentionBackend as AttentionBackend
    from ._contract import Capabilities as Capabilities
    from ._contract import Hardware as Hardware
    from ._contract import Reason as Reason
    from ._contract import key_padding_guard as key_padding_guard
    from ._distributed import world_from_env as world_from_env
    from ._errors import BackendUnavailableError as BackendUnavailableError
    from ._errors import CheckpointError as CheckpointError
    from ._errors import CheckpointLayoutError as CheckpointLayoutError
    from ._errors import ConfigError as ConfigError
    from ._errors import PluginError as PluginError
    from ._errors import PluginWarning as PluginWarning
    from ._errors import QuatrainError as QuatrainError
    from ._errors import UnknownBackendError as UnknownBackendError
    from ._evaluate import data_for_checkpoint as data_for_checkpoint
    from ._evaluate import evaluate as evaluate
    from ._evaluate import evaluate_checkpoint as evaluate_checkpoint
    from ._loss import reconstruction_loss as reconstruction_loss
    from ._loss import token_cosine as token_cosine
    from ._model import Autoencoder as Autoencoder
    from ._model import AutoencoderOutput as AutoencoderOutput
    from ._precision import precision_problem as precision_problem
    from ._recipe import TrainConfig as TrainConfig
    from ._recipe import paths_for as paths_for
    from ._recipe import prepare_data as prepare_data
    from ._recipe import resolve_device as resolve_device
    from ._reconstruct import plot_attention as plot_attention
    from ._reconstruct import reconstruct_lines as reconstruct_lines
    from ._train import TrainResult as TrainResult
    from ._train import train as train
    from ._trainstate import read_state as read_state
    from ._trainstep import GraphFallbackWarning as GraphFallbackWarning
    from ._trainstep import InferenceStep as InferenceStep
    from ._trainstep import TrainStep as TrainStep
    from .hookspecs import hookimpl as hookimpl

_EXPORTS = {
    "CheckpointInfo": "._checkpoint",
    "STANDARD_KEYS": "._checkpoint",
    "atomic_write_bytes": "._checkpoint",
    "check_loadable": "._checkpoint",
    "load": "._checkpoint",
    "read_info": "._checkpoint",
    "save": "._checkpoint",
    "ModelConfig": "._config",
    "AttentionBackend": "._contract",
    "Capabilities": "._contract",
    "Hardware": "._contract",
    "Reason": "._contract",
    "key_padding_guard": "._contract",
    "BackendUnavailableError": "._errors",
    "CheckpointError": "._errors",
    "CheckpointLayoutError": "._errors",
    "ConfigError": "._errors",
    "PluginError": "._errors",
    "PluginWarning": "._errors",
    "QuatrainError": "._errors",
    "UnknownBackendError": "._errors",
    "reconstruction_loss": "._loss",
    "token_cosine": "._loss",
    "Autoencoder": "._model",
    "AutoencoderOutput": "._model",
    "precision_problem": "._precision",
    "TrainConfig": "._recipe",
    "resolve_device": "._recipe",
    "prepare_data": "._recipe",
    "paths_for": "._recipe",
    "TrainResult": "._train",
    "evaluate": "._evaluate",
    "data_for_checkpoint": "._evaluate",
    "evaluate_checkpoint": "._evaluate",
    "train": "._train",
    "GraphFallbackWarning": "._trainstep",
    "InferenceStep": "._trainstep",
    "TrainStep": "._trainstep",
    "hookimpl": ".hookspecs",
    "world_from_env": "._distributed",
    "read_state": "._trainstate",
    "plot_attention": "._reconstruct",
    "reconstruct_lines": "._reconstruct",
}

__all__ = [
    "STANDARD_KEYS",
    "AttentionBackend",
    "Autoencoder",
    "AutoencoderOutput",
    "BackendUnavailableError",
    "Capabilities",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointLayoutError",
    "ConfigError",
    "GraphFallbackWarning",
    "Hardware",
    "InferenceStep",
    "ModelConfig",
    "PluginError",
    "PluginWarning",
    "QuatrainError",
    "Reason",
    "TrainConfig",
    "TrainResult",
    "TrainStep",
    "UnknownBackendError",
    "atomic_write_bytes",
    "check_loadable",
    "data_for_checkpoint",
    "evaluate",
    "evaluate_checkpoint",
    "hookimpl",
    "key_padding_guard",
    "load",
    "paths_for",
    "plot_attention",
    "precision_problem",
    "prepare_data",
    "read_info",
    "read_state",
    "reconstruct_lines",
    "reconstruction_loss",
    "resolve_device",
    "save",
    "token_cosine",
    "train",
    "world_from_env",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'quatrain' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
