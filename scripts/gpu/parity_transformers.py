#!/usr/bin/env python3
"""Logits parity on one random checkpoint: the statetune engine on CUDA (fp32 and bf16) against the
engine on the CPU and against transformers' MambaForCausalLM (its reference PyTorch path).

With transformers installed, the checkpoint is a randomly initialised MambaForCausalLM saved with
save_pretrained (A_log, D, norms and biases perturbed so no parameter sits at a symmetric value);
without it, the engine's own `init-model` checkpoint is used and only the engine's CPU and CUDA
results are compared (the report says which). Writes OUT/parity.json; exits 1 when a tolerance is
exceeded: fp32 max |diff| <= 1e-3 * max|logit|, bf16 <= 5e-2 * max|logit| (bf16 activations through
every layer).
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import torch

p = argparse.ArgumentParser()
p.add_argument("--engine", required=True)
p.add_argument("--out", required=True)
p.add_argument("--seq", type=int, default=64)
args = p.parse_args()
os.makedirs(args.out, exist_ok=True)
ckpt = os.path.join(args.out, "checkpoint")
torch.manual_seed(0)
shape = dict(hidden_size=256, num_hidden_layers=4, vocab_size=1024, state_size=16, expand=2, conv_kernel=4)

try:
    from transformers import MambaConfig, MambaForCausalLM
    have_hf = True
except Exception as e:  # noqa: BLE001 - any import failure means "not available"
    print(f"transformers not importable ({e}); comparing the engine's CUDA and CPU paths only")
    have_hf = False

if have_hf:
    cfg = MambaConfig(**shape, use_cache=False)
    hf = MambaForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for name, t in hf.named_parameters():
            if name.endswith(("A_log", ".D", "norm.weight", "norm_f.weight", "bias")):
                t.add_(0.1 * torch.randn_like(t))
    hf.save_pretrained(ckpt, safe_serialization=True)
else:
    subprocess.run([args.engine, "init-model", "--out", ckpt, "--d-model", str(shape["hidden_size"]),
                    "--n-layer", str(shape["num_hidden_layers"]), "--vocab", str(shape["vocab_size"]),
                    "--d-state", "16", "--seed", "3"], check=True)

tokens = torch.randint(0, shape["vocab_size"], (args.seq,)).tolist()


def engine_logits(device, dtype):
    f = os.path.join(args.out, f"logits-{device}-{dtype}.bin")
    subprocess.run([args.engine, "logits", "--model", ckpt, "--tokens", ",".join(map(str, tokens)),
                    "--all-positions", "--device", device, "--dtype", dtype, "--out", f], check=True)
    return np.fromfile(f, dtype="<f4").reshape(args.seq, -1)


results = {"transformers": have_hf, "seq": args.seq, "shape": shape, "checks": []}
cpu32 = engine_logits("cpu", "f32")
cuda32 = engine_logits("cuda", "f32")
cuda16 = engine_logits("cuda", "bf16")
refs = {"engine-cpu-f32": cpu32}
if have_hf:
    with torch.no_grad():
        ids = torch.tensor([tokens])
        hf_logits = hf(ids).logits[0].float().numpy()
        refs["transformers-cpu-f32"] = hf_logits
        if torch.cuda.is_available():
            refs["transformers-cuda-f32"] = hf.cuda()(ids.cuda()).logits[0].float().cpu().numpy()

ok = True
for ref_name, ref in refs.items():
    V = min(ref.shape[1], cuda32.shape[1])  # the engine may pad the vocabulary
    scale = float(np.abs(ref[:, :V]).max())
    for name, got, rtol in (("engine-cuda-f32", cuda32, 1e-3), ("engine-cuda-bf16", cuda16, 5e-2),
                            ("engine-cpu-f32", cpu32, 1e-3)):
        if name == ref_name:
            continue
        err = float(np.abs(got[:, :V] - ref[:, :V]).max())
        passed = err <= rtol * scale
        ok = ok and passed
        results["checks"].append({"got": name, "reference": ref_name, "max_abs_diff": err,
                                  "max_abs_logit": scale, "rtol": rtol, "ok": passed})
        print(f"{name:18s} vs {ref_name:22s}: max|diff| {err:.3e}  (max|logit| {scale:.3e}, "
              f"tolerance {rtol:g}x) {'ok' if passed else 'FAIL'}")
with open(os.path.join(args.out, "parity.json"), "w") as f:
    json.dump(results, f, indent=2)
sys.exit(0 if ok else 1)
