"""Where `quatrain eval`'s time goes, on one checkpoint, and how its rate compares with the InferenceStep it
runs: the step's replay at the evaluation's own batch shape and at the requested batch size, the two tiers of
the word search per batch (neighbour lists, whole vocabulary), and whole evaluations (device-synchronised
medians; one process, so every figure comes from the same run).

    python benchmarks/eval_profile.py CHECKPOINT [--split test] [--batch-size 256] [--device cuda]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any


def _timed(fn: Callable[[], Any], device: Any, repeat: int = 5) -> float:
    from quatrain._trainstep import synchronize

    times = []
    for _ in range(repeat):
        synchronize(device)
        tick = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - tick)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    import torch

    import quatrain
    from quatrain._batches import Batcher
    from quatrain._evaluate import SplitEvaluator
    from quatrain._metrics import word_ranks
    from quatrain._trainstep import InferenceStep, synchronize

    device = torch.device(args.device)
    data = quatrain.data_for_checkpoint(args.checkpoint)
    model = quatrain.load(args.checkpoint, device=device)
    windows = data.windows[args.split]
    static = device.type == "cuda"
    found: dict[str, Any] = {"checkpoint": args.checkpoint, "backend": model.backend, "windows": len(windows)}
    found["requested_batch"] = args.batch_size

    # the evaluation, as `quatrain eval` runs it: set up (neighbour lists, capture) once, then measured
    tick = time.perf_counter()
    evaluator = SplitEvaluator(model, data, args.split, batch_size=args.batch_size, device=device)
    synchronize(device)
    found["evaluator_init_s"] = time.perf_counter() - tick
    runs = [evaluator() for _ in range(args.repeat)]
    first = runs[0]
    found["eval_batch"], found["eval_batches"] = evaluator.batches.batch_size, len(evaluator.batches)
    found["first_call_setup_s"] = first["setup_seconds"]
    found["eval_s"] = statistics.median(r["seconds"] for r in runs)
    found["eval_seq_per_s"] = len(windows) / found["eval_s"]
    found["word_tokens"], found["word_full_search"] = first["word_tokens"], first["word_full_search"]
    found["cosine"], found["word_top1"], found["word_top5"] = first["cosine"], first["word_top1"], first["word_top5"]
    plain = SplitEvaluator(model, data, args.split, batch_size=args.batch_size, device=device, words=False)
    plain_runs = [plain() for _ in range(args.repeat)]
    found["eval_no_words_s"] = statistics.median(r["seconds"] for r in plain_runs)

    # the InferenceStep alone, replayed at the evaluation's shape and at the requested batch size
    step = InferenceStep(model, cuda_graph=static, warmup=1)
    for rows in sorted({found["eval_batch"], args.batch_size}):
        batcher = Batcher(windows.ids, windows.lengths, evaluator.batches.table, batch_size=rows, static=static)
        batch = batcher(torch.arange(min(rows, len(windows))))  # full rows (padded only past the split's end)
        step.prepare(batch)
        replay = _timed(lambda batch=batch: step.run(batch), device, args.repeat)
        found[f"step_b{rows}_s"] = replay
        found[f"step_b{rows}_seq_per_s"] = rows / replay
    for rows in sorted({found["eval_batch"], args.batch_size}):
        found[f"ratio_eval_to_step_b{rows}"] = found["eval_seq_per_s"] / found[f"step_b{rows}_seq_per_s"]

    # the word search per batch: the neighbour lists (what eval runs) and the whole vocabulary (the fallback)
    batch = evaluator.batches[0]
    pred = step.run(batch)
    where = evaluator.where[0]
    flat = pred.reshape(-1, pred.shape[-1]).index_select(0, where)
    assert batch.ids is not None and evaluator.ranker is not None and evaluator.vocabulary is not None
    truth = batch.ids.reshape(-1).index_select(0, where)
    vocabulary = evaluator.vocabulary
    found["tokens_per_batch"] = len(where)
    found["neighbour_ranks_per_batch_s"] = _timed(lambda: evaluator.ranker(flat, truth), device, args.repeat)
    found["whole_vocabulary_ranks_per_batch_s"] = _timed(lambda: word_ranks(flat, vocabulary, truth), device, 3)
    ranks, covered = evaluator.ranker(flat, truth)
    full = word_ranks(flat, vocabulary, truth)
    found["neighbour_ranks_agree_on_covered_rows"] = bool(torch.equal(ranks[covered], full[covered]))
    print(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
