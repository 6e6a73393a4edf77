"""How cuBLAS runs the decoder step's small float32 products, form by form (issue 13; CUDA only).

Every linear map of a decoder step at the seed preset is a product with M = batch rows (32 or 256) and
N, K in {300, 512, 1024, 2048}. cuBLAS picks a kernel per call from the shapes, the layout and whether the
bias rides in the epilogue (PyTorch sends ``addmm`` with a 1-D bias to cuBLASLt). This script times each
form of the same product, in float32, replayed from a CUDA graph of ``--repeat`` calls, and names the
kernels it launched (one eager call under the profiler):

- ``linear``: ``F.linear(x, W, b)``, what ``nn.Linear`` runs (cuBLASLt with the bias epilogue);
- ``mm+add``: ``x @ W.T`` then ``+ b``;
- ``addmm-2d``: ``torch.addmm(b.expand(M, N), x, W.T)`` (a 2-D input: cuBLAS, C copied in, beta 1);
- ``linear-nobias``: ``F.linear(x, W)``;
- ``wt``: ``x @ Wt`` with ``Wt`` = ``W.T`` stored contiguous (K, N) (the other layout);
- backward forms of the same map: ``g @ W`` (what autograd runs for the input's gradient) and
  ``F.linear(g, Wt)`` (the same product with the weight's transpose stored).

Then one step of the seed decoder's 2-layer LSTM (H = 512), forward and backward (gradients of the
input, the state and the weights) and forward alone, as cuDNN's fused op (``nn.LSTM`` over one step, what
the ``steps`` engine runs) against the same step as cell arithmetic (``quatrain._rnn.rnn_cell_step``), and
the cell arithmetic's backward without the weights' gradients (what deferring them to one product a decode
leaves per step).

Medians of ``--rounds`` replays; all forms of one shape interleaved in each round.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from _graphs import interleaved

SHAPES = [(300, 512), (512, 512), (512, 1024), (512, 300), (512, 2048), (1024, 512), (1024, 2048)]
"""(K, N): input and output widths of the step's maps (input_proj, the integration layers, the stacked
query product, the output layer, an LSTM layer's gates over its input or [input | h])."""


def forms(x, w, b, g, wt):
    M, N = x.shape[0], w.shape[0]
    return {
        "linear": lambda: F.linear(x, w, b),
        "mm+add": lambda: (x @ w.t()) + b,
        "addmm-2d": lambda: torch.addmm(b.expand(M, N), x, w.t()),
        "linear-nobias": lambda: F.linear(x, w),
        "wt": lambda: x @ wt,
        "bwd g@W": lambda: g @ w,
        "bwd linear(g,Wt)": lambda: F.linear(g, wt),
    }


def lstm_forms(M):
    from quatrain._rnn import rnn_cell_step

    rnn = torch.nn.LSTM(512, 512, 2, batch_first=True).cuda()
    params = list(rnn.parameters())
    x = torch.randn(M, 512, device="cuda", requires_grad=True)
    h = torch.randn(2, M, 512, device="cuda", requires_grad=True)
    c = torch.randn(2, M, 512, device="cuda", requires_grad=True)

    def cudnn(grads):
        out, (h1, c1) = rnn(x[:, None], (h, c))
        if grads is None:
            return out
        return torch.autograd.grad((out.sum() + h1.sum() + c1.sum()), grads)

    def cells(grads):
        out, (h1, c1) = rnn_cell_step(rnn, x, (h, c))
        if grads is None:
            return out
        return torch.autograd.grad((out.sum() + h1.sum() + c1.sum()), grads)

    every, inputs = [x, h, c, *params], [x, h, c]
    return {
        "cudnn fwd+bwd": lambda: cudnn(every),
        "cells fwd+bwd": lambda: cells(every),
        "cudnn bwd no dW": lambda: cudnn(inputs),
        "cells bwd no dW": lambda: cells(inputs),
        "cudnn fwd": lambda: torch.no_grad()(cudnn)(None),
        "cells fwd": lambda: torch.no_grad()(cells)(None),
    }


def kernels(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name[:70] for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="32,256")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    results = []
    for M in (int(m) for m in args.batch_sizes.split(",")):
        for K, N in SHAPES:
            x = torch.randn(M, K, device="cuda")
            w, b = torch.randn(N, K, device="cuda"), torch.randn(N, device="cuda")
            g, wt = torch.randn(M, N, device="cuda"), w.t().contiguous()
            fns = forms(x, w, b, g, wt)
            medians = interleaved(fns, rounds=args.rounds, repeat=args.repeat)
            print(f"## M={M} K={K} N={N}")
            for name, fn in fns.items():
                median = medians[name]
                names = kernels(fn)
                results.append(dict(M=M, K=K, N=N, form=name, us=median, kernels=names))
                print(f"  {name:18s} {median:7.2f} us  {' + '.join(names)}")
        fns = lstm_forms(M)
        medians = interleaved(fns, rounds=args.rounds, repeat=args.repeat)
        print(f"## M={M}: one step of a 2-layer LSTM, H=512 (cuDNN TF32: {torch.backends.cudnn.allow_tf32})")
        for name, fn in fns.items():
            median = medians[name]
            names = kernels(fn)
            results.append(dict(M=M, form=name, us=median, kernels=names))
            print(f"  {name:18s} {median:7.2f} us  {len(names)} kernels")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                dict(
                    torch=torch.__version__,
                    device=torch.cuda.get_device_name(),
                    repeat=args.repeat,
                    rounds=args.rounds,
                    results=results,
                ),
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
