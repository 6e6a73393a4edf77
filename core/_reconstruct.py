"""Reconstructing text: encode lines, decode them autoregressively, and read back the nearest words."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

from ._batches import Batcher
from ._checkpoint import atomic_write_bytes
from ._errors import QuatrainError
from ._metrics import nearest_words
from ._model import Autoencoder
from ._precision import autocast, require_precision, step_precision
from ._trainstep import InferenceStep
from .data import NEWLINE, DataError, Embeddings, cut_windows, encode_poem, tokenize


@attrs.frozen
class ReconstructedLine:
    """One input line beside its reconstruction."""

    text: str
    """The line as given."""
    tokens: tuple[str, ...]
    """What the model saw (words the embeddings lack appear as <unk>, or are gone if dropped)."""
    words: tuple[str, ...]
    """The nearest vocabulary word of each reconstructed vector (the line's <nl> excluded)."""
    cosine: float
    """Mean cosine between reconstructed and true vectors over the line's tokens, its <nl> included."""


@attrs.frozen(eq=False)
class Reconstruction:
    lines: tuple[ReconstructedLine, ...]
    windows: tuple[tuple[str, ...], ...]
    """The tokens of each window the text was cut into."""
    attention: tuple[Tensor, ...]
    """Per window, (decoder steps, input tokens) weights averaged over heads; empty without attention."""


def reconstruct_lines(
    model: Autoencoder,
    embeddings: Embeddings,
    lines: Sequence[str],
    *,
    unknown: str = "vector",
    max_len: int | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    progress: Callable[[int, int, str], None] | None = None,
    weights: bool = True,
    precision: str = "fp32",
) -> Reconstruction:
    """Reconstruct ``lines`` (one poem) with ``model``, fully autoregressive.

    Args:
        model: the autoencoder.
        embeddings: the vectors it was trained with.
        lines: the text, one line per entry (blank lines are skipped).
        unknown: 'vector' or 'drop', as in training.
        max_len: the window length (default: the model's ``max_len``); longer text is cut into windows.
        device: where to run.
        batch_size: windows decoded per forward pass (padded and masked; the result is the same).
        progress: called as ``progress(done, total, label)`` while windows are decoded and while their
            nearest words are searched (a 200k-token file takes minutes on a CPU).
        weights: also return the attention weights (``Reconstruction.attention``, what ``plot_attention``
            draws). Without them the windows run through the engine's ``InferenceStep`` (on CUDA replayed
            from a CUDA graph: windows padded to the longest one and groups to ``batch_size`` rows, so
            every group has one shape), as ``quatrain eval`` does.
        precision: 'fp32', 'tf32' (CUDA only) or 'bf16' autocast, as ``quatrain train --precision`` runs it
            (``quatrain._precision``); with ``weights`` too.

    Raises:
        ConfigError: this machine cannot run ``precision`` (checked before any work).
        DataError: no line holds a token.
    """
    target = torch.device(device)
    require_precision(precision, target, model.config.rnn)
    lines = [line.strip() for line in lines if line.strip()]
    if not lines:
        raise DataError("nothing to reconstruct: the text is empty")
    if embeddings.dim != model.config.embed_dim:
        raise DataError(f"embeddings are {embeddings.dim}-d but the model reads {model.config.embed_dim}-d vectors")
    ids, _, _ = encode_poem(lines, embeddings, unknown)
    newline = embeddings.index[NEWLINE]
    windows = cut_windows(ids, newline, max_len or model.config.max_len)
    table = torch.from_numpy(embeddings.vectors).to(device)
    preds: list[Tensor] = []
    attention: list[Tensor] = []
    model.eval()
    static = target.type == "cuda" and not weights  # one shape per group, so one graph
    step = None if weights else InferenceStep(model, cuda_graph=static, warmup=1, precision=precision)
    width = max(len(w) for w in windows)
    ids_host = torch.tensor([w + [newline] * (width - len(w)) for w in windows])  # (N, width)
    batcher = Batcher(ids_host, torch.tensor([len(w) for w in windows]), table, batch_size=batch_size, static=static)
    with torch.no_grad():
        for first in range(0, len(windows), batch_size):
            group = windows[first : first + batch_size]
            batch = batcher(torch.arange(first, first + len(group)))  # static: padded with empty rows
            if step is not None:
                recon = step.run(batch)
            else:
                with step_precision(precision), autocast(target, precision):
                    out = model(batch.x, batch.mask, teacher_forcing=0.0, need_weights=model.config.attention != "none")
                recon = out.reconstruction
            for row, window in enumerate(group):
                preds.append(recon[row, : len(window)].float())
                if step is None and out.attention is not None:  # (T, S) of this window, averaged over heads
                    attention.append(out.attention[row, :, : len(window), : len(window)].float().mean(dim=0).cpu())
            if progress is not None:
                progress(first + len(group), len(windows), "decoding windows")
    pred = torch.cat(preds)  # (N, E) over every token of the text
    truth = table[torch.tensor(ids, device=device)]
    cosine = F.cosine_similarity(pred, truth, dim=-1).cpu()
    search = None if progress is None else (lambda done, total: progress(done, total, "searching nearest words"))
    nearest = nearest_words(pred, table, k=1, progress=search)[:, 0].cpu().tolist()
    result: list[ReconstructedLine] = []
    start = 0
    for line in lines:
        count = sum(1 for t in tokenize(line, embeddings.index) if unknown == "vector" or t in embeddings.index) + 1
        span = range(start, start + count)
        result.append(
            ReconstructedLine(
                text=line,
                tokens=tuple(embeddings.words[ids[i]] for i in span[:-1]),
                words=tuple(embeddings.words[nearest[i]] for i in span[:-1]),
                cosine=float(cosine[start : start + count].mean()),
            )
        )
        start += count
    assert start == len(ids), "every token belongs to exactly one line"
    return Reconstruction(
        lines=tuple(result),
        windows=tuple(tuple(embeddings.words[i] for i in w) for w in windows),
        attention=tuple(attention),
    )


def plot_attention(reconstruction: Reconstruction, path: str | os.PathLike[str], window: int = 0) -> Path:
    """Save the heatmap of one window's attention (decoder step x input token) as an image, atomically.

    Raises:
        QuatrainError: matplotlib is missing, or the model has no attention.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise QuatrainError("--plot needs matplotlib: pip install 'quatrain[plot]' (or matplotlib)") from None
    if not reconstruction.attention:
        raise QuatrainError("this model has no attention (attention='none'), so there is no heatmap to plot")
    path = Path(path)
    weights = reconstruction.attention[window].numpy()
    tokens = ["⏎" if t == NEWLINE else t for t in reconstruction.windows[window]]
    size = max(4.0, 0.28 * len(tokens) + 1.5)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(weights, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
    ax.set_yticks(range(len(tokens)), [f"{i}" for i in range(len(tokens))], fontsize=7)
    ax.set_xlabel("input token (memory)")
    ax.set_ylabel("decoder step")
    ax.set_title("encoder-decoder attention (mean over heads)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    buffer = io.BytesIO()
    suffix = path.suffix.lstrip(".").lower() or "png"
    try:
        fig.savefig(buffer, format=suffix, dpi=120)
    except ValueError as e:
        raise QuatrainError(f"cannot save a plot as {path.name!r}: {e}") from None
    finally:
        plt.close(fig)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as e:
        raise QuatrainError(f"cannot write {str(path)!r}: {e.strerror or e}") from None
    return path
