"""``python -m quatrain``: the same as the ``quatrain`` command."""

from quatrain.cli import main

if __name__ == "__main__":
    main()
