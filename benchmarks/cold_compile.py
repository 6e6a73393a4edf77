"""Cold compile cost of the `compiled` backend: first train step minus a warm one (forward + backward).

Run with the inductor caches off so the compile is really cold:
    TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 python benchmarks/cold_compile.py seed
"""

import sys, time, torch, quatrain
preset = sys.argv[1]
cfg = quatrain.ModelConfig.preset(preset)
m = quatrain.Autoencoder(cfg, "compiled")
B, T = 32, cfg.max_len
x = torch.randn(B, T, cfg.embed_dim); mask = torch.ones(B, T, dtype=torch.bool)
times = []
for _ in range(3):
    t = time.perf_counter()
    out = m(x, mask, teacher_forcing=0.9)
    quatrain.reconstruction_loss(out.reconstruction, x, mask).backward()
    times.append(time.perf_counter() - t)
print(preset, ["%.1f" % t for t in times], "cold compile ~ %.1f s" % (times[0] - times[2]))
