"""Issue 12, finding 11: the nearest-word search has bounded working memory and reports progress."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from quatrain._metrics import nearest_words


@pytest.mark.parametrize(("chunk", "block"), [(7, 5), (4, 64), (1024, 32768), (3, 1)], ids=str)
def test_blocked_search_finds_what_the_full_search_finds(chunk, block):
    pred, vocab = torch.randn(50, 8), torch.randn(203, 8) * 3
    full = (F.normalize(pred, dim=-1) @ F.normalize(vocab, dim=-1).T).topk(5, dim=-1).indices
    assert torch.equal(nearest_words(pred, vocab, k=5, chunk=chunk, block=block), full)


def test_fewer_words_than_k():
    assert nearest_words(torch.randn(4, 3), torch.randn(2, 3), k=5).shape == (4, 2)
    assert nearest_words(torch.randn(0, 3), torch.randn(9, 3), k=5).shape == (0, 5)


def test_progress_counts_rows():
    seen: list[tuple[int, int]] = []
    nearest_words(torch.randn(10, 4), torch.randn(30, 4), chunk=4, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(4, 10), (8, 10), (10, 10)]


def test_working_memory_is_bounded_whatever_the_sizes():
    """3072 rows (a tiny model's eval batch) against 100k words: 1.2 GB of scores at once before the fix."""
    script = textwrap.dedent(
        """
        import resource, torch
        torch.set_num_threads(1)
        from quatrain._metrics import nearest_words
        pred, vocab = torch.randn(3072, 16), torch.randn(100_000, 16)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        nearest_words(pred, vocab, k=5)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    grew_mb = int(out.stdout.strip().splitlines()[-1])
    assert grew_mb < 400, f"peak RSS grew by {grew_mb} MB"
