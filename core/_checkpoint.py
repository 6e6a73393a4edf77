"""Checkpoints: safetensors with quatrain metadata, written atomically; never unpickled."""

from __future__ import annotations

import json
import os
import struct
import tempfile
import warnings
from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import attrs
import safetensors
import safetensors.torch
import torch
from torch import Tensor

from ._config import ModelConfig, short
from ._contract import AttentionBackend
from ._errors import CheckpointError, CheckpointLayoutError, ConfigError, QuatrainError
from ._model import Autoencoder
from ._resolve import convert_layout, resolve_backend

FORMAT = "quatrain-checkpoint/1"
ATTENTION_PREFIX = "decoder.attention."
MAX_HEADER_BYTES = 16 << 20
"""Largest safetensors header read. The shipped sonnets model's is 9 KB; the split of the Gutenberg corpus
(the largest metadata quatrain writes) is a few MB. Checked before the header is read."""
MAX_TENSORS = 4096
"""Most tensors a checkpoint may hold (a 64-layer model has a few hundred). Checked before they are listed."""
FLOAT32 = "F32"
CAST_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F64": "float64"}
"""Float dtypes ``load`` casts to float32, with a warning that says so; any other non-float32 dtype is refused."""
_DTYPE_NAMES = {
    **CAST_DTYPES,
    "F32": "float32",
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "U16": "uint16",
    "I32": "int32",
    "U32": "uint32",
    "I64": "int64",
    "U64": "uint64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}
STANDARD_KEYS = ("format", "quatrain_version", "torch_version", "config", "backend", "layout")
"""Metadata every checkpoint has; their values are plain strings, except 'config' (JSON). Others are JSON."""


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
    dtypes: dict[str, str] = attrs.field(factory=dict)
    """Each tensor's safetensors dtype code ('F32', 'F16', 'I8', ...), from the header."""

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


def save(
    model: Autoencoder,
    path: str | os.PathLike[str],
    extra: Mapping[str, Any] | None = None,
    *,
    weights: Mapping[str, Tensor] | None = None,
) -> Path:
    """Save ``model``'s weights and everything needed to rebuild it, atomically.

    Args:
        model: the autoencoder.
        path: destination ``.safetensors`` file; its folder must exist.
        extra: more metadata (e.g. training recipe, metrics); values are stored as JSON.
        weights: a snapshot of ``model.state_dict()`` taken earlier, saved instead of the current weights
            (the trainer keeps its best epoch's so until it is written).

    Returns:
        The path written.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise CheckpointError(f"cannot save to {str(path)!r}: folder {str(path.parent)!r} does not exist")
    state = model.state_dict() if weights is None else weights
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
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


def _not_safetensors(path: Path, reason: object) -> CheckpointError:
    return CheckpointError(
        f"{str(path)!r} is not a readable safetensors file ({reason}); quatrain never unpickles .pt/.pth files"
    )


def _read_header(path: Path) -> tuple[dict[str, str], dict[str, tuple[int, ...]], dict[str, str]]:
    """Metadata, shapes and dtypes from the header, bounded before each step: no tensor data is read."""
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder, not a .safetensors file")
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            prefix = f.read(8)
            if len(prefix) < 8:
                raise _not_safetensors(path, f"{size} bytes, shorter than a header")
            (length,) = struct.unpack("<Q", prefix)
            if length > size - 8:
                raise _not_safetensors(path, f"its header claims {length:,} bytes, the file has {size - 8:,} after it")
            if length > MAX_HEADER_BYTES:
                raise CheckpointError(
                    f"{str(path)!r}: its safetensors header of {length:,} bytes is over the {MAX_HEADER_BYTES:,} "
                    "bytes quatrain reads; not a quatrain checkpoint"
                )
            raw = f.read(length)
    except OSError as e:
        raise CheckpointError(f"cannot read {str(path)!r}: {e.strerror or e}") from None
    try:
        header = json.loads(raw)
    except RecursionError:
        raise _not_safetensors(path, "its header nests too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise _not_safetensors(path, f"its header is not JSON: {short(str(e), 80)}") from None
    if not isinstance(header, dict):
        raise _not_safetensors(path, "its header is not a JSON object")
    count = len(header) - ("__metadata__" in header)
    if count > MAX_TENSORS:
        raise CheckpointError(
            f"{str(path)!r} holds {count:,} tensors; quatrain reads at most {MAX_TENSORS:,} (a model has a few hundred)"
        )
    try:  # safetensors checks what the JSON alone does not: offsets, sizes, dtypes, the data's length
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _not_safetensors(path, short(str(e), 120)) from None
    if not meta or meta.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} has no quatrain metadata (expected format {FORMAT!r})")
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    shapes = {k: tuple(int(n) for n in v["shape"]) for k, v in entries.items()}
    dtypes = {k: str(v["dtype"]) for k, v in entries.items()}
    return dict(meta), shapes, dtypes


def _check_metadata_json(path: Path, meta: Mapping[str, str]) -> None:
    """Every JSON value must parse: refuse one that nests too deeply or holds a number Python will not read."""
    for key, value in meta.items():
        if key in STANDARD_KEYS and key != "config":
            continue
        try:
            json.loads(value)
        except RecursionError:
            raise CheckpointError(f"{str(path)!r}: metadata {short(key, 40)} nests too deeply") from None
        except json.JSONDecodeError as e:
            if key == "config":
                raise CheckpointError(f"{str(path)!r}: metadata 'config' is not JSON ({e})") from None
            # another writer's plain-text value: shown as is
        except ValueError as e:  # e.g. an integer of more than 4300 digits
            raise CheckpointError(f"{str(path)!r}: metadata {short(key, 40)} is not JSON Python reads ({e})") from None


def read_info(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Read a checkpoint's metadata and tensor shapes, validating the metadata (no tensor data is read).

    Raises:
        CheckpointError: missing, unreadable or oversized file; missing or malformed metadata.
    """
    path = Path(path)
    meta, shapes, dtypes = _read_header(path)
    for key in ("config", "backend", "layout"):
        if key not in meta:
            raise CheckpointError(f"{str(path)!r}: metadata lacks {key!r}")
    _check_metadata_json(path, meta)
    try:
        config = ModelConfig.from_dict(json.loads(meta["config"]))
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{str(path)!r}: bad config in metadata: {e}") from None
    return CheckpointInfo(
        path=path,
        config=config,
        backend=meta["backend"],
        layout=meta["layout"],
        metadata=meta,
        shapes=shapes,
        dtypes=dtypes,
    )


def _names(keys: list[str]) -> str:
    return ", ".join(short(k, 60) for k in keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def _check_tensors(path: Path, expected: Mapping[str, Tensor], found: Mapping[str, tuple[int, ...]]) -> None:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        raise CheckpointLayoutError(f"{str(path)!r}: missing tensor(s) {_names(missing)}")
    if extra:
        raise CheckpointLayoutError(f"{str(path)!r}: unexpected tensor(s) {_names(extra)}")
    for key, tensor in expected.items():
        if tuple(tensor.shape) != tuple(found[key]):
            raise CheckpointLayoutError(
                f"{str(path)!r}: tensor {key!r} has shape {tuple(found[key])}, the model expects {tuple(tensor.shape)}"
            )


def _check_dtypes(info: CheckpointInfo) -> list[str]:
    """Refuse tensors that are not float; return the float dtypes other than float32 that load will cast."""
    refused = sorted({d for d in info.dtypes.values() if d != FLOAT32 and d not in CAST_DTYPES})
    if refused:
        names = ", ".join(_DTYPE_NAMES.get(d, d) for d in refused)
        raise CheckpointError(
            f"{str(info.path)!r} stores {names} tensors, not float: quatrain's weights are float32 (float16, "
            "bfloat16 and float64 are cast); this is not a model's weights"
        )
    return sorted({CAST_DTYPES[d] for d in info.dtypes.values() if d in CAST_DTYPES})


def check_loadable(
    info: CheckpointInfo, backend: str | type[AttentionBackend] | None = None
) -> type[AttentionBackend] | None:
    """Check that ``info``'s tensors fit the model its config builds, reading no tensor data and allocating none.

    The one check ``load`` and ``quatrain inspect`` share: dtypes must be float, and the header's names
    and shapes (converted to the backend's layout if it differs from the file's) must equal those of
    the model, which is built on the ``meta`` device, so a config that claims hidden_size 8192 over
    tiny tensors is refused in milliseconds (tests/core/test_adversarial_checkpoint.py).

    Args:
        info: from ``read_info``.
        backend: the backend the model will run on (default: the one it was saved with).

    Returns:
        The backend class to build (None for a model without attention).

    Raises:
        CheckpointError: non-float tensors, or a model that cannot be built (e.g. an unknown backend).
        CheckpointLayoutError: unknown layout, or tensors that do not fit the model.
    """
    _check_dtypes(info)
    requested = backend or (None if info.backend == "none" else info.backend)
    try:
        cls = (
            None
            if info.config.attention == "none" and requested is None
            else resolve_backend(requested or "naive", info.config)
        )
        with torch.device("meta"):
            model = Autoencoder(info.config, cls)
    except QuatrainError as e:
        raise CheckpointError(f"{str(info.path)!r}: cannot build its model: {e}") from None
    found = info.shapes
    if info.layout != model.layout:
        empty = {k: torch.empty(shape, device="meta") for k, shape in info.shapes.items()}
        try:
            found = {k: tuple(v.shape) for k, v in convert_attention_tensors(empty, info.layout, model.layout).items()}
        except CheckpointError:
            raise
        except (RuntimeError, ValueError, KeyError, IndexError) as e:
            raise CheckpointLayoutError(
                f"{str(info.path)!r}: its attention tensors do not convert from layout {info.layout!r} to "
                f"{model.layout!r}: {short(str(e), 120)}"
            ) from None
    _check_tensors(info.path, model.state_dict(), found)
    return cls


def load(
    path: str | os.PathLike[str],
    backend: str | type[AttentionBackend] | None = None,
    device: str | torch.device = "cpu",
) -> Autoencoder:
    """Rebuild the model saved at ``path``.

    Everything is checked from the header first (``check_loadable``): nothing is built or read
    before the file is known to fit. float16, bfloat16 and float64 weights are cast to float32 with a
    ``UserWarning`` that says so; other dtypes are refused.

    Args:
        path: a ``.safetensors`` checkpoint written by ``save``.
        backend: run it on this backend instead of the one it was saved with; the attention weights
            are converted between layouts through the backend table's converters.
        device: where to put the tensors.

    Raises:
        CheckpointError: missing or unreadable file, missing or malformed metadata, non-float tensors.
        CheckpointLayoutError: unknown layout, or tensors that do not fit the model.
    """
    info = read_info(path)
    cls = check_loadable(info, backend)
    cast = _check_dtypes(info)
    if cast:
        warnings.warn(
            f"{str(info.path)!r} stores {', '.join(cast)} tensors; they are cast to float32 to load",
            UserWarning,
            stacklevel=2,
        )
    try:
        model = Autoencoder(info.config, cls)
    except QuatrainError as e:
        raise CheckpointError(f"{str(info.path)!r}: cannot build its model: {e}") from None
    tensors = safetensors.torch.load_file(str(info.path), device=str(device))
    tensors = {k: v.float() if v.dtype != torch.float32 else v for k, v in tensors.items()}
    if info.layout != model.layout:
        tensors = convert_attention_tensors(tensors, info.layout, model.layout)
    model.load_state_dict(tensors, strict=True)
    return model.to(device)


def convert_attention_tensors(tensors: Mapping[str, Tensor], source: str, target: str) -> dict[str, Tensor]:
    """Convert the attention part of a full state dict from layout ``source`` to ``target``."""
    attention = {k[len(ATTENTION_PREFIX) :]: v for k, v in tensors.items() if k.startswith(ATTENTION_PREFIX)}
    converted = convert_layout(attention, source, target)  # the backend table's converters (core/_resolve.py)
    rest = {k: v for k, v in tensors.items() if not k.startswith(ATTENTION_PREFIX)}
    return {**rest, **{ATTENTION_PREFIX + k: v for k, v in converted.items()}}
