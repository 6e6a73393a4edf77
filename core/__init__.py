"""quatrain: a poetry autoencoder whose encoder-decoder attention runs on interchangeable backends."""

from ._checkpoint import CheckpointInfo as CheckpointInfo
from ._checkpoint import load as load
from ._checkpoint import read_info as read_info
from ._checkpoint import save as save
from ._config import ModelConfig as ModelConfig
from ._contract import AttentionBackend as AttentionBackend
from ._contract import Capabilities as Capabilities
from ._contract import Hardware as Hardware
from ._contract import Reason as Reason
from ._contract import key_padding_guard as key_padding_guard
from ._errors import BackendUnavailableError as BackendUnavailableError
from ._errors import CheckpointError as CheckpointError
from ._errors import CheckpointLayoutError as CheckpointLayoutError
from ._errors import ConfigError as ConfigError
from ._errors import PluginError as PluginError
from ._errors import QuatrainError as QuatrainError
from ._errors import UnknownBackendError as UnknownBackendError
from ._loss import reconstruction_loss as reconstruction_loss
from ._loss import token_cosine as token_cosine
from ._model import Autoencoder as Autoencoder
from ._model import AutoencoderOutput as AutoencoderOutput
from .hookspecs import hookimpl as hookimpl

__all__ = [
    "AttentionBackend",
    "Autoencoder",
    "AutoencoderOutput",
    "BackendUnavailableError",
    "Capabilities",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointLayoutError",
    "ConfigError",
    "Hardware",
    "ModelConfig",
    "PluginError",
    "QuatrainError",
    "Reason",
    "UnknownBackendError",
    "hookimpl",
    "key_padding_guard",
    "load",
    "read_info",
    "reconstruction_loss",
    "save",
    "token_cosine",
]
