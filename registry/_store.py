"""The zoo store: one folder per named model (weights + ``card.json``), written atomically, verified on load.

The store lives in ``$QUATRAIN_HOME/models`` when ``QUATRAIN_HOME`` is set, else in the user data folder
(``platformdirs.user_data_dir("quatrain")/models``). Models whose cards ship weights in a package (the
``sonnets`` model) are read from there, with the same checks; a stored model of the same name shadows them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from quatrain import CheckpointError, ModelConfig, QuatrainError

from ._cards import NAME_PATTERN, ModelCard, check_name
from ._discovery import get_cards
from ._errors import ModelIntegrityError, UnknownModelError

if TYPE_CHECKING:
    import torch

    from quatrain import Autoencoder

WEIGHTS = "model.safetensors"
CARD = "card.json"
CARD_FORMAT = "quatrain-zoo-card/1"


def quatrain_home() -> Path:
    """``$QUATRAIN_HOME``, else the user data folder for quatrain (not created here)."""
    override = os.environ.get("QUATRAIN_HOME")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("quatrain", appauthor=False))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import torch

    from quatrain._checkpoint import quatrain_version

    return {"quatrain": quatrain_version(), "torch": torch.__version__, "python": platform.python_version()}


@attrs.frozen(kw_only=True)
class StoredCard:
    """What ``card.json`` holds: the model's identity, provenance, quality and integrity."""

    name: str
    description: str
    config: ModelConfig
    backend: str
    """Backend the weights were saved with; ``quatrain.load`` converts to others through the layouts."""
    layout: str
    metrics: dict[str, Any] = attrs.field(factory=dict)
    """Held-out metrics (e.g. token_cosine, top1), with what they were measured on."""
    recipe: dict[str, Any] = attrs.field(factory=dict)
    """The training settings (and command) that produced the weights."""
    data: dict[str, Any] = attrs.field(factory=dict)
    """The data it was trained on, with the split's fingerprint."""
    sha256: str
    """Of ``model.safetensors``; checked on every load."""
    created: str
    """ISO-8601 UTC time the model was stored."""
    versions: dict[str, str] = attrs.field(factory=dict)
    """quatrain, torch and Python versions that wrote it."""
    num_parameters: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=False)
        data["config"] = self.config.to_dict()
        return {"format": CARD_FORMAT, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: Path) -> StoredCard:
        """Parse a ``card.json`` object; ``source`` names the file in errors."""
        if data.get("format") != CARD_FORMAT:
            raise CheckpointError(f"{str(source)!r} is not a quatrain zoo card (format {data.get('format')!r})")
        fields = {a.name for a in attrs.fields(cls)}
        unknown = sorted(set(data) - fields - {"format"})
        if unknown:
            raise CheckpointError(f"{str(source)!r}: unknown card field(s) {', '.join(unknown)}")
        try:
            values = {k: data[k] for k in fields if k in data}
            values["config"] = ModelConfig.from_dict(data["config"])
            return cls(**values)
        except (KeyError, TypeError, QuatrainError) as e:
            raise CheckpointError(f"{str(source)!r}: bad card: {e}") from None


@attrs.frozen(kw_only=True)
class ZooEntry:
    """A model with weights: its card, its folder, and whether it is in the store or shipped by a package."""

    card: StoredCard
    folder: Path
    origin: str
    """'store' (trained or added here) or 'shipped' (package data of the plugin that registered its card)."""

    @property
    def weights(self) -> Path:
        return self.folder / WEIGHTS

    def verify(self) -> Path:
        """The weights file, after checking its sha256 against the card; raises ModelIntegrityError."""
        if not self.weights.is_file():
            raise CheckpointError(f"zoo model {self.card.name!r}: {str(self.weights)!r} is missing")
        actual = sha256_file(self.weights)
        if actual != self.card.sha256:
            raise ModelIntegrityError(
                f"zoo model {self.card.name!r}: {str(self.weights)!r} has sha256 {actual[:16]}…, its card records "
                f"{self.card.sha256[:16]}…; the file is corrupt or was altered (retrain it, or remove it with "
                f"'quatrain zoo rm {self.card.name}')"
            )
        return self.weights

    def to_dict(self) -> dict[str, Any]:
        return {"origin": self.origin, "folder": str(self.folder), **self.card.to_dict()}


def read_entry(folder: Path, origin: str) -> ZooEntry:
    """The entry stored in ``folder``; raises CheckpointError if its card is missing or malformed."""
    path = folder / CARD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"zoo folder {str(folder)!r} has no {CARD}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {str(path)!r}: {e}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{str(path)!r} must hold a JSON object")
    return ZooEntry(card=StoredCard.from_dict(data, path), folder=folder, origin=origin)


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
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and (p / CARD).is_file())

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
        """Every model with weights (stored ones shadow shipped ones of the same name), by name."""
        names = set(self.stored_names()) | {n for n in self.cards if self.shipped(n) is not None}
        return [self.entry(n) for n in sorted(names)]

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
        if not (folder / CARD).is_file():
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
