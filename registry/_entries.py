"""What a zoo folder holds: its card (``card.json``, type-checked and sealed) and its verified weights."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from quatrain import CheckpointError, ModelConfig, QuatrainError

from ._errors import ModelIntegrityError

WEIGHTS = "model.safetensors"
CARD = "card.json"
CARD_FORMAT = "quatrain-zoo-card/1"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_text = attrs.validators.instance_of(str)
_mapping = attrs.validators.instance_of(dict)


def _count(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"{attribute.name} must be a whole number, got {value!r:.40}")


@attrs.frozen(kw_only=True)
class StoredCard:
    """What ``card.json`` holds: the model's identity, provenance, quality and integrity (types checked)."""

    name: str = attrs.field(validator=_text)
    description: str = attrs.field(validator=_text)
    config: ModelConfig = attrs.field(validator=attrs.validators.instance_of(ModelConfig))
    backend: str = attrs.field(validator=_text)
    """Backend the weights were saved with; ``quatrain.load`` converts to others through the layouts."""
    layout: str = attrs.field(validator=_text)
    metrics: dict[str, Any] = attrs.field(factory=dict, validator=_mapping)
    """Held-out metrics (e.g. token_cosine, top1), with what they were measured on."""
    recipe: dict[str, Any] = attrs.field(factory=dict, validator=_mapping)
    """The training settings (and command) that produced the weights."""
    data: dict[str, Any] = attrs.field(factory=dict, validator=_mapping)
    """The data it was trained on, with the split's fingerprint."""
    sha256: str = attrs.field(validator=attrs.validators.matches_re(r"[0-9a-f]{64}"))
    """Of ``model.safetensors``; checked on every load."""
    created: str = attrs.field(validator=_text)
    """ISO-8601 UTC time the model was stored."""
    versions: dict[str, str] = attrs.field(factory=dict, validator=_mapping)
    """quatrain, torch and Python versions that wrote it."""
    num_parameters: int = attrs.field(default=0, validator=_count)
    seal: str = ""
    """sha256 of the card's other fields (``seal_of``), written with it: a hand edit breaks it. Cards
    stored before seals existed have none and are not checked this way."""

    def seal_of(self) -> str:
        """The digest a faithful card carries in ``seal``."""
        fields = {k: v for k, v in self.to_dict().items() if k not in ("seal", "format")}
        return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()

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
        except (KeyError, TypeError, ValueError, QuatrainError) as e:
            raise CheckpointError(f"{str(source)!r}: bad card: {str(e)[:200]}") from None


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

    def problems(self) -> list[str]:
        """What is wrong with this model, checked against its weights (empty: nothing): a card named for
        another folder, a hand-edited card, weights that fail their sha256 or disagree with the card."""
        from quatrain import read_info

        found = []
        card = self.card
        if self.origin == "store" and card.name != self.folder.name:
            found.append(f"its card names {card.name!r} but it is in folder {self.folder.name!r}")
        if card.seal and card.seal != card.seal_of():
            found.append("card.json was edited after it was stored (its seal does not match): metrics untrusted")
        try:
            self.verify()
            info = read_info(self.weights)
        except QuatrainError as e:
            return [*found, str(e)]
        if info.config != card.config:
            found.append("the card's config disagrees with the weights' config")
        if (info.backend, info.layout) != (card.backend, card.layout):
            found.append(f"the card says {card.backend}/{card.layout}, the weights {info.backend}/{info.layout}")
        if info.num_parameters != card.num_parameters:
            found.append(
                f"the card counts {card.num_parameters:,} parameters, the weights hold {info.num_parameters:,}"
            )
        return found


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
