"""The exceptions the registry adds to core's (``quatrain.QuatrainError`` and its subclasses)."""

from __future__ import annotations

from quatrain import CheckpointError, QuatrainError


class UnknownModelError(QuatrainError, KeyError):
    """No model card and no stored model has the requested name."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class ModelIntegrityError(CheckpointError):
    """A zoo model's weights do not match the sha256 its card records (corrupt or altered)."""
