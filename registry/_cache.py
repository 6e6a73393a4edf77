"""The selection cache: past decisions in one JSON file, keyed by everything a decision depends on.

A leaf (core only). Unreadable or foreign files are ignored with a warning and rewritten; a read-only
cache costs a re-measurement next time, nothing more.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from quatrain import atomic_write_bytes

CACHE_ENV = "QUATRAIN_CACHE"


CACHE_FILE = "selection.json"


CACHE_FORMAT = "quatrain-selection/1"


def cache_path() -> Path:
    """Where decisions are cached: ``$QUATRAIN_CACHE/selection.json``, else the user cache dir."""
    folder = os.environ.get(CACHE_ENV)
    if not folder:
        import platformdirs

        folder = platformdirs.user_cache_dir("quatrain")
    return Path(folder) / CACHE_FILE


class JsonEntries:
    """One JSON file ``{"format": FORMAT, "entries": {...}}``: read tolerantly, written atomically.

    An unreadable file warns and reads as empty; so does a foreign one when ``warn_foreign``; a write that
    fails (read-only folder) warns and costs a re-measurement next time, nothing more.
    """

    def __init__(self, path: Path, file_format: str, what: str, *, warn_foreign: bool = True) -> None:
        self.path, self.format, self.what, self.warn_foreign = path, file_format, what, warn_foreign

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            warnings.warn(f"ignoring unreadable {self.what} {str(self.path)!r}: {e}", stacklevel=4)
            return {}
        if not isinstance(data, dict) or data.get("format") != self.format or not isinstance(data.get("entries"), dict):
            if self.warn_foreign:
                warnings.warn(f"ignoring {self.what} {str(self.path)!r}: not a {self.format} file", stacklevel=4)
            return {}
        return data["entries"]

    def write(self, entries: dict[str, Any]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            blob = json.dumps({"format": self.format, "entries": entries}, indent=1, sort_keys=True)
            atomic_write_bytes(self.path, blob.encode("utf-8"))
        except OSError as e:
            warnings.warn(f"cannot write {self.what} {str(self.path)!r}: {e}", stacklevel=4)


class SelectionCache:
    """A JSON file of past decisions keyed by ``selection_key``; unreadable files are ignored and rewritten."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_path()
        self._file = JsonEntries(self.path, CACHE_FORMAT, "selection cache")

    def _read(self) -> dict[str, Any]:
        return self._file.read()

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self._read().get(key)
        return entry if isinstance(entry, dict) else None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        entries = self._read()
        entries[key] = entry
        self._file.write(entries)
