"""quatrain's pluggy markers and hook specifications; nothing else."""

from __future__ import annotations

from collections.abc import Callable

import pluggy

PROJECT = "quatrain"
"""pluggy project name, and the entry-point group plugins are found under."""

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_attention_backends(register: Callable[[type], None]) -> None:
    """Called once when the registry loads plugins, to collect attention backends.

    Args:
        register: call it once per backend with the backend *class*, a subclass of
            ``quatrain.AttentionBackend`` with ``name`` and ``capabilities`` set. Registering a
            name another plugin already registered is an error that names both plugins.

    Returns:
        None; results are passed through ``register``.
    """


@hookspec
def register_layout_converters(register: Callable[..., None]) -> None:
    """Called once when the registry loads plugins, to collect exact converters between layouts.

    Args:
        register: call it as ``register(source, target, forward, inverse)`` where ``source`` and
            ``target`` are layout names and ``forward``/``inverse`` map an attention state dict
            (parameter name -> tensor, names relative to the attention module) of one layout to
            the other. ``inverse(forward(sd))`` must give back ``sd`` bit for bit.

    Returns:
        None; results are passed through ``register``.
    """


@hookspec
def register_models(register: Callable[..., None]) -> None:
    """Called once when the registry loads plugins, to collect model cards for the zoo.

    Args:
        register: call it once per card as ``register(name, *, description, config, recipe,
            weights=None, reference=None)``: ``name`` is the zoo name (lower-case letters, digits, '-', '_', '.');
            ``config`` a preset name (``"small"``) or a mapping of ``quatrain.ModelConfig`` fields,
            optionally with ``"preset"`` plus overrides; ``recipe`` a JSON-serialisable mapping of
            the training settings that produce the model (``quatrain zoo train NAME`` passes it to
            the training API); ``weights`` optional shipped weights, the folder (a path, or
            ``"package:folder/inside"`` resolved with ``importlib.resources``) holding
            ``model.safetensors`` and ``card.json`` as the zoo store writes them; ``reference``
            optional JSON-serialisable figures a named run of the recipe reached (``zoo show`` prints
            them beside the recipe). Registering a
            name another plugin already registered is an error that names both plugins.

    Returns:
        None; results are passed through ``register``.
    """
