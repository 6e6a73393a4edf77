"""The conformance kit's runs: one backend, the reference in float64 and in the test dtype, the same weights.

Private to ``quatrain.testing``, which builds the matrix and the report; every cell here returns a
``Comparison`` under the one rule (``quatrain._compare``), or a repeat check's difference.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from ._compare import Comparison, compare, without_kinks
from ._config import ModelConfig
from ._contract import AttentionBackend
from ._model import Autoencoder

ATTENTION_PREFIX = "decoder.attention."
Convert = Callable[[Mapping[str, Tensor]], dict[str, Tensor]]
Results = dict[str, Tensor | None]


def _grads(named: Iterable[tuple[str, torch.nn.Parameter]]) -> dict[str, Tensor | None]:
    return {name: (p.grad.detach().clone() if p.grad is not None else None) for name, p in named}


class Kit:
    """One run of the kit: the backend, the reference, the converter between their layouts."""

    def __init__(self, cls: type[AttentionBackend], ref: type[AttentionBackend], convert: Convert, seed: int) -> None:
        self.cls, self.ref, self.convert, self.seed = cls, ref, convert, seed
        self.caps = cls.capabilities

    def _pair(self, device: str, dtype: torch.dtype, hidden: int = 32, heads: int = 4) -> tuple[Any, Any]:
        torch.manual_seed(self.seed)
        ref = self.ref(hidden, heads).to(device=device, dtype=dtype)
        mod = self.cls(hidden, heads).to(device=device, dtype=dtype)
        mod.load_state_dict(self.convert(ref.state_dict()), strict=True)
        return ref, mod

    def _inputs(self, device: str, dtype: torch.dtype, T: int) -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(self.seed + 1)
        B, S, H = 6, 7, 32
        key_mask = torch.rand(B, S, generator=gen) < 0.6
        key_mask[0] = False  # every key masked: must give zeros, never NaN
        key_mask[1] = False
        key_mask[1, 3] = True  # exactly one key
        key_mask[2] = True  # no padding
        tensors = {
            "query": torch.randn(B, T, H, generator=gen),
            "memory": torch.randn(B, S, H, generator=gen),
            "cotangent": torch.randn(B, T, H, generator=gen),
        }
        out = {k: v.to(device=device, dtype=dtype) for k, v in tensors.items()}
        out["key_mask"] = key_mask.to(device)
        return out

    def _run_module(
        self, module: Any, data: Mapping[str, Tensor], mode: str, weights: bool
    ) -> dict[str, Tensor | None]:
        train = self.caps.training and not weights
        dtype = next(module.parameters()).dtype
        query = data["query"].to(dtype, copy=True).requires_grad_(train)
        memory = data["memory"].to(dtype, copy=True).requires_grad_(train)
        module.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(train):
            state = module.prepare(memory, data["key_mask"])
            if mode == "step":
                steps = [module.step(query[:, t], state, need_weights=weights) for t in range(query.shape[1])]
                out = torch.stack([c for c, _ in steps], dim=1)
                w = torch.stack([w for _, w in steps], dim=2) if weights and steps[0][1] is not None else None
            else:
                out, w = module.parallel(query, state, need_weights=weights)
        result: dict[str, Tensor | None] = {"output": out.detach()}
        if weights:
            result["weights"] = w.detach() if w is not None else None
        if train:
            (out * data["cotangent"].to(dtype)).sum().backward()
            result |= {"grad query": query.grad, "grad memory": memory.grad}
            result |= {f"grad {k}": v for k, v in _grads(module.named_parameters()).items()}
        return result

    def _converted_grads(self, result: dict[str, Tensor | None]) -> dict[str, Tensor | None]:
        """Reference parameter gradients mapped to the backend's layout (converters are linear)."""
        names = [k[len("grad ") :] for k in result if k.startswith("grad ") and "." in k]  # parameters
        grads = {n: result.pop(f"grad {n}") for n in names}
        if not grads or any(g is None for g in grads.values()):
            return result
        return result | {f"grad {k}": v for k, v in self.convert(grads).items()}  # type: ignore[arg-type]

    def module(self, device: str, dtype: torch.dtype, mode: str, weights: bool = False) -> Comparison:
        data = self._inputs(device, dtype, T=3 if mode == "step" else 5)
        ref_low, mod = self._pair(device, dtype)
        golden = copy.deepcopy(ref_low).double()  # float64 on the same rounded weights and inputs
        return self._judge(
            self._converted_grads(self._run_module(golden, data, mode, weights)),
            self._converted_grads(self._run_module(ref_low, data, mode, weights)),
            self._run_module(mod, data, mode, weights),
            dtype,
        )

    def _judge(
        self, golden: Results, reference: Results, got: Results, dtype: torch.dtype, gradient_kind: str = "gradient"
    ) -> Comparison:
        """The one rule; an approximate backend's declared tolerance widens every bound (see _compare)."""
        tolerance = 0.0 if self.caps.exact else self.caps.tolerance
        return compare(
            golden,
            reference,
            got,
            dtype=dtype,
            tolerance=tolerance,
            gradient_kind=gradient_kind,
            reference_name=self.ref.name,
        )

    def _models(self, kind: str, device: str, dtype: torch.dtype) -> tuple[Autoencoder, Autoencoder]:
        config = ModelConfig.preset("tiny", rnn=kind, dropout=0.0)
        torch.manual_seed(self.seed)
        ref = Autoencoder(config, self.ref)
        model = Autoencoder(config, self.cls)
        state = ref.state_dict()
        attention = {k[len(ATTENTION_PREFIX) :]: v for k, v in state.items() if k.startswith(ATTENTION_PREFIX)}
        rest = {k: v for k, v in state.items() if not k.startswith(ATTENTION_PREFIX)}
        model.load_state_dict(rest | {ATTENTION_PREFIX + k: v for k, v in self.convert(attention).items()})
        # Smooth ReLUs in both (the golden is a copy of ref): see without_kinks.
        ref, model = without_kinks(ref), without_kinks(model)
        return ref.to(device=device, dtype=dtype), model.to(device=device, dtype=dtype)

    def _run_model(self, model: Autoencoder, data: Mapping[str, Tensor], tf: float) -> dict[str, Tensor | None]:
        model.train(self.caps.training)
        dtype = next(model.parameters()).dtype
        x = data["x"].to(dtype, copy=True).requires_grad_(self.caps.training)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(self.seed)  # the same teacher-forcing coins for both models
        with torch.set_grad_enabled(self.caps.training):
            out = model(x, data["mask"], teacher_forcing=tf).reconstruction
        result: dict[str, Tensor | None] = {"output": out.detach()}
        if self.caps.training:
            (out * data["cotangent"].to(dtype)).sum().backward()
            result["grad x"] = x.grad
            result |= {f"grad {k}": v for k, v in _grads(model.named_parameters()).items()}
        return result

    def _decode_inputs(self, device: str, dtype: torch.dtype) -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(self.seed + 2)
        T, E = 8, ModelConfig.PRESETS["tiny"]["embed_dim"]
        lengths = torch.tensor([T, 1, 0, *torch.randint(1, T + 1, (3,), generator=gen).tolist()])
        return {
            "x": torch.randn(len(lengths), T, E, generator=gen).to(device=device, dtype=dtype),
            "mask": (torch.arange(T)[None, :] < lengths[:, None]).to(device),
            "cotangent": torch.randn(len(lengths), T, E, generator=gen).to(device=device, dtype=dtype),
        }

    def decode(self, kind: str, device: str, dtype: torch.dtype, tf: float) -> Comparison:
        data = self._decode_inputs(device, dtype)
        ref_low, model = self._models(kind, device, dtype)
        golden = copy.deepcopy(ref_low).double()  # float64 on the same rounded weights and inputs
        return self._judge(
            self._decode_reference(golden, data, tf),
            self._decode_reference(ref_low, data, tf),
            self._run_model(model, data, tf),
            dtype,
            "model gradient",
        )

    def _decode_reference(self, ref: Autoencoder, data: Mapping[str, Tensor], tf: float) -> dict[str, Tensor | None]:
        want = self._run_model(ref, data, tf)
        prefix = "grad " + ATTENTION_PREFIX
        grads = {k[len(prefix) :]: want.pop(k) for k in list(want) if k.startswith(prefix)}
        if grads and all(g is not None for g in grads.values()):
            want |= {prefix + k: v for k, v in self.convert(grads).items()}  # type: ignore[arg-type]
        return want

    def repeat_module(self, device: str, dtype: torch.dtype) -> str:
        data = self._inputs(device, dtype, T=3)
        module = self._pair(device, dtype)[1]
        return self._repeat(lambda: self._run_module(module, data, "step", False))

    def repeat_decode(self, kind: str, device: str, dtype: torch.dtype) -> str:
        data = self._decode_inputs(device, dtype)
        model = self._models(kind, device, dtype)[1]
        return self._repeat(lambda: self._run_model(model, data, 0.5))

    def _repeat(self, run: Callable[[], Results]) -> str:
        """'' when two runs are bit-identical, else what differed."""
        first, second = run(), run()
        for key, a in first.items():
            b = second.get(key)
            if (a is None) != (b is None) or (a is not None and b is not None and not torch.equal(a, b)):
                return f"{key}: differs between two identical runs (declared deterministic)"
        return ""
