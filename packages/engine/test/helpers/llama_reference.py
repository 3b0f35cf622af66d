#!/usr/bin/env python3
"""An fp64 reference for a Hugging Face LLaMA / Mistral / Qwen2 causal LM, independent of mixz.

Usage: llama_reference.py MODEL_DIR BATCH_JSON

MODEL_DIR holds config.json and an F32 model.safetensors; BATCH_JSON is
{"input_ids": [[...], ...], "labels": [[...], ...]} (labels -100: ignored). Prints one JSON object:
{"loss": the mean shifted cross-entropy, "grads": {tensor name: flattened d loss / d tensor}}, all
computed in float64 with torch autograd.

The maths is written from the model definition (RMSNorm, rotary embedding with rotate_half and
rope_scaling "linear" / "llama3" as config.json describes them, grouped-query causal attention,
q/k/v projection biases where the files hold them (Qwen2: model_type "qwen2" must have them, no
other model may), SwiGLU MLP, untied LM head, next-token cross-entropy), reading config.json
itself, so that it
shares nothing with mixz but the weights. Needs torch (Debian's python3-torch); run it with
/usr/bin/python3.
"""
import json
import math
import struct
import sys

import torch


def read_safetensors(path):
    """name -> float64 tensor; the file's layout read directly (8-byte header size, JSON, data)."""
    with open(path, "rb") as f:
        blob = f.read()
    (size,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + size].decode("utf-8"))
    data = blob[8 + size :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: {name} is {info['dtype']}; the reference reads F32 only")
        begin, end = info["data_offsets"]
        values = torch.frombuffer(bytearray(data[begin:end]), dtype=torch.float32)
        out[name] = values.to(torch.float64).reshape(info["shape"])
    return out


def inverse_frequencies(config, head_dim):
    """Rotary inverse frequencies (float64), rescaled as rope_scaling says."""
    theta = float(config.get("rope_theta", 10000.0))
    inv = torch.tensor([theta ** (-(2.0 * i) / head_dim) for i in range(head_dim // 2)], dtype=torch.float64)
    scaling = config.get("rope_scaling")
    if not scaling:
        return inv
    kind = scaling.get("rope_type", scaling.get("type"))
    factor = float(scaling["factor"])
    if kind == "linear":
        return inv / factor
    if kind != "llama3":
        raise SystemExit(f"unknown rope_scaling kind {kind!r}")
    low = float(scaling["low_freq_factor"])
    high = float(scaling["high_freq_factor"])
    context = float(scaling["original_max_position_embeddings"])
    out = []
    for f in inv.tolist():
        wavelength = 2.0 * math.pi / f
        if wavelength < context / high:
            out.append(f)  # short wavelengths: kept
        elif wavelength > context / low:
            out.append(f / factor)  # long wavelengths: interpolated
        else:
            blend = (context / wavelength - low) / (high - low)
            out.append(blend * f + (1.0 - blend) * (f / factor))
    return torch.tensor(out, dtype=torch.float64)


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


def rotate(x, cos, sin):
    """x [batch, heads, seq, head_dim]; pairs (i, i + head_dim/2) rotated by the position's angle."""
    half = x.shape[-1] // 2
    lo, hi = x[..., :half], x[..., half:]
    return torch.cat([lo * cos - hi * sin, hi * cos + lo * sin], dim=-1)


def project(w, name, h):
    """h·Wᵀ + b, the bias where the model has one."""
    out = h @ w[name + ".weight"].T
    bias = w.get(name + ".bias")
    return out if bias is None else out + bias


def forward(config, w, ids, labels):
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = hidden // heads
    eps = float(config.get("rms_norm_eps", 1e-6))
    batch, seq = ids.shape

    positions = torch.arange(seq, dtype=torch.float64)
    angles = positions[:, None] * inverse_frequencies(config, head_dim)[None, :]  # [seq, half]
    cos, sin = torch.cos(angles), torch.sin(angles)
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()

    qwen2 = config.get("model_type") == "qwen2"
    for layer in range(config["num_hidden_layers"]):
        for proj in ("q_proj", "k_proj", "v_proj"):
            name = f"model.layers.{layer}.self_attn.{proj}.bias"
            if (name in w) != qwen2:
                raise SystemExit(f"{name}: {'missing' if qwen2 else 'unexpected'} for model_type {config.get('model_type')!r}")
    x = w["model.embed_tokens.weight"][ids]  # [batch, seq, hidden]
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = project(w, p + "self_attn.q_proj", h).view(batch, seq, heads, head_dim).transpose(1, 2)
        k = project(w, p + "self_attn.k_proj", h).view(batch, seq, kv_heads, head_dim).transpose(1, 2)
        v = project(w, p + "self_attn.v_proj", h).view(batch, seq, kv_heads, head_dim).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        group = heads // kv_heads
        k = k.repeat_interleave(group, dim=1)  # query head j reads KV head j // group
        v = v.repeat_interleave(group, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(head_dim)
        scores = scores.masked_fill(~causal, float("-inf"))
        attended = torch.softmax(scores, dim=-1) @ v  # [batch, heads, seq, head_dim]
        attended = attended.transpose(1, 2).reshape(batch, seq, hidden)
        x = x + attended @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    logits = rms_norm(x, w["model.norm.weight"], eps) @ w["lm_head.weight"].T
    # Position t predicts labels[t + 1]; -100 is not counted; the mean is over counted positions.
    shifted = labels[:, 1:].reshape(-1)
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), shifted, ignore_index=-100, reduction="mean")


def main():
    model_dir, batch_path = sys.argv[1], sys.argv[2]
    with open(f"{model_dir}/config.json", encoding="utf-8") as f:
        config = json.load(f)
    with open(batch_path, encoding="utf-8") as f:
        batch = json.load(f)
    weights = read_safetensors(f"{model_dir}/model.safetensors")
    for t in weights.values():
        t.requires_grad_(True)
    ids = torch.tensor(batch["input_ids"], dtype=torch.int64)
    labels = torch.tensor(batch["labels"], dtype=torch.int64)
    loss = forward(config, weights, ids, labels)
    loss.backward()
    grads = {name: t.grad.reshape(-1).tolist() for name, t in weights.items()}
    json.dump({"loss": loss.item(), "grads": grads}, sys.stdout)


if __name__ == "__main__":
    main()
