"""Reconstruction metrics over real tokens only: token cosine, nearest-word top-1/top-5, per-position cosine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def nearest_words(
    pred: Tensor,
    vocabulary: Tensor,
    k: int = 5,
    chunk: int = 1024,
    block: int = 32768,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Indices (N, k) of the ``k`` vocabulary vectors with the highest cosine to each row of ``pred`` (N, E).

    The search runs over blocks of ``chunk`` rows by ``block`` words, keeping a running top-k, so its
    working memory is ``chunk * block`` scores (128 MB at the defaults) whatever N and V are: the
    400k-word GloVe vocabulary against 4096 rows at once used to take 6.5 GB (issue 12, finding 11;
    tests/core/test_adversarial_metrics.py measures the peak).

    Args:
        pred: predicted vectors (N, E).
        vocabulary: (V, E) word vectors, or already unit-normalised ones (cosine is scale-free).
        k: how many neighbours, best first.
        chunk: rows of ``pred`` per block.
        block: vocabulary words per block.
        progress: called as ``progress(rows_done, rows_total)`` after each chunk of rows.
    """
    vocab = F.normalize(vocabulary.float(), dim=-1, eps=1e-8)
    k = min(k, vocab.shape[0])
    total = pred.shape[0]
    out = []
    for start in range(0, total, chunk):
        q = F.normalize(pred[start : start + chunk].float(), dim=-1, eps=1e-8)
        best_scores: Tensor | None = None
        best_index: Tensor | None = None
        for first in range(0, vocab.shape[0], block):
            similarity = torch.mm(q, vocab[first : first + block].T)  # (chunk, block)
            scores, index = similarity.topk(min(k, similarity.shape[1]), dim=-1)
            del similarity  # before the next block's product, so at most one is alive
            index = index + first
            if best_scores is not None and best_index is not None:
                merged = torch.cat([best_scores, scores], dim=1)
                scores, keep = merged.topk(min(k, merged.shape[1]), dim=-1)
                index = torch.cat([best_index, index], dim=1).gather(1, keep)
            best_scores, best_index = scores, index
        assert best_index is not None
        out.append(best_index)
        if progress is not None:
            progress(min(start + chunk, total), total)
    if not out:
        return torch.zeros(0, k, dtype=torch.long, device=pred.device)
    return torch.cat(out)


def word_ranks(
    pred: Tensor,
    unit_vocabulary: Tensor,
    truth: Tensor,
    *,
    cap: int = 5,
    budget: int | None = None,
    count: bool | None = None,
) -> Tensor:
    """For each row of ``pred`` (N, E), how many vocabulary words have a higher cosine to it than its true
    word ``truth`` (N,), capped at ``cap``: 0 means the true word is the nearest (top-1), below 5 that it is
    in the top 5.

    Where only the true word's place matters this replaces a top-k search of word indices, and nothing is
    read back to the host (evaluation keeps its sums on the device). A word tied with the true one does not
    count against it (a top-k search would break the tie by index).

    Args:
        pred: predicted vectors (N, E).
        unit_vocabulary: (V, E) unit-normalised word vectors.
        truth: (N,) indices of the true words into the vocabulary.
        cap: the largest rank told apart.
        budget: scores alive at once (working memory: 4 bytes each); default 2**25 (128 MB) on the CPU
            and 2**27 on a GPU.
        count: count the higher words in each block (default on a GPU: one comparison and one sum), or
            else keep the ``cap`` best scores of the other words (default on the CPU, where a top-k of a
            block is cheaper than counting it). Both give the same ranks.
    """
    if budget is None:
        budget = 2**27 if pred.is_cuda else 2**25
    by_count = pred.is_cuda if count is None else count
    V, N = unit_vocabulary.shape[0], pred.shape[0]
    q = F.normalize(pred.float(), dim=-1, eps=1e-8)
    truth = truth.long()
    mine = (q * unit_vocabulary[truth]).sum(dim=-1)  # (N,) the true word's cosine
    ranks = torch.zeros(N, dtype=torch.long, device=q.device)
    best = None if by_count else torch.full((N, cap), float("-inf"), device=q.device)  # others' top cosines
    block = max(1, min(V, budget // max(1, min(N, 4096))))
    chunk = max(1, budget // block)
    for start in range(0, N, chunk):
        rows = slice(start, start + chunk)
        for first in range(0, V, block):
            scores = torch.mm(q[rows], unit_vocabulary[first : first + block].T)  # (chunk, block)
            local = truth[rows] - first
            inside = (local >= 0) & (local < scores.shape[1])
            at = local.clamp(0, scores.shape[1] - 1)[:, None]
            # the true word never outranks itself, whatever the product rounded its own score to
            scores.scatter_(1, at, torch.where(inside[:, None], float("-inf"), scores.gather(1, at)))
            if best is None:
                ranks[rows] += (scores > mine[rows, None]).sum(dim=1)
            else:
                top = scores.topk(min(cap, scores.shape[1]), dim=1).values
                best[rows] = torch.cat([best[rows], top], dim=1).topk(cap, dim=1).values
            del scores
    if best is not None:
        ranks = (best > mine[:, None]).sum(dim=1)
    return ranks.clamp_(max=cap)


class NeighbourRanks:
    """``word_ranks`` for predictions of a known set of true words, searching each prediction's
    ``neighbours`` nearest words of its true word instead of the whole vocabulary wherever that provably
    finds every word that outranks the true one; the rows it cannot vouch for are flagged ``covered=False``
    for a full ``word_ranks`` search.

    Why it is exact: for unit vectors q (the prediction), t (its true word) and w, a word w with
    cos(q, w) > cos(q, t) = m lies within twice the angle between q and t of t, so cos(t, w) > 2m^2 - 1
    (for m > 0). Every word closer to t than its ``neighbours``-th neighbour is in t's neighbour list; so
    when 2m^2 - 1 exceeds that neighbour's cosine (``limit``, less a rounding margin) the list holds every
    word that can outrank t, and counting within it gives the whole vocabulary's rank.

    A well-trained model's predictions sit close to their words (token cosine above 0.99), and almost
    every row is covered: a search of ``neighbours`` words instead of all V (400k for GloVe). The lists
    are found once here, one ``nearest_words`` search of the distinct true words.

    Args:
        unit_vocabulary: (V, E) unit-normalised word vectors.
        words: the true words that will be ranked (any order, repeats allowed).
        neighbours: how many of each word's nearest words are kept.
        margin: slack on the cosine bound for rounding (the bound and the lists are computed in fp32).
    """

    def __init__(self, unit_vocabulary: Tensor, words: Tensor, *, neighbours: int = 64, margin: float = 1e-4) -> None:
        V = unit_vocabulary.shape[0]
        device = unit_vocabulary.device
        words = torch.unique(words.long().to(device))
        k = max(0, min(neighbours, V - 1))
        self.vocabulary, self.margin = unit_vocabulary, margin
        self.slot = torch.full((V,), -1, dtype=torch.long, device=device)
        self.slot[words] = torch.arange(len(words), device=device)
        if k == 0 or len(words) == 0:
            self.lists = torch.zeros(len(words), 0, dtype=torch.long, device=device)
        else:
            found = nearest_words(unit_vocabulary[words], unit_vocabulary, k=k + 1)  # (D, k + 1), best first
            drop = found == words[:, None]  # the word itself, or else the last one found
            drop[:, -1] |= ~drop.any(dim=1)
            self.lists = found[~drop].view(len(words), k)
        if k == V - 1 or k == 0:  # every other word is listed: every row is covered; or none is
            self.limit = torch.full((len(words),), float("-inf" if k == V - 1 else "inf"), device=device)
        else:
            self.limit = (unit_vocabulary[self.lists[:, -1]] * unit_vocabulary[words]).sum(dim=-1)

    def __call__(self, pred: Tensor, truth: Tensor, *, cap: int = 5, budget: int = 2**25) -> tuple[Tensor, Tensor]:
        """(ranks, covered) for predictions ``pred`` (N, E) of words ``truth`` (N,).

        ``ranks`` is ``word_ranks``'s answer on the covered rows (on the others, the rank within the list
        only; a word that was not among ``words`` is never covered);
        ``budget`` bounds the gathered neighbour vectors alive at once (floats). No host sync.
        """
        q = F.normalize(pred.float(), dim=-1, eps=1e-8)
        slot = self.slot[truth.long()]
        N, E, k = q.shape[0], q.shape[1], self.lists.shape[1]
        ranks = torch.empty(N, dtype=torch.long, device=q.device)
        covered = torch.empty(N, dtype=torch.bool, device=q.device)
        chunk = max(1, budget // max(1, (k + 1) * E))
        for start in range(0, N, chunk):
            rows = slice(start, start + chunk)
            listed = torch.cat([truth[rows].long()[:, None], self.lists[slot[rows]]], dim=1)  # (n, k + 1)
            scores = torch.bmm(self.vocabulary[listed], q[rows, :, None]).squeeze(-1)  # one product for all
            mine = scores[:, 0]
            ranks[rows] = (scores[:, 1:] > mine[:, None]).sum(dim=1)
            bound = torch.where(mine > 0, 2 * mine * mine - 1, -1.0)  # cosine that any better word exceeds
            covered[rows] = (bound - self.margin > self.limit[slot[rows]]) & (slot[rows] >= 0)
        return ranks.clamp_(max=cap), covered


class ReconstructionMetrics:
    """Accumulates metrics over batches; token-weighted, pads excluded.

    Args:
        vocabulary: (V, E) the embedding vectors that nearest-word accuracy searches, or None to skip it.
    """

    def __init__(self, vocabulary: Tensor | None = None) -> None:
        self.vocabulary = F.normalize(vocabulary.float(), dim=-1, eps=1e-8) if vocabulary is not None else None
        self.tokens = 0
        self.cosine_sum = 0.0
        self.top1 = 0
        self.top5 = 0
        self.position_sum: Tensor = torch.zeros(0, dtype=torch.float64)
        self.position_count: Tensor = torch.zeros(0, dtype=torch.long)
        self.loss_sum = 0.0

    def update(self, pred: Tensor, target: Tensor, mask: Tensor, ids: Tensor | None = None, loss: float = 0.0) -> None:
        """Add a batch.

        Args:
            pred, target: (B, T, E) reconstruction and the true vectors.
            mask: (B, T) bool, True at real tokens.
            ids: (B, T) the true tokens' indices into the vocabulary (needed for word accuracy).
            loss: the batch's mean loss over its real tokens (accumulated token-weighted).
        """
        cos = F.cosine_similarity(pred.float(), target.float(), dim=-1, eps=1e-8)  # (B, T)
        m = mask.to(cos.device)
        n = int(m.sum())
        self.tokens += n
        self.loss_sum += loss * n
        self.cosine_sum += float(cos[m].double().sum())
        T = cos.shape[1]
        if self.position_sum.shape[0] < T:
            grow = T - self.position_sum.shape[0]
            self.position_sum = torch.cat([self.position_sum, torch.zeros(grow, dtype=torch.float64)])
            self.position_count = torch.cat([self.position_count, torch.zeros(grow, dtype=torch.long)])
        self.position_sum[:T] += (cos.double() * m).sum(dim=0).cpu()
        self.position_count[:T] += m.sum(dim=0).cpu()
        if self.vocabulary is not None and ids is not None and n:
            vocab = self.vocabulary.to(pred.device)
            top = nearest_words(pred[m], vocab, k=5)  # (n, 5)
            truth = ids.to(pred.device)[m][:, None]
            self.top1 += int((top[:, :1] == truth).sum())
            self.top5 += int((top == truth).any(dim=1).sum())

    def result(self) -> dict[str, Any]:
        """{'tokens', 'loss', 'cosine', 'word_top1', 'word_top5' (None without a vocabulary), 'per_position_cosine'}."""
        n = max(self.tokens, 1)
        per_position = [
            round(float(s / c), 6) if c else None
            for s, c in zip(self.position_sum.tolist(), self.position_count.tolist(), strict=True)
        ]
        words = self.vocabulary is not None
        return {
            "tokens": self.tokens,
            "loss": self.loss_sum / n,
            "cosine": self.cosine_sum / n,
            "word_top1": self.top1 / n if words else None,
            "word_top5": self.top5 / n if words else None,
            "per_position_cosine": per_position,
        }
