"""The zoo store: one folder per named model (weights + ``card.json``), written atomically, verified on load.

The store lives in ``$QUATRAIN_HOME/models`` when ``QUATRAIN_HOME`` is set, else in the user data folder
(``platformdirs.user_data_dir("quatrain")/models``). Models whose cards ship weights in a package (the
``sonnets`` model) are read from there, with the same checks; a stored model of the same name shadows them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from quatrain import CheckpointError, QuatrainError

from ._cards import NAME_PATTERN, ModelCard, check_name
from ._discovery import get_cards
from ._entries import CARD, WEIGHTS, StoredCard, ZooEntry, read_entry
from ._entries import CARD_FORMAT as CARD_FORMAT
from ._entries import sha256_file as sha256_file
from ._errors import UnknownModelError

if TYPE_CHECKING:
    import torch

    from quatrain import Autoencoder


def quatrain_home() -> Path:
    """``$QUATRAIN_HOME``, else the user data folder for quatrain (not created here)."""
    override = os.environ.get("QUATRAIN_HOME")
    if override:
        home = Path(override).expanduser()
        if home.exists() and not home.is_dir():
            raise CheckpointError(f"QUATRAIN_HOME={override!r} is not a folder; point it at a folder (or unset it)")
        return home
    import platformdirs

    return Path(platformdirs.user_data_dir("quatrain", appauthor=False))


def _versions() -> dict[str, str]:
    import torch

    from quatrain._checkpoint import quatrain_version

    return {"quatrain": quatrain_version(), "torch": torch.__version__, "python": platform.python_version()}


class Store:
    """The model folders under ``root`` (default: ``quatrain_home()/models``), plus cards' shipped weights.

    Args:
        root: the folder holding one sub-folder per model; created on first write.
        cards: the model cards to consult for shipped weights and descriptions (default: the registry's).
    """

    def __init__(self, root: Path | None = None, cards: Mapping[str, ModelCard] | None = None) -> None:
        self.root = Path(root) if root is not None else quatrain_home() / "models"
        self._cards = dict(cards) if cards is not None else None

    @property
    def cards(self) -> dict[str, ModelCard]:
        if self._cards is None:
            self._cards = get_cards()
        return self._cards

    def folder(self, name: str) -> Path:
        return self.root / check_name(name)

    def stored_names(self) -> list[str]:
        """Names of the models in the store folder (not the shipped ones)."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if NAME_PATTERN.match(p.name) and p.is_dir() and (p / CARD).is_file()
        )

    def shipped(self, name: str) -> ZooEntry | None:
        """The shipped weights of card ``name``, if its card has them and they are present."""
        card = self.cards.get(name)
        if card is None or card.weights is None or not (card.weights / CARD).is_file():
            return None
        return read_entry(card.weights, "shipped")

    def entry(self, name: str) -> ZooEntry:
        """The model named ``name``: the store's copy, else the shipped one.

        Raises:
            UnknownModelError: no such model, or a card without weights (the message says how to train it).
        """
        check_name(name)
        folder = self.folder(name)
        if (folder / CARD).is_file():
            return read_entry(folder, "store")
        shipped = self.shipped(name)
        if shipped is not None:
            return shipped
        if name in self.cards:
            raise UnknownModelError(
                f"zoo model {name!r} has a card but no weights yet; train it with 'quatrain zoo train {name}'"
            )
        known = sorted(set(self.stored_names()) | set(self.cards))
        raise UnknownModelError(f"no zoo model {name!r}; known: {', '.join(known) or 'none'}")

    def entries(self) -> list[ZooEntry]:
        """Every readable model with weights (stored ones shadow shipped ones of the same name), by name."""
        return self.scan()[0]

    def scan(self) -> tuple[list[ZooEntry], list[tuple[Path, str]]]:
        """The readable models by name, and every store folder (or shipped one) that is not one, with why.

        One bad folder never hides the others (``quatrain zoo list`` shows both).
        """
        good: dict[str, ZooEntry] = {}
        bad: list[tuple[Path, str]] = []
        for path in sorted(self.root.iterdir()) if self.root.is_dir() else ():
            if path.name.startswith("."):
                if path.name.endswith((".old", ".removing", ".staging")):
                    bad.append((path, "left over by an interrupted write or removal; safe to delete"))
                continue
            if not NAME_PATTERN.match(path.name):
                bad.append((path, f"{path.name!r} is not a zoo name (lower-case letters, digits, '.', '_', '-')"))
            elif not path.is_dir():
                bad.append((path, "not a folder"))
            else:
                try:
                    good[path.name] = read_entry(path, "store")
                except QuatrainError as e:
                    bad.append((path, str(e)))
        for name in sorted(set(self.cards) - set(good)):
            try:
                shipped = self.shipped(name)
            except QuatrainError as e:
                bad.append((self.cards[name].weights or self.root, str(e)))
                continue
            if shipped is not None:
                good[name] = shipped
        return [good[n] for n in sorted(good)], bad

    @contextlib.contextmanager
    def lock(self, name: str, *, wait: bool = False, on_wait: Callable[[str], None] | None = None) -> Iterator[Path]:
        """Hold the lock of model ``name`` (``runs/NAME.lock``), so that two ``zoo train NAME`` never share a run.

        Args:
            name: the zoo name.
            wait: wait for another holder to finish (saying so through ``on_wait``) instead of refusing.

        Raises:
            CheckpointError: another process holds it and ``wait`` is off.
        """
        from filelock import FileLock, Timeout

        path = self.root.parent / "runs" / f"{check_name(name)}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            message = f"zoo model {name!r} is being trained by another process (it holds {str(path)!r})"
            if not wait:
                raise CheckpointError(f"{message}; wait for it to finish, or pass --wait") from None
            if on_wait is not None:
                on_wait(f"{message}; waiting for it to finish...")
            lock.acquire()
        try:
            yield path
        finally:
            lock.release()

    def put(
        self,
        name: str,
        model: Autoencoder,
        *,
        description: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        recipe: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> ZooEntry:
        """Save ``model`` as zoo model ``name``, replacing any stored one atomically.

        Args:
            name: the zoo name.
            model: the trained autoencoder.
            description: one line; defaults to the card's description of the same name.
            metrics, recipe, data: recorded in ``card.json`` (and in the checkpoint's metadata).
        """
        from quatrain import save

        extra = {"zoo_name": name, "metrics": dict(metrics or {}), "recipe": dict(recipe or {})}
        extra["data"] = dict(data or {})
        return self._commit(
            name,
            lambda staging: save(model, staging / WEIGHTS, extra=extra),
            description,
            metrics,
            recipe,
            data,
        )

    def put_checkpoint(
        self,
        name: str,
        checkpoint: Path,
        *,
        description: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        recipe: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> ZooEntry:
        """Copy an existing quatrain checkpoint into the store as ``name`` (validated first)."""
        from quatrain import read_info

        read_info(checkpoint)  # refuse anything that is not a quatrain checkpoint
        return self._commit(
            name,
            lambda staging: shutil.copyfile(checkpoint, staging / WEIGHTS),
            description,
            metrics,
            recipe,
            data,
        )

    def _commit(
        self,
        name: str,
        write: Any,
        description: str | None,
        metrics: Mapping[str, Any] | None,
        recipe: Mapping[str, Any] | None,
        data: Mapping[str, Any] | None,
    ) -> ZooEntry:
        """Write weights and card into a staging folder, then swap it in with renames."""
        from quatrain import read_info

        final = self.folder(name)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".staging", dir=self.root))
        try:
            write(staging)
            info = read_info(staging / WEIGHTS)
            card = self.cards.get(name)
            stored = StoredCard(
                name=name,
                description=description if description is not None else (card.description if card else ""),
                config=info.config,
                backend=info.backend,
                layout=info.layout,
                metrics=dict(metrics or {}),
                recipe=dict(recipe or {}),
                data=dict(data or {}),
                sha256=sha256_file(staging / WEIGHTS),
                created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                versions=_versions(),
                num_parameters=info.num_parameters,
            )
            stored = attrs.evolve(stored, seal=stored.seal_of())
            text = json.dumps(stored.to_dict(), indent=2, sort_keys=False) + "\n"
            (staging / CARD).write_text(text, encoding="utf-8")
            _swap_in(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return read_entry(final, "store")

    def remove(self, name: str) -> Path:
        """Delete the stored model ``name``; shipped weights cannot be removed (uninstall their plugin)."""
        folder = self.folder(name)
        if folder.is_symlink():  # a linked model: the link goes, what it points to is not the store's to delete
            folder.unlink()
            return folder
        if not folder.is_dir():
            if self.shipped(name) is not None:
                raise CheckpointError(
                    f"zoo model {name!r} ships with plugin {self.cards[name].plugin!r} and is not in the store "
                    f"{str(self.root)!r}; nothing to remove"
                )
            self.entry(name)  # raises the right 'unknown' error
        trash = folder.with_name(f".{name}.{os.getpid()}.removing")
        os.replace(folder, trash)  # one rename: readers see the model or nothing
        shutil.rmtree(trash)
        return folder

    def weights_path(self, name: str) -> Path:
        """The verified weights file of zoo model ``name``."""
        return self.entry(name).verify()

    def load(self, name: str, backend: str | None = None, device: str | torch.device = "cpu") -> Autoencoder:
        """Load zoo model ``name`` after verifying its sha256 (optionally onto another backend)."""
        from quatrain import load

        return load(self.weights_path(name), backend=backend, device=device)


def _swap_in(staging: Path, final: Path) -> None:
    """Replace ``final`` by ``staging`` with renames, so a reader never sees a half-written model."""
    if not final.exists():
        os.replace(staging, final)
        return
    old = final.with_name(f".{final.name}.{os.getpid()}.old")
    os.replace(final, old)
    try:
        os.replace(staging, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(name_or_path: str | os.PathLike[str], store: Store | None = None) -> Path:
    """A checkpoint file from a path or a zoo name (verified against its card's sha256).

    An existing file wins; otherwise the argument is looked up as a zoo name. Commands that take a
    checkpoint call this so that ``quatrain eval sonnets`` works like ``quatrain eval model.safetensors``.

    Raises:
        CheckpointError: neither an existing file nor a zoo model (the message lists the zoo's names),
            or a zoo model whose weights fail the sha256 check (ModelIntegrityError).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder, not a .safetensors file")
    text = str(name_or_path)
    store = store or Store()
    if NAME_PATTERN.match(text) and not text.endswith(".safetensors"):
        try:
            return store.weights_path(text)
        except UnknownModelError as e:
            raise CheckpointError(f"{text!r} is neither a checkpoint file nor a trained zoo model: {e}") from None
    raise CheckpointError(f"checkpoint {text!r} does not exist")
