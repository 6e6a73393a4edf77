"""Where `quatrain eval`'s time goes, on one checkpoint: the InferenceStep's warm-up and capture, its replays,
the per-batch metric sums, and the nearest-word search, each timed alone (device-synchronised medians).

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
    args = parser.parse_args()

    import torch

    import quatrain
    from quatrain._batches import Batcher
    from quatrain._metrics import nearest_words, word_ranks
    from quatrain._trainstep import InferenceStep, synchronize

    device = torch.device(args.device)
    data = quatrain.data_for_checkpoint(args.checkpoint)
    model = quatrain.load(args.checkpoint, device=device)
    windows = data.windows[args.split]
    table = torch.from_numpy(data.embeddings.vectors).to(device)
    batcher = Batcher(windows.ids, windows.lengths, table, batch_size=args.batch_size, static=device.type == "cuda")
    batch = batcher(torch.arange(min(args.batch_size, len(windows))))
    step = InferenceStep(model, cuda_graph=device.type == "cuda", warmup=1)
    found: dict[str, Any] = {"windows": len(windows), "batches": -(-len(windows) // args.batch_size)}
    synchronize(device)
    tick = time.perf_counter()
    step.run(batch)
    synchronize(device)
    found["first_call_eager_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    step.run(batch)
    synchronize(device)
    found["second_call_capture_and_replay_s"] = time.perf_counter() - tick
    found["replay_s"] = _timed(lambda: step.run(batch), device)
    found["make_batch_s"] = _timed(lambda: batcher(torch.arange(min(args.batch_size, len(windows)))), device)
    pred = step.run(batch)
    n = int(batch.mask.sum())
    flat = pred[batch.mask]
    found["tokens_per_batch"] = n
    found["nearest_words_per_batch_s"] = _timed(lambda: nearest_words(flat, table, k=5), device)
    unit = torch.nn.functional.normalize(table.float(), dim=-1)
    truth = batch.ids[batch.mask]
    found["word_ranks_per_batch_s"] = _timed(lambda: word_ranks(flat, unit, truth), device)
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(5):
            batcher(torch.arange(min(args.batch_size, len(windows))))
        synchronize(device)
    found["make_batch_profile"] = prof.key_averages().table(sort_by="cpu_time_total", row_limit=12)
    found["whole_eval_words_s"] = _timed(
        lambda: quatrain.evaluate(model, data, args.split, batch_size=args.batch_size, device=device, step=step),
        device,
        3,
    )
    found["whole_eval_no_words_s"] = _timed(
        lambda: quatrain.evaluate(
            model, data, args.split, batch_size=args.batch_size, device=device, step=step, words=False
        ),
        device,
        3,
    )
    fresh = InferenceStep(model, cuda_graph=device.type == "cuda", warmup=1)
    for words in (True, False):  # as `quatrain eval` runs it: a new step, captured before the clock
        result = quatrain.evaluate(model, data, args.split, batch_size=args.batch_size, device=device, words=words,
                                   step=fresh if words else None)  # fmt: skip
        found[f"evaluate_words_{words}"] = {k: result[k] for k in ("setup_seconds", "seconds", "seq_per_s")}
    table_text = found.pop("make_batch_profile")
    print(json.dumps(found, indent=1))
    print(table_text)


if __name__ == "__main__":
    main()
