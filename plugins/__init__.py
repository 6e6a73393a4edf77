"""quatrain's built-in attention backends, one module each, registered through the project's entry points."""
