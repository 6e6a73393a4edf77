"""``python -m quatrain``: the same as the ``quatrain`` command (the console script quatrain's pyproject declares)."""

from importlib import metadata

if __name__ == "__main__":
    (script,) = metadata.entry_points(group="console_scripts", name="quatrain")
    script.load()()
