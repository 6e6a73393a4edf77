"""Model configuration: a frozen, validated attrs record with named presets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs

from ._errors import ConfigError

RNN_KINDS = ("lstm", "gru", "rnn")
ATTENTION_KINDS = ("encoder", "none")


def short(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: a hand-edited 20 MB value must not become a 20 MB message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(text):,} characters)"


# Upper bounds on the sizes a config may ask for: far above any real model here (the seed preset is
# 300/512/2/128), low enough that a hand-edited header cannot make ``Autoencoder`` allocate terabytes.
LIMITS = {"embed_dim": 16384, "hidden_size": 16384, "num_layers": 64, "bottleneck_dim": 16384, "num_heads": 256}
LIMITS["max_len"] = 1 << 16


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{attribute.name} must be a positive integer, got {short(value)}")
    limit = LIMITS.get(attribute.name)
    if limit is not None and value > limit:
        raise ConfigError(f"{attribute.name} must be a positive integer of at most {limit:,}, got {short(value)}")


def _one_of(choices: tuple[str, ...]) -> Any:
    def check(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in choices:
            raise ConfigError(f"{attribute.name} must be one of {', '.join(choices)}; got {short(value)}")

    return check


def _dropout(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{attribute.name} must be a number in [0, 1), got {short(value)}")


def _boolean(instance: object, attribute: attrs.Attribute[bool], value: bool) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{attribute.name} must be true or false, got {short(value)}")


@attrs.frozen(kw_only=True)
class ModelConfig:
    """Every hyperparameter of an autoencoder; stored in each checkpoint as JSON."""

    embed_dim: int = attrs.field(validator=_positive)
    """Size of the input word vectors (50 for GloVe 6B 50-d, 300 for the seed's vectors)."""
    hidden_size: int = attrs.field(validator=_positive)
    """Hidden size of encoder and decoder RNNs, and the attention's model width."""
    num_layers: int = attrs.field(validator=_positive)
    """Stacked RNN layers in the encoder and in the decoder."""
    rnn: str = attrs.field(default="lstm", validator=_one_of(RNN_KINDS))
    """Cell kind: lstm, gru or rnn (tanh)."""
    bottleneck_dim: int = attrs.field(validator=_positive)
    """Size of the sequence code z."""
    num_heads: int = attrs.field(default=4, validator=_positive)
    """Attention heads; must divide hidden_size."""
    dropout: float = attrs.field(default=0.0, validator=_dropout)
    """Dropout between RNN layers and on the decoder's RNN output."""
    attention: str = attrs.field(default="encoder", validator=_one_of(ATTENTION_KINDS))
    """'encoder': cross-attention over the encoder states; 'none': the plain RNN baseline."""
    max_len: int = attrs.field(default=50, validator=_positive)
    """Longest window, in tokens, that the data pipeline cuts (the model itself has no length cap)."""
    memory_positions: bool = attrs.field(default=True, validator=_boolean)
    """Add sinusoidal positions to the encoder memory (keys and values), not only to the queries."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # The original's trained model (reference/seed-system.md section 1.1).
        "seed": dict(
            embed_dim=300,
            hidden_size=512,
            num_layers=2,
            rnn="lstm",
            bottleneck_dim=128,
            num_heads=4,
            dropout=0.2,
            max_len=50,
        ),
        # A small model for GloVe 50-d on the default corpus; trains on 2 CPU cores in minutes.
        "small": dict(
            embed_dim=50,
            hidden_size=128,
            num_layers=1,
            rnn="lstm",
            bottleneck_dim=64,
            num_heads=4,
            dropout=0.0,
            max_len=32,
        ),
        # For tests: every code path, in milliseconds.
        "tiny": dict(
            embed_dim=16,
            hidden_size=32,
            num_layers=2,
            rnn="lstm",
            bottleneck_dim=8,
            num_heads=4,
            dropout=0.0,
            max_len=12,
        ),
    }

    def __attrs_post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """The named preset, with fields overridden by keyword."""
        if name not in cls.PRESETS:
            raise ConfigError(f"unknown preset {short(name)}; presets: {', '.join(sorted(cls.PRESETS))}")
        return cls.from_dict({**cls.PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Build from a mapping (checkpoint metadata, a JSON file); unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a config must be a mapping of fields, got {short(data)}")
        known = {a.name for a in attrs.fields(cls)}
        unknown = sorted(str(k) for k in set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown config field(s): {', '.join(short(k, 40) for k in unknown[:5])}"
                + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
                + f"; known: {', '.join(sorted(known))}"
            )
        missing = sorted(a.name for a in attrs.fields(cls) if a.default is attrs.NOTHING and a.name not in data)
        if missing:
            raise ConfigError(f"config is missing required field(s): {', '.join(missing)}")
        return cls(**{k: data[k] for k in known if k in data})

    @classmethod
    def from_json(cls, source: Path | str, preset_defaults: Mapping[str, Any] | None = None) -> ModelConfig:
        """Read a JSON object of config fields, or ``{"preset": NAME, ...overrides}``.

        Args:
            source: a JSON file, or the JSON text itself when it starts with ``{``.
            preset_defaults: fields a preset takes unless the JSON sets them (the CLI passes the
                embeddings' ``embed_dim``, as ``--preset`` does).
        """
        inline = isinstance(source, str) and source.lstrip().startswith("{")
        where = "inline JSON" if inline else repr(str(source))
        try:
            text = str(source) if inline else Path(source).read_text(encoding="utf-8")
            data = json.loads(text)
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            reason = "it nests too deeply" if isinstance(e, RecursionError) else e
            raise ConfigError(f"cannot read config {where}: {reason}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {where} must hold a JSON object")
        if "preset" in data:
            name = data.pop("preset")
            return cls.preset(str(name), **{**(preset_defaults or {}), **data})
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def evolve(self, **changes: Any) -> ModelConfig:
        return attrs.evolve(self, **changes)
