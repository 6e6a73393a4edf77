"""The exceptions quatrain raises: each names the culprit and, where there is one, the way out."""

from __future__ import annotations


class QuatrainError(Exception):
    """Base class of every error quatrain raises on purpose; the CLI prints these as one line."""


class ConfigError(QuatrainError, ValueError):
    """A model or training configuration has a bad, missing or unknown field."""


class UnknownBackendError(QuatrainError, KeyError):
    """No registered backend has the requested name."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class BackendUnavailableError(QuatrainError):
    """A backend exists but cannot run here (wrong device, dtype, missing package, ...)."""


class PluginError(QuatrainError):
    """A plugin failed to load or to register, or two plugins claim one backend name."""


class CheckpointError(QuatrainError):
    """A checkpoint file is missing, not safetensors, or its metadata or tensors are wrong."""


class CheckpointLayoutError(CheckpointError):
    """A checkpoint's tensors do not fit the layout its metadata names (missing, extra or misshapen keys)."""


class DataError(QuatrainError, ValueError):
    """Training data cannot be used as given."""


class CorpusError(DataError):
    """A corpus is missing, empty, not UTF-8, or malformed (e.g. a JSON record without ``text``)."""


class EmbeddingsError(DataError):
    """Embeddings are missing, ragged, non-finite or otherwise unusable."""


class DistributedError(QuatrainError):
    """A rank of a distributed job failed, or the job's environment is inconsistent."""


class PluginWarning(UserWarning):
    """Plugin settings that do something a user may not expect (an empty allow-list, an unknown name)."""
