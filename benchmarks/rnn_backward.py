"""The sequential decode's LSTM: cuDNN's backward step by step against one backward over the whole sequence.

In a sequential decode the RNN's input at step t is the detached previous output or the target: no
gradient runs from an RNN output back into a later input. So the decode's RNN, as autograd sees it, is one
call over the whole input sequence, even though the forward must run step by step (each input is known
only once the step before it ran). This script times, at the seed decoder's shapes (2-layer LSTM, H = 512,
inter-layer dropout 0.2, T = 50), in float32 with cuDNN's default TF32, each replayed from one CUDA graph:

- ``steps``: what the ``steps`` engine runs now: one 2-layer cuDNN call per step with autograd, then the
  backward through the 50 calls;
- ``steps fwd``: the same forward without autograd (what inference runs);
- ``layers fwd``: the forward alone, step by step, without autograd, each layer its own cuDNN call with
  the dropout between them drawn outside (what a one-call backward needs: the masks kept);
- ``sequence fwd+bwd``: one call per layer over the whole sequence (the recompute) and its backward, with
  the kept masks;
- ``layers-2l fwd``: ``layers fwd`` through the 2-layer module's own parameters (``torch._VF.lstm`` on one
  layer's tensors), to see whether cuDNN compacts them at every call.

Medians of ``--rounds`` replays, variants interleaved.
"""

from __future__ import annotations

import argparse
import json

import torch
from _graphs import interleaved
from torch import nn


def setup(B, T=50, H=512, p=0.2):
    torch.manual_seed(0)
    rnn = nn.LSTM(H, H, 2, batch_first=True, dropout=p).cuda()
    layers = [nn.LSTM(H, H, 1, batch_first=True).cuda() for _ in range(2)]
    with torch.no_grad():
        for i, layer in enumerate(layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(layer, f"{name}_l0").copy_(getattr(rnn, f"{name}_l{i}"))
    xs = torch.randn(B, T, H, device="cuda", requires_grad=True)
    h0 = torch.randn(2, B, H, device="cuda", requires_grad=True)
    c0 = torch.randn(2, B, H, device="cuda", requires_grad=True)
    grads = torch.randn(B, T, H, device="cuda")
    masks = (torch.rand(B, T, H, device="cuda") > p).float() / (1 - p)
    return rnn, layers, xs, h0, c0, grads, masks


def variants(B):
    rnn, layers, xs, h0, c0, grads, masks = setup(B)
    T = xs.shape[1]
    every = [xs, h0, c0, *rnn.parameters()]
    layer_params = [*layers[0].parameters(), *layers[1].parameters()]

    def steps():
        state, outs = (h0, c0), []
        for t in range(T):
            out, state = rnn(xs[:, t : t + 1], state)
            outs.append(out)
        return torch.autograd.grad(torch.cat(outs, 1), every, grads)

    def steps_fwd():
        with torch.no_grad():
            state = (h0, c0)
            for t in range(T):
                _, state = rnn(xs[:, t : t + 1], state)

    def layers_fwd():
        with torch.no_grad():
            s0, s1 = (h0[:1], c0[:1]), (h0[1:], c0[1:])
            for t in range(T):
                o0, s0 = layers[0](xs[:, t : t + 1], s0)
                _, s1 = layers[1](o0 * masks[:, t : t + 1], s1)

    def layers_2l_fwd():
        flat = rnn._flat_weights
        with torch.no_grad():
            s0, s1 = (h0[:1], c0[:1]), (h0[1:], c0[1:])
            for t in range(T):
                o0, *s0 = torch._VF.lstm(xs[:, t : t + 1], s0, flat[:4], True, 1, 0.0, False, False, True)
                _, *s1 = torch._VF.lstm(o0 * masks[:, t : t + 1], s1, flat[4:], True, 1, 0.0, False, False, True)

    def sequence():
        o0, _ = layers[0](xs, (h0[:1], c0[:1]))
        o1, _ = layers[1](o0 * masks, (h0[1:], c0[1:]))
        return torch.autograd.grad(o1, [xs, h0, c0, *layer_params], grads)

    return {
        "steps": steps,
        "steps fwd": steps_fwd,
        "layers fwd": layers_fwd,
        "layers-2l fwd": layers_2l_fwd,
        "sequence fwd+bwd": sequence,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="32,256")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out")
    args = parser.parse_args()
    results = []
    for B in (int(b) for b in args.batch_sizes.split(",")):
        fns = variants(B)
        medians = interleaved(fns, rounds=args.rounds)  # µs per call
        print(f"## B={B}, T=50, 2-layer LSTM H=512, float32 (cuDNN TF32 {torch.backends.cudnn.allow_tf32})")
        for name in fns:
            median = medians[name] / 1000
            results.append(dict(B=B, variant=name, ms=median))
            print(f"  {name:18s} {median:7.3f} ms")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(torch=torch.__version__, device=torch.cuda.get_device_name(), results=results), f, indent=1)


if __name__ == "__main__":
    main()
