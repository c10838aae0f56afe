#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target (corpus/<target>/seed-*), deterministically.

Seeds are small valid inputs plus a few near misses, so mutations start next to every check. Run it
again after changing a format; libFuzzer adds its own finds elsewhere (run_fuzz.sh), never here.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# The base tests/fuzz/safetensors_adapter_fuzz.cpp checks adapters against.
BASE = {"architecture": "MambaForCausalLM", "d_model": 4, "n_layer": 2, "d_inner": 8, "d_state": 2,
        "d_conv": 4, "dt_rank": 1, "vocab_size": 16, "weights_sha256": "0" * 64}
SHAPES = {"state_offset": [8, 2], "output_offset": [8], "initial_state": [8, 2]}
ORDER = ["state_offset", "output_offset", "initial_state"]


def safetensors(tensors, metadata):
    """tensors: name -> (dtype, shape, bytes), written in name order like safetensors::encode."""
    header, data = {}, b""
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def adapter(methods, dtype="F32", base=BASE, value=0.25):
    tensors = {}
    for m in methods:
        n = 1
        for d in SHAPES[m]:
            n *= d
        for layer in range(base["n_layer"]):
            if dtype == "F32":
                raw = struct.pack("<%df" % n, *[value * (i + layer) for i in range(n)])
            else:  # BF16: the high half of the fp32 bits
                raw = b"".join(struct.pack("<f", value * (i + layer))[2:] for i in range(n))
            tensors["layers.%d.%s" % (layer, m)] = (dtype, SHAPES[m], raw)
    meta = {"format": "statetune-adapter", "format_version": "1", "methods": ",".join(methods),
            "base": json.dumps(base), "created_unix": "1700000000", "created_iso": "2023-11-14T22:13:20Z",
            "name": "seed", "version": "1", "extra": json.dumps({"learning_rate": 0.001, "epochs": 3})}
    return safetensors(tensors, meta)


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def main():
    t = "safetensors_adapter"
    write(t, "state_offset", adapter(["state_offset"]))
    write(t, "all_methods", adapter(ORDER))
    write(t, "bf16", adapter(["state_offset", "output_offset"], dtype="BF16"))
    write(t, "other_base", adapter(["output_offset"], base=dict(BASE, weights_sha256="1" * 64)))
    write(t, "plain_safetensors", safetensors({"w": ("F16", [2, 2], b"\0" * 8), "b": ("I64", [1], b"\0" * 8)},
                                              {"k": "v"}))
    write(t, "empty_header", struct.pack("<Q", 2) + b"{}")

    t = "dataset_lines"
    write(t, "valid", '{"prompt": "Translate: cat", "completion": " chat"}\n'
                      '{"prompt": "2+2=", "completion": " 4"}\n')
    write(t, "problems", '{"prompt": "", "completion": "x"}\n{"prompt": "a"}\n[1,2]\nnot json\n'
                         '{"prompt": "a", "completion": "b", "extra": 1}\n{"prompt": 3, "completion": "b"}\n')
    write(t, "unicode", '{"prompt": "caf\\u00e9 \\ud83d\\ude00 ü", "completion": " 日本"}\r\n\n')
    write(t, "long", json.dumps({"prompt": "word " * 80, "completion": "x"}) + "\n")

    t = "tokenizer"
    write(t, "english", "Hello, world! It's 2024 and the cat sat on the mat.\n  indented\tand tabs")
    write(t, "special", "<|endoftext|>prompt<|padding|> text <|endoftext|>")
    write(t, "unicode", "café naïve 日本語 😀 e\u0301 \u212b Ω")
    write(t, "code", "def f(x):\n    return x**2  # comment\n\n\n")
    write(t, "invalid_utf8", b"ok \xff\xfe \xc3( \xe2\x82")

    t = "tenants"
    h = "ab" * 32
    write(t, "valid", json.dumps({"admin_key_sha256": "cd" * 32,
                                  "tenants": [{"name": "acme", "api_keys_sha256": [h]},
                                              {"name": "beta.team-1", "api_keys_sha256": []}]}))
    write(t, "no_admin", json.dumps({"tenants": [{"name": "a", "api_keys_sha256": ["EF" * 32]}]}))
    write(t, "duplicate", json.dumps({"tenants": [{"name": "a", "api_keys_sha256": [h]},
                                                  {"name": "b", "api_keys_sha256": [h]}]}))

    t = "job_params"
    write(t, "full", json.dumps({"dataset_id": "ds-1", "adapter_name": "a", "methods": ["state_offset", "output_offset"],
                                 "validation_split": 0.1,
                                 "hyperparameters": {"learning_rate": 0.001, "epochs": 2, "batch_size": "8",
                                                     "max_steps": "100", "max_length": 256, "warmup_steps": 10,
                                                     "eval_every": 5, "seed": "42", "early_stopping_patience": 2,
                                                     "checkpoint_every": 50}}))
    write(t, "minimal", json.dumps({"dataset_id": "ds-1"}))
    write(t, "validation_set", json.dumps({"dataset_id": "ds-1", "validation_dataset_id": "ds-2",
                                           "methods": ["initial_state"]}))
    write(t, "bad_range", json.dumps({"dataset_id": "d", "hyperparameters": {"epochs": 0, "batch_size": 1000}}))


if __name__ == "__main__":
    main()
