"""Checkpoints: safetensors with quatrain metadata, written atomically; never unpickled."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import attrs
import safetensors
import safetensors.torch
import torch
from torch import Tensor

from ._config import ModelConfig
from ._contract import AttentionBackend
from ._errors import CheckpointError, CheckpointLayoutError, ConfigError, QuatrainError
from ._model import Autoencoder
from ._resolve import convert_layout

FORMAT = "quatrain-checkpoint/1"
ATTENTION_PREFIX = "decoder.attention."


def quatrain_version() -> str:
    try:
        return importlib_metadata.version("quatrain")
    except importlib_metadata.PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


@attrs.frozen(kw_only=True)
class CheckpointInfo:
    """What a checkpoint's header says, read without loading its tensors into a model."""

    path: Path
    config: ModelConfig
    backend: str
    layout: str
    metadata: dict[str, str]
    """Every metadata entry, verbatim (values are strings, JSON where structured)."""
    shapes: dict[str, tuple[int, ...]]

    @property
    def num_parameters(self) -> int:
        total = 0
        for shape in self.shapes.values():
            count = 1
            for size in shape:
                count *= size
            total += count
        return total


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def save(model: Autoencoder, path: str | os.PathLike[str], extra: Mapping[str, Any] | None = None) -> Path:
    """Save ``model``'s weights and everything needed to rebuild it, atomically.

    Args:
        model: the autoencoder.
        path: destination ``.safetensors`` file; its folder must exist.
        extra: more metadata (e.g. training recipe, metrics); values are stored as JSON.

    Returns:
        The path written.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise CheckpointError(f"cannot save to {str(path)!r}: folder {str(path.parent)!r} does not exist")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "quatrain_version": quatrain_version(),
        "torch_version": torch.__version__,
        "config": json.dumps(model.config.to_dict(), sort_keys=True),
        "backend": model.backend,
        "layout": model.layout,
    }
    for key, value in (extra or {}).items():
        if key in meta:
            raise ValueError(f"extra metadata may not override {key!r}")
        meta[key] = json.dumps(value, sort_keys=True)
    try:
        atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=meta))
    except OSError as e:
        raise CheckpointError(f"cannot write {str(path)!r}: {e.strerror or e}") from None
    return path


def _read_header(path: Path) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder, not a .safetensors file")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - not a dict
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{str(path)!r} is not a readable safetensors file ({e}); quatrain never unpickles .pt/.pth files"
        ) from None
    if not meta or meta.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} has no quatrain metadata (expected format {FORMAT!r})")
    return dict(meta), shapes


def read_info(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Read a checkpoint's metadata and tensor shapes, validating the metadata."""
    path = Path(path)
    meta, shapes = _read_header(path)
    for key in ("config", "backend", "layout"):
        if key not in meta:
            raise CheckpointError(f"{str(path)!r}: metadata lacks {key!r}")
    try:
        config = ModelConfig.from_dict(json.loads(meta["config"]))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{str(path)!r}: metadata 'config' is not JSON ({e})") from None
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{str(path)!r}: bad config in metadata: {e}") from None
    return CheckpointInfo(
        path=path, config=config, backend=meta["backend"], layout=meta["layout"], metadata=meta, shapes=shapes
    )


def _check_tensors(path: Path, expected: Mapping[str, Tensor], found: Mapping[str, tuple[int, ...]]) -> None:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        raise CheckpointLayoutError(
            f"{str(path)!r}: missing tensor(s) {', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        )
    if extra:
        raise CheckpointLayoutError(
            f"{str(path)!r}: unexpected tensor(s) {', '.join(extra[:5])}"
            + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        )
    for key, tensor in expected.items():
        if tuple(tensor.shape) != tuple(found[key]):
            raise CheckpointLayoutError(
                f"{str(path)!r}: tensor {key!r} has shape {tuple(found[key])}, the model expects {tuple(tensor.shape)}"
            )


def load(
    path: str | os.PathLike[str],
    backend: str | type[AttentionBackend] | None = None,
    device: str | torch.device = "cpu",
) -> Autoencoder:
    """Rebuild the model saved at ``path``.

    Args:
        path: a ``.safetensors`` checkpoint written by ``save``.
        backend: run it on this backend instead of the one it was saved with; the attention weights
            are converted between layouts through the backend table's converters.
        device: where to put the tensors.

    Raises:
        CheckpointError: missing or unreadable file, missing or malformed metadata.
        CheckpointLayoutError: unknown layout, or tensors that do not fit the model.
    """
    info = read_info(path)
    try:
        model = Autoencoder(info.config, backend or (None if info.backend == "none" else info.backend))
    except QuatrainError as e:
        raise CheckpointError(f"{str(info.path)!r}: cannot build its model: {e}") from None
    tensors = safetensors.torch.load_file(str(info.path), device=str(device))
    if info.layout != model.layout:
        tensors = convert_attention_tensors(tensors, info.layout, model.layout)
        info_shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    else:
        info_shapes = info.shapes
    _check_tensors(info.path, model.state_dict(), info_shapes)
    model.load_state_dict(tensors, strict=True)
    return model.to(device)


def convert_attention_tensors(tensors: Mapping[str, Tensor], source: str, target: str) -> dict[str, Tensor]:
    """Convert the attention part of a full state dict from layout ``source`` to ``target``."""
    attention = {k[len(ATTENTION_PREFIX) :]: v for k, v in tensors.items() if k.startswith(ATTENTION_PREFIX)}
    converted = convert_layout(attention, source, target)  # the backend table's converters (core/_resolve.py)
    rest = {k: v for k, v in tensors.items() if not k.startswith(ATTENTION_PREFIX)}
    return {**rest, **{ATTENTION_PREFIX + k: v for k, v in converted.items()}}
