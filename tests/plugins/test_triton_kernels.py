"""triton-step's kernels, launch by launch, against float64 arithmetic.

Each launch the kernels can take (the default, the head walked in two chunks, K and V loaded together, other
warp counts) must give the same forward (the joined output, P, the scaled query) and backward (the query's
copy, dq, dS) on random inputs with masked keys. The kernels run under Triton's interpreter on CPU
(``TRITON_INTERPRET=1``, in a fresh interpreter since Triton reads it at import), natively on CUDA.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")

CHECK = """
    import json, sys
    import torch
    from quatrain.plugins import _triton_kernels as kernels
    from quatrain.plugins._triton_kernels import Launch

    device = sys.argv[1]
    torch.manual_seed(0)
    B, h, S, d = 3, 2, 9, 32
    H = h * d
    kv = torch.randn(B, S, 2 * H, dtype=torch.float64, device=device)  # K and V as views, as the backend reads them
    k = kv[..., :H].view(B, S, h, d).transpose(1, 2)
    v = kv[..., H:].view(B, S, h, d).transpose(1, 2)
    x, q = torch.randn(B, H, dtype=torch.float64, device=device), torch.randn(B, H, dtype=torch.float64, device=device)
    lengths = torch.tensor([9, 4, 1], device=device)
    bias = torch.zeros(B, S, dtype=torch.float64, device=device)
    bias = bias.masked_fill(torch.arange(S, device=device)[None, :] >= lengths[:, None], float("-inf"))
    dj = torch.randn(B, 2 * H, dtype=torch.float64, device=device)

    # float64 golden
    qs = q.view(B, h, d) * d**-0.5
    p = torch.softmax(torch.einsum("bhd,bhsd->bhs", qs, k) + bias[:, None, :], dim=-1)
    out = torch.cat([x, torch.einsum("bhs,bhsd->bhd", p, v).reshape(B, H)], dim=1)
    dp = torch.einsum("bhd,bhsd->bhs", dj[:, H:].view(B, h, d), v)
    ds = p * (dp - (p * dp).sum(-1, keepdim=True))
    dq = torch.einsum("bhs,bhsd->bhd", ds, k).reshape(B, H) * d**-0.5
    golden = {"out": out, "p": p, "qs": qs.reshape(B, H), "dx": dj[:, :H], "dq": dq, "ds": ds}

    f32 = lambda t: t.float()
    default = kernels.launch(S, d)
    launches = {
        "default": None,
        "chunks": Launch(16, default.num_warps, prefetch=False),
        "prefetch": Launch(32, default.num_warps, prefetch=True),
        "prefetch, chunks (prefetch does not apply)": Launch(16, 2, prefetch=True),
        "8 warps": Launch(32, 8, prefetch=True),
        "1 warp": Launch(32, 1, prefetch=False),
    }
    errors = {}
    for name, how in launches.items():
        got_out, got_p, got_qs = kernels.forward(f32(x), f32(q), f32(k), f32(v), f32(bias), True, how)
        got_dx, got_dq, got_ds = kernels.backward(f32(dj), got_p, f32(k), f32(v), how)
        inference, _, _ = kernels.forward(f32(x), f32(q), f32(k), f32(v), f32(bias), False, how)
        got = {"out": got_out, "p": got_p, "qs": got_qs, "dx": got_dx, "dq": got_dq, "ds": got_ds}
        errors[name] = {key: float((t.double() - golden[key]).abs().max()) for key, t in got.items()}
        errors[name]["inference out"] = float((inference.double() - golden["out"]).abs().max())
    try:
        kernels.forward(f32(x), f32(q), f32(k), f32(v), f32(bias), True, Launch(24, 4, prefetch=False))
        refused = ""
    except ValueError as error:
        refused = str(error)
    print(json.dumps({"default": list(default), "errors": errors, "refused": refused}))
"""


def run_check(device: str, interpreted: bool) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if interpreted:
        env["TRITON_INTERPRET"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHECK), device], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_every_launch_agrees(result: dict) -> None:
    assert set(result["errors"]) == {
        "default",
        "chunks",
        "prefetch",
        "prefetch, chunks (prefetch does not apply)",
        "8 warps",
        "1 warp",
    }
    for name, errors in result["errors"].items():
        # float32 arithmetic on values of order 1 over 9 keys and 32 dimensions: a few float32 ulps
        assert max(errors.values()) < 1e-5, (name, errors)
    assert "power of two" in result["refused"]


@needs_triton
@pytest.mark.slow
def test_every_launch_computes_the_same_attention_under_the_interpreter():
    result = run_check("cpu", interpreted=True)
    assert result["default"] == [32, 4, False]  # 9 keys of 32: the whole head in one chunk
    assert_every_launch_agrees(result)


@needs_triton
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_every_launch_computes_the_same_attention_on_cuda():
    assert_every_launch_agrees(run_check("cuda", interpreted=False))
