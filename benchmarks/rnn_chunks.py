"""Diagnostic (CUDA): are the RNN weights cuDNN reads one contiguous chunk? For the bench's models, a deepcopy
of one, and the decoder's single-layer modules (``DecodeRNN``), fp32 and under bf16 autocast; any "not part
of single contiguous chunk" warning during a train step is printed with the line that triggered it."""

from __future__ import annotations

import copy
import traceback
import warnings

import torch

import quatrain
from quatrain import TrainStep
from quatrain.registry import get_registry
from quatrain.registry._probe import build_variants, make_batch


def chunks(rnn: torch.nn.RNNBase) -> int:
    return len({w.untyped_storage().data_ptr() for w in rnn._flat_weights})


config = quatrain.ModelConfig.preset("seed")
models = build_variants(config, ["none"], device=torch.device("cuda"), dtype=torch.float32, registry=get_registry())
model = models["none"]
copied = copy.deepcopy(model)
print("storages of decoder.rnn weights: built", chunks(model.decoder.rnn), "deepcopy", chunks(copied.decoder.rnn))
x, mask = make_batch(config, 32, torch.device("cuda"), torch.float32)
for name, m in (("built", model), ("deepcopy", copied)):
    for form in ("replay", "steps"):
        for precision in ("fp32", "bf16"):
            m.decoder.step_form = form
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                step = TrainStep(m, teacher_forcing=0.9, cuda_graph=False, precision=precision)
                step(x, mask)
            hits = [w for w in caught if "contiguous chunk" in str(w.message)]
            print(f"{name} step_form={form} {precision}: {len(hits)} compaction warnings")
            for w in hits[:1]:
                print("   ", w.filename, w.lineno)
layers = model.decoder._single_layers._made
for key, modules in layers.items():
    print("single layers", key, [chunks(mod) for mod in modules])
try:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.decoder.step_form = "replay"
        TrainStep(model, teacher_forcing=0.9, cuda_graph=False, precision="bf16")(x, mask)
except UserWarning:
    traceback.print_exc(limit=12)
