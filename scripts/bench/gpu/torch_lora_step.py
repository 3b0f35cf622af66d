#!/usr/bin/env python3
"""The PyTorch peer of one LoRA training step on a GPU (issue 11, item 6; docs/BENCHMARKS.md).

A LLaMA-style decoder written out by hand in eager PyTorch: token embedding, RMSNorm, rotary
embeddings (rotate_half, as Hugging Face's LLaMA), grouped key/value heads, causal attention
through F.scaled_dot_product_attention, SwiGLU MLP, final norm, untied LM head, shifted mean
cross-entropy. Every base weight is frozen (requires_grad False) and stored in the model dtype
(bf16 by default): plain eager PyTorch has no int8 frozen-weight path, so this peer keeps bf16
frozen weights where mixz's step keeps int8 blocks (the table says so). LoRA (A [r, in], B [out, r],
y += (alpha/r)·x·Aᵀ·Bᵀ, two small matmuls beside each frozen linear) on all seven linears of every
layer; AdamW (torch.optim.AdamW, fused when the GPU build has it) on the LoRA parameters only.
Weights are random (normal, std 0.02; LoRA A uniform ±1/sqrt(in), B zeros as PEFT): timing does not
depend on their values. Tokens are random ids.

One step = forward + loss + backward + AdamW step + zero_grad. Timing: `--warmup` untimed steps,
then `--steps` steps, each between torch.cuda.synchronize() calls and timed with
time.perf_counter(); the median is reported. Memory: torch.cuda.max_memory_allocated() (tensors)
and max_memory_reserved() (the caching allocator's held memory) over the whole run, weights
included.

Prints one JSON object on the last line:
  {"peer": "torch", "step_ms", "step_ms_all", "peak_bytes", "peak_reserved_bytes", "tokens_per_s",
   "params", "trainable_params", "device", "torch", "dtype", "shape"}

  python3 scripts/bench/gpu/torch_lora_step.py                  the ~1B shape (GPU)
  python3 scripts/bench/gpu/torch_lora_step.py --tiny --device cpu --dtype fp32 --steps 2 --warmup 1
                                                                a smoke run on a CPU (seconds)
Works with torch 1.13 (Debian's, no SDPA: attention falls back to explicit softmax) and 2.x.
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--intermediate", type=int, default=5632)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument("--device", default="cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="a tiny shape for a smoke run (overrides the sizes)")
    a = p.parse_args(argv)
    if a.tiny:
        a.vocab, a.hidden, a.layers, a.heads, a.kv_heads, a.intermediate = 128, 64, 2, 4, 2, 160
        a.batch, a.seq, a.rank = 2, 16, 4
    return a


class LoraLinear(torch.nn.Module):
    """A frozen weight [out, in] with a trainable LoRA pair beside it."""

    def __init__(self, inp, out, rank, alpha, dtype, device):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(out, inp, dtype=dtype, device=device) * 0.02, requires_grad=False)
        bound = 1.0 / math.sqrt(inp)
        self.lora_a = torch.nn.Parameter(torch.empty(rank, inp, dtype=dtype, device=device).uniform_(-bound, bound))
        self.lora_b = torch.nn.Parameter(torch.zeros(out, rank, dtype=dtype, device=device))
        self.scale = alpha / rank

    def forward(self, x):
        return F.linear(x, self.weight) + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scale


def rms_norm(x, weight, eps):
    # In fp32, then back to the activation dtype (as HF's LlamaRMSNorm).
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


HAVE_SDPA = hasattr(F, "scaled_dot_product_attention")


def attention(q, k, v, groups):
    """Causal attention over [batch, heads, seq, head_dim]; k/v have heads/groups heads."""
    if HAVE_SDPA:
        try:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=groups > 1)
        except TypeError:  # torch 2.0-2.4: no enable_gqa
            pass
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    if HAVE_SDPA:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    seq = q.shape[-2]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    mask = torch.ones(seq, seq, dtype=torch.bool, device=q.device).triu(1)
    scores = scores.masked_fill(mask, float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v


class Layer(torch.nn.Module):
    def __init__(self, a, dtype, device):
        super().__init__()
        h, kv = a.hidden, a.hidden // a.heads * a.kv_heads
        mk = lambda i, o: LoraLinear(i, o, a.rank, a.alpha, dtype, device)  # noqa: E731
        self.q, self.k, self.v, self.o = mk(h, h), mk(h, kv), mk(h, kv), mk(h, h)
        self.gate, self.up, self.down = mk(h, a.intermediate), mk(h, a.intermediate), mk(a.intermediate, h)
        self.input_norm = torch.nn.Parameter(torch.ones(h, dtype=dtype, device=device), requires_grad=False)
        self.post_norm = torch.nn.Parameter(torch.ones(h, dtype=dtype, device=device), requires_grad=False)
        self.heads, self.kv_heads, self.head_dim = a.heads, a.kv_heads, a.hidden // a.heads

    def forward(self, x, cos, sin, eps):
        b, s, _ = x.shape
        n = rms_norm(x, self.input_norm, eps)
        q = self.q(n).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(n).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(n).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        att = attention(q, k, v, self.heads // self.kv_heads).transpose(1, 2).reshape(b, s, -1)
        x = x + self.o(att)
        n = rms_norm(x, self.post_norm, eps)
        return x + self.down(F.silu(self.gate(n)) * self.up(n))


class Model(torch.nn.Module):
    def __init__(self, a, dtype, device):
        super().__init__()
        self.embed = torch.nn.Parameter(torch.randn(a.vocab, a.hidden, dtype=dtype, device=device) * 0.02, requires_grad=False)
        self.layers = torch.nn.ModuleList(Layer(a, dtype, device) for _ in range(a.layers))
        self.norm = torch.nn.Parameter(torch.ones(a.hidden, dtype=dtype, device=device), requires_grad=False)
        self.lm_head = torch.nn.Parameter(torch.randn(a.vocab, a.hidden, dtype=dtype, device=device) * 0.02, requires_grad=False)
        hd = a.hidden // a.heads
        inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd))
        freqs = torch.outer(torch.arange(a.seq, device=device, dtype=torch.float32), inv)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos, self.sin = emb.cos().to(dtype), emb.sin().to(dtype)
        self.eps = 1e-6

    def forward(self, ids):
        x = F.embedding(ids, self.embed)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin, self.eps)
        logits = F.linear(rms_norm(x, self.norm, self.eps), self.lm_head)
        # Shifted: position t predicts token t + 1; the loss in fp32.
        return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def main(argv):
    a = parse_args(argv)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    device = torch.device(a.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("SKIP: no CUDA device visible to torch", flush=True)
        return 0
    torch.manual_seed(a.seed)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats()
    model = Model(a, dtype, device)
    params = sum(p.numel() for p in model.parameters())
    lora = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in lora)
    kwargs = {"lr": a.lr, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
    try:
        optimizer = torch.optim.AdamW(lora, fused=cuda, **kwargs)
    except (TypeError, RuntimeError):
        optimizer = torch.optim.AdamW(lora, **kwargs)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq), device=device)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    times = []
    loss = None
    for i in range(a.warmup + a.steps):
        sync()
        t0 = time.perf_counter()
        loss = model(ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        if i >= a.warmup:
            times.append((time.perf_counter() - t0) * 1000)
    step_ms = statistics.median(times)
    result = {
        "peer": "torch",
        "step_ms": round(step_ms, 3),
        "step_ms_all": [round(t, 3) for t in times],
        "peak_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "peak_reserved_bytes": torch.cuda.max_memory_reserved() if cuda else None,
        "tokens_per_s": round(a.batch * a.seq * 1000 / step_ms, 1),
        "params": params,
        "trainable_params": trainable,
        "final_loss": float(loss.detach().float()),
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__,
        "sdpa": HAVE_SDPA,
        "dtype": a.dtype,
        "frozen_weights": a.dtype + " (no int8 path in eager PyTorch)",
        "shape": {"vocab": a.vocab, "hidden": a.hidden, "layers": a.layers, "heads": a.heads, "kv_heads": a.kv_heads,
                  "intermediate": a.intermediate, "batch": a.batch, "seq": a.seq, "lora_rank": a.rank, "lora_alpha": a.alpha},
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
