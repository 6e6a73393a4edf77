"""The Click command-line interface: thin commands over quatrain and quatrain.registry."""

from ._main import cli as cli
from ._main import main as main

__all__ = ["cli", "main"]
