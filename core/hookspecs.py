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
