"""Model cards: named, plugin-registered descriptions of zoo models (config, recipe, optional shipped weights)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import attrs

from quatrain import ConfigError, ModelConfig, PluginError

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
"""Zoo names are folder names in the store: lower-case, no separators, no leading dot."""


def check_name(name: object) -> str:
    """Return ``name`` if it is a valid zoo name, else raise ConfigError naming it."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConfigError(
            f"invalid zoo name {name!r}: use 1-64 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def config_from_spec(spec: str | Mapping[str, Any]) -> ModelConfig:
    """A ModelConfig from a preset name, a mapping of fields, or ``{"preset": NAME, **overrides}``."""
    if isinstance(spec, str):
        return ModelConfig.preset(spec)
    if isinstance(spec, Mapping):
        data = dict(spec)
        if "preset" in data:
            return ModelConfig.preset(str(data.pop("preset")), **data)
        return ModelConfig.from_dict(data)
    raise ConfigError(f"a card's config must be a preset name or a mapping, got {spec!r}")


def resolve_weights(spec: str | Path | None) -> Path | None:
    """The folder named by ``spec``: a path, or ``"package:folder/inside"`` found with importlib.resources."""
    if spec is None:
        return None
    if isinstance(spec, Path):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"a card's weights must be a path or 'package:folder', got {spec!r}")
    package, sep, inside = spec.partition(":")
    if not sep:
        return Path(spec)
    try:
        folder = resources.files(package).joinpath(inside)
    except ModuleNotFoundError:
        raise ConfigError(f"weights {spec!r}: package {package!r} is not importable") from None
    if not isinstance(folder, Path):  # a zip install: the store needs real files to hash and map
        folder = Path(str(folder))
    return folder


@attrs.frozen(kw_only=True)
class ModelCard:
    """A named model a plugin offers: what it is, how to train it, and where its shipped weights are."""

    name: str = attrs.field(validator=lambda _, __, v: check_name(v))
    """The zoo name (``quatrain zoo show NAME``, and usable wherever a checkpoint path is)."""
    description: str
    """One line for listings."""
    config: ModelConfig
    """The architecture its recipe trains."""
    recipe: dict[str, Any] = attrs.field(factory=dict, converter=dict)
    """Training settings passed to the training API by ``quatrain zoo train NAME``."""
    weights: Path | None = None
    """Folder with shipped ``model.safetensors`` and ``card.json``, or None when it must be trained."""
    reference: dict[str, Any] = attrs.field(factory=dict, converter=dict)
    """What a named run of the recipe reached: held-out metrics, and where, when and how it ran."""
    plugin: str = ""
    """Plugin (entry-point name) that registered it."""
    distribution: str | None = None
    """Distribution that installed that plugin."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "config": self.config.to_dict(),
            "recipe": self.recipe,
            "weights": str(self.weights) if self.weights else None,
            "reference": self.reference,
            "plugin": self.plugin,
            "distribution": self.distribution,
        }


def make_card(
    name: str,
    *,
    description: str,
    config: str | Mapping[str, Any],
    recipe: Mapping[str, Any],
    weights: str | Path | None = None,
    reference: Mapping[str, Any] | None = None,
    plugin: str = "",
    distribution: str | None = None,
) -> ModelCard:
    """Build and validate a card from what a plugin passed to ``register``; errors name the card."""
    try:
        check_name(name)
        if not isinstance(description, str):
            raise ConfigError(f"description must be a string, got {description!r}")
        if not isinstance(recipe, Mapping):
            raise ConfigError(f"recipe must be a mapping, got {recipe!r}")
        if reference is not None and not isinstance(reference, Mapping):
            raise ConfigError(f"reference must be a mapping, got {reference!r}")
        return ModelCard(
            name=name,
            description=description,
            config=config_from_spec(config),
            recipe=dict(recipe),
            weights=resolve_weights(weights),
            reference=dict(reference or {}),
            plugin=plugin,
            distribution=distribution,
        )
    except (ConfigError, TypeError) as e:
        raise PluginError(f"model card {name!r}: {e}") from None
