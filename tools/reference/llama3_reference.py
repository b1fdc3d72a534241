#!/usr/bin/python3
"""Independent PyTorch reference of torchtitan's Llama 3 training step (golden data).

Written from torchtitan's description of the model (models/llama3: args, model, RoPE with
Llama 3.1 scaling, init) and of the step (loss, LR schedule, AdamW, clipping), not from the
C++ code, and run with
Debian's python3-torch (1.13, CPU, float32) as /usr/bin/python3. No safetensors package is
needed: the format is read and written here by hand. The folder contract is in README.md.
Float8 training (torchao's Float8Linear, config key float8_recipe) is simulated in float32.

  llama3_reference.py golden INPUT_DIR OUTPUT_DIR    init/batch/config -> golden*.safetensors
  llama3_reference.py make-inputs DIR [options]      random inputs with torchtitan's init rules
  llama3_reference.py check                          self-test of this file's pieces
  llama3_reference.py bench [options]                PyTorch eager's training speed (tools/bench/cpu_step.sh)
"""

import argparse
import hashlib
import json
import math
import os
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE_INDEX = -100
MAX_FILE_BYTES = 2_000_000  # golden files are committed: each one stays under 2 MB

# ------------------------------------------------------------------------------------------
# safetensors by hand: u64 LE header length N, N bytes of JSON (space-padded to a multiple
# of 8), then the tensors' bytes, packed; data_offsets count from the end of the header.

DTYPES = {
    "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
    "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def save_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, tensor) packed in that order; metadata: str -> str."""
    header = {"__metadata__": {"format": "pt", **(metadata or {})}}
    blobs, offset = [], 0
    for name, t in tensors:
        t = t.detach().contiguous().cpu()
        if t.dtype not in DTYPE_NAMES:
            raise ValueError(f"{path}: tensor {name} has dtype {t.dtype}, not writable here")
        # bytes of the tensor's own storage, little-endian as the host (x86, arm64)
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_safetensors(path):
    """Returns (dict name -> tensor, metadata dict), validating as the format requires."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", data[:8])
    if n > 100_000_000 or 8 + n > len(data):
        raise ValueError(f"{path}: header length {n} does not fit the file ({len(data)} bytes)")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    body = memoryview(data)[8 + n:]
    tensors, spans = {}, []
    for name, e in header.items():
        dtype = DTYPES.get(e["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name} has dtype {e['dtype']}, not readable here")
        begin, end = e["data_offsets"]
        shape = e["shape"]
        numel = math.prod(shape)
        if end - begin != numel * torch.tensor([], dtype=dtype).element_size():
            raise ValueError(f"{path}: tensor {name}: data_offsets do not match its shape")
        spans.append((begin, end, name))
        if numel == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
        else:
            # a copy, so the tensor does not alias the file's bytes
            tensors[name] = torch.frombuffer(bytearray(body[begin:end]), dtype=dtype).reshape(shape)
    expected = 0
    for begin, end, name in sorted(spans):
        if begin != expected:
            raise ValueError(f"{path}: tensor {name} starts at {begin}, expected {expected}")
        expected = end
    if expected != len(body):
        raise ValueError(f"{path}: tensors end at {expected}, data holds {len(body)} bytes")
    return tensors, metadata


# ------------------------------------------------------------------------------------------
# Config (config.json of the input folder; README.md lists the keys)

REQUIRED_KEYS = {
    "dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "ffn_dim", "norm_eps",
    "rope_theta", "rope_scaling", "weight_tying", "batch_size", "seq_len",
    "accumulation_steps", "steps", "lr", "beta1", "beta2", "eps", "weight_decay",
    "warmup_steps", "decay_ratio", "decay_type", "min_lr_factor", "max_norm",
}
OPTIONAL_KEYS = {"flavor", "seed", "source",  # informational only
                 "attn_mask_type", "eos_id",  # "causal" when absent; eos_id: block_causal's
                 "float8_recipe", "float8_filter_fqns"}  # null / [] when absent
ATTN_MASK_TYPES = ("causal", "block_causal")
ROPE_SCALING_KEYS = {"enabled", "factor", "low_freq_factor", "high_freq_factor",
                     "original_max_positions"}


def load_config(path):
    with open(path) as f:
        cfg = json.load(f)
    missing = REQUIRED_KEYS - cfg.keys()
    unknown = cfg.keys() - REQUIRED_KEYS - OPTIONAL_KEYS
    if missing or unknown:
        raise ValueError(f"{path}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
    if set(cfg["rope_scaling"]) != ROPE_SCALING_KEYS:
        raise ValueError(f"{path}: rope_scaling must have exactly {sorted(ROPE_SCALING_KEYS)}")
    if cfg["dim"] % cfg["n_heads"] or cfg["n_heads"] % cfg["n_kv_heads"]:
        raise ValueError(f"{path}: n_heads must divide dim and n_kv_heads must divide n_heads")
    if cfg["decay_type"] not in ("linear", "sqrt", "cosine"):
        raise ValueError(f"{path}: decay_type must be linear, sqrt or cosine")
    check_attn_mask_config(cfg, path)
    check_float8_config(cfg, path)
    return cfg


def check_attn_mask_config(cfg, where):
    """attn_mask_type: "causal" (the default when absent) or "block_causal", which needs an
    integer eos_id in [0, vocab_size)."""
    kind = cfg.get("attn_mask_type", "causal")
    if kind not in ATTN_MASK_TYPES:
        raise ValueError(f"{where}: attn_mask_type must be causal or block_causal, got {kind!r}")
    eos = cfg.get("eos_id")
    if eos is not None and (isinstance(eos, bool) or not isinstance(eos, int)
                            or not 0 <= eos < cfg["vocab_size"]):
        raise ValueError(f"{where}: eos_id must be an integer in [0, vocab_size), got {eos!r}")
    if kind == "block_causal" and eos is None:
        raise ValueError(f"{where}: attn_mask_type block_causal needs eos_id (the token that "
                         "ends each document)")


def ffn_hidden_dim(dim, multiple_of, multiplier=None):
    h = 4 * dim
    h = int(2 * h / 3)
    if multiplier is not None:
        h = int(multiplier * h)
    return multiple_of * ((h + multiple_of - 1) // multiple_of)


# ------------------------------------------------------------------------------------------
# Float8 training: torchao's Float8Linear (the converter quantize.linear.float8), simulated
# in float32 (torch 1.13 has no float8 dtype). Each GEMM operand x, a 2-D view [rows, cols],
# is cast with one scale for the tensor ("tensor"), one per row ("rows": amax over its
# columns) or one per column ("cols": amax over its rows):
#   s  = float32(fmax / max(amax, 1e-12)) (the division in float64), rounded down to a power
#        of two by the rowwise recipes (float32 mantissa bits cleared)
#   q  = round_to_fp8(float32(x * s))  round to nearest even, saturating at +-fmax
#   x' = float32(q) / s                the dequantized operand; the GEMM is the float32 one.


class Fp8Format:
    """A float8 format: 1 sign bit, exp_bits exponent bits (bias), man_bits mantissa bits."""

    def __init__(self, name, exp_bits, man_bits, bias, fmax):
        self.name, self.exp_bits, self.man_bits = name, exp_bits, man_bits
        self.bias, self.fmax = bias, fmax
        self.emin = 1 - bias  # exponent of the smallest normal; subnormals share its quantum


E4M3 = Fp8Format("e4m3fn", 4, 3, 7, 448.0)       # no inf; S.1111.111 is NaN
E5M2 = Fp8Format("e5m2", 5, 2, 15, 57344.0)      # IEEE-like: exponent 31 is inf/NaN
FLOAT8_SCALE_EPS = 1e-12

# Per recipe: (axis, format) of each cast operand, and whether scales are powers of two.
#   x, w:        forward y = x' w'^T                   (x [M, K], w [N, K])
#   dy_gi, w_gi: grad_input dx = dy' w''               (dy [M, N])
#   dy_gw, x_gw: grad_weight dw = dy'''^T x'''         (None: high precision)
FLOAT8_RECIPES = {
    "tensorwise": dict(pow2=False, x=("tensor", E4M3), w=("tensor", E4M3),
                       dy_gi=("tensor", E5M2), w_gi=("tensor", E4M3),
                       dy_gw=("tensor", E5M2), x_gw=("tensor", E4M3)),
    "rowwise": dict(pow2=True, x=("rows", E4M3), w=("rows", E4M3),
                    dy_gi=("rows", E4M3), w_gi=("cols", E4M3),
                    dy_gw=("cols", E4M3), x_gw=("cols", E4M3)),
    "rowwise_with_gw_hp": dict(pow2=True, x=("rows", E4M3), w=("rows", E4M3),
                               dy_gi=("rows", E4M3), w_gi=("tensor", E4M3),
                               dy_gw=None, x_gw=None),
}


def round_to_fp8(v, fmt):
    """float32 (or float64) tensor -> the nearest value of fmt (ties to even mantissa),
    saturated at +-fmax (no inf), as float64. Exact: the arithmetic is float64 on values
    with at most 24 significant bits, scaled by powers of two."""
    v = v.double()
    a = v.abs()
    _, e = torch.frexp(a)                 # a = m 2^e, m in [0.5, 1): floor(log2 a) = e - 1
    e = torch.clamp(e.long() - 1, min=fmt.emin)  # below the normals: the subnormal quantum
    quanta = a * exp2_exact(fmt.man_bits - e)    # a / quantum, quantum = 2^(e - man_bits)
    # Round to an integer, half to even: adding 2^52 leaves no fraction bits in a float64
    # (quanta < 2^(man_bits + 1)), so the IEEE addition rounds it to nearest even, and the
    # subtraction is exact. (torch.round, also half to even, gives the same values; it made
    # `check` ~30% slower on the 2-core machine under load.)
    r = ((quanta + 2.0 ** 52) - 2.0 ** 52) * exp2_exact(e - fmt.man_bits)
    return torch.copysign(torch.clamp(r, max=fmt.fmax), v)


def exp2_exact(n):
    """Integer tensor n in [-1022, 1023] -> 2^n as float64, built from its bits (exact)."""
    return ((n.long() + 1023) << 52).view(torch.float64)


def float8_scale(amax, fmt, pow2):
    """amax (float32 tensor) -> float32 scale: fmax / max(amax, 1e-12) in float64, rounded
    to float32, then (pow2) rounded down to a power of two by clearing the mantissa bits."""
    s = (fmt.fmax / amax.double().clamp(min=FLOAT8_SCALE_EPS)).float()
    if pow2:
        s = (s.view(torch.int32) & 0x7F800000).view(torch.float32)
    return s


def float8_amax(x, axis):
    """x [rows, cols] -> max |x| over the tensor ([1, 1]), each row ([rows, 1]) or each
    column ([1, cols])."""
    a = x.abs()
    if axis == "tensor":
        return a.max().reshape(1, 1)
    if axis == "rows":
        return a.amax(dim=1, keepdim=True)
    if axis == "cols":
        return a.amax(dim=0, keepdim=True)
    raise ValueError(f"float8 axis {axis!r}")


def float8_cast(x, axis, fmt, pow2):
    """x [rows, cols] -> x', the dequantized float8 cast (x's dtype)."""
    s = float8_scale(float8_amax(x, axis), fmt, pow2).to(x.dtype)
    q = round_to_fp8(x * s, fmt)        # the product in x's dtype (float32), then rounded
    return q.to(x.dtype) / s


class Float8LinearFunction(torch.autograd.Function):
    """y = x w^T with each GEMM's operands cast as the recipe says. Saves the
    high-precision x and w; the backward casts them again for its own GEMMs."""

    @staticmethod
    def forward(ctx, x, weight, recipe):
        r = FLOAT8_RECIPES[recipe]
        ctx.save_for_backward(x, weight)
        ctx.recipe = recipe
        x2 = x.reshape(-1, x.shape[-1])
        y = float8_cast(x2, *r["x"], r["pow2"]) @ float8_cast(weight, *r["w"], r["pow2"]).t()
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        r = FLOAT8_RECIPES[ctx.recipe]
        pow2 = r["pow2"]
        x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
        dx = float8_cast(dy2, *r["dy_gi"], pow2) @ float8_cast(weight, *r["w_gi"], pow2)
        if r["dy_gw"] is None:
            dw = dy2.t() @ x2
        else:
            dw = float8_cast(dy2, *r["dy_gw"], pow2).t() @ float8_cast(x2, *r["x_gw"], pow2)
        return dx.reshape(x.shape), dw, None


class Float8Linear(nn.Module):
    """A bias-free linear whose GEMMs run through Float8LinearFunction; it keeps the
    converted nn.Linear's weight Parameter (same name, same object)."""

    def __init__(self, linear, recipe):
        super().__init__()
        self.weight = linear.weight
        self.recipe = recipe

    def forward(self, x):
        return Float8LinearFunction.apply(x, self.weight, self.recipe)

    def extra_repr(self):
        return f"{self.weight.shape[1]} -> {self.weight.shape[0]}, recipe={self.recipe}"


def convert_to_float8(model, recipe, filter_fqns):
    """Swaps every transformer-layer nn.Linear (wq wk wv wo w1 w2 w3) whose weight dims are
    both divisible by 16 and whose name contains none of filter_fqns for a Float8Linear.
    The output projection never converts (titan.cpp fuses it with the loss). Returns the
    converted names."""
    converted = []
    for name, module in list(model.named_modules()):
        if not name.startswith("layers.") or type(module) is not nn.Linear:
            continue
        if module.weight.shape[0] % 16 or module.weight.shape[1] % 16:
            continue
        if any(f in name for f in filter_fqns):
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, Float8Linear(module, recipe))
        converted.append(name)
    return converted


def check_float8_config(cfg, where):
    """float8_recipe: null (absent) or a recipe name; float8_filter_fqns: a list of strings."""
    recipe = cfg.get("float8_recipe")
    if recipe is not None and recipe not in FLOAT8_RECIPES:
        raise ValueError(f"{where}: float8_recipe must be null or one of "
                         f"{sorted(FLOAT8_RECIPES)}, got {recipe!r}")
    fqns = cfg.get("float8_filter_fqns", [])
    if not isinstance(fqns, list) or not all(isinstance(f, str) for f in fqns):
        raise ValueError(f"{where}: float8_filter_fqns must be a list of strings, got {fqns!r}")
    if "auto_filter_small_kn" in fqns:  # torchao's size filter: not simulated here
        raise ValueError(f"{where}: float8_filter_fqns: auto_filter_small_kn (torchao's filter "
                         "by GEMM size) is not implemented by this reference")


# ------------------------------------------------------------------------------------------
# Model: torchtitan's Llama 3 (pre-norm blocks, GQA attention with interleaved RoPE, SwiGLU)


def compute_dtype(x):
    """float32 for the model's run, float64 kept when the self-test runs the model in double."""
    return x if x.dtype == torch.float64 else x.float()


def rope_frequencies(head_dim, theta, scaling):
    """f_i = theta^(-2i/hd), then Llama 3.1's scaling; float32 as torchtitan computes it."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    if not scaling["enabled"]:
        return freqs
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_positions"]
    wavelen = 2 * math.pi / freqs
    freqs = torch.where(wavelen > old / low, freqs / factor, freqs)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * freqs / factor + smooth * freqs
    medium = ~(wavelen < old / high) & ~(wavelen > old / low)
    return torch.where(medium, smoothed, freqs)


def rope_table(head_dim, theta, scaling, seq_len):
    """Complex [T, hd/2]: e^{i t f_j} (torchtitan's precompute_freqs_cis)."""
    freqs = rope_frequencies(head_dim, theta, scaling)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), freqs).float()
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x, freqs_cis):
    """x [B, T, H, hd]; pairs (2j, 2j+1) rotated as complex numbers."""
    xc = torch.view_as_complex(compute_dtype(x).reshape(*x.shape[:-1], -1, 2))
    out = torch.view_as_real(xc * freqs_cis[None, :, None, :]).flatten(3)
    return out.type_as(x)


def causal_attention(q, k, v):
    """q [B, T, Hq, hd], k/v [B, T, Hkv, hd] -> [B, T, Hq, hd]. Query head h reads kv head
    h // (Hq/Hkv); softmax(q k^T / sqrt(hd) + causal mask) v, written out (torch 1.13 has no
    scaled_dot_product_attention)."""
    n_rep = q.shape[2] // k.shape[2]
    k = k.repeat_interleave(n_rep, dim=2)
    v = v.repeat_interleave(n_rep, dim=2)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, hd]
    T = q.shape[2]
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    scores = scores.masked_fill(mask, float("-inf"))
    probs = torch.softmax(compute_dtype(scores), dim=-1).type_as(q)
    return (probs @ v).transpose(1, 2)


def document_ids(tokens, eos_id):
    """tokens [..., T] -> document id of each token: the number of EOS tokens before it (a
    running count of EOS shifted by one), so an EOS is the last token of its document."""
    eos = (tokens == eos_id).long()
    return eos.cumsum(-1) - eos


def block_causal_mask(tokens, eos_id):
    """tokens [B, T] -> allowed [B, T, T]: query i sees key j iff j <= i and both lie in the
    same document (torchtitan's flex/varlen block_causal; RoPE positions are not reset)."""
    doc = document_ids(tokens, eos_id)
    T = tokens.shape[-1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    return causal & (doc[:, :, None] == doc[:, None, :])


def block_causal_attention(q, k, v, allowed):
    """causal_attention with an explicit mask: allowed [B, T, T] (query i, key j), the
    diagonal always allowed so no row is empty."""
    n_rep = q.shape[2] // k.shape[2]
    k = k.repeat_interleave(n_rep, dim=2)
    v = v.repeat_interleave(n_rep, dim=2)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, hd]
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    probs = torch.softmax(compute_dtype(scores), dim=-1).type_as(q)
    return (probs @ v).transpose(1, 2)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = compute_dtype(x)
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_heads, self.n_kv_heads = cfg["n_heads"], cfg["n_kv_heads"]
        self.head_dim = cfg["dim"] // cfg["n_heads"]
        dim, hd = cfg["dim"], self.head_dim
        self.wq = nn.Linear(dim, self.n_heads * hd, bias=False)
        self.wk = nn.Linear(dim, self.n_kv_heads * hd, bias=False)
        self.wv = nn.Linear(dim, self.n_kv_heads * hd, bias=False)
        self.wo = nn.Linear(self.n_heads * hd, dim, bias=False)

    def forward(self, x, freqs_cis, allowed=None):
        """allowed: None for causal attention, else block_causal's [B, T, T] mask."""
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)
        q, k = apply_rope(q, freqs_cis), apply_rope(k, freqs_cis)
        if allowed is None:
            return self.wo(causal_attention(q, k, v).reshape(B, T, -1))
        return self.wo(block_causal_attention(q, k, v, allowed).reshape(B, T, -1))


class FeedForward(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg["dim"], cfg["ffn_dim"])
        self.attention_norm = RMSNorm(cfg["dim"], cfg["norm_eps"])
        self.ffn_norm = RMSNorm(cfg["dim"], cfg["norm_eps"])

    def forward(self, x, freqs_cis, allowed=None):
        h = x + self.attention(self.attention_norm(x), freqs_cis, allowed)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        check_attn_mask_config(cfg, "model config")
        block_causal = cfg.get("attn_mask_type", "causal") == "block_causal"
        self.eos_id = cfg.get("eos_id") if block_causal else None
        self.tok_embeddings = nn.Embedding(cfg["vocab_size"], cfg["dim"])
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg["n_layers"]))
        self.norm = RMSNorm(cfg["dim"], cfg["norm_eps"])
        self.weight_tying = bool(cfg["weight_tying"])
        if not self.weight_tying:
            self.output = nn.Linear(cfg["dim"], cfg["vocab_size"], bias=False)
        self.register_buffer("freqs_cis", rope_table(cfg["dim"] // cfg["n_heads"], cfg["rope_theta"],
                                                     cfg["rope_scaling"], cfg["seq_len"]),
                             persistent=False)
        check_float8_config(cfg, "model config")
        self.float8_linears = []  # names of the linears converted to Float8
        if cfg.get("float8_recipe") is not None:
            self.float8_linears = convert_to_float8(self, cfg["float8_recipe"],
                                                    cfg.get("float8_filter_fqns", []))

    def forward(self, tokens):
        h = self.tok_embeddings(tokens)
        freqs_cis = self.freqs_cis[: tokens.shape[1]]
        # block_causal: one [B, T, T] mask from the tokens, shared by every layer
        allowed = None if self.eos_id is None else block_causal_mask(tokens, self.eos_id)
        for layer in self.layers:
            h = layer(h, freqs_cis, allowed)
        h = self.norm(h)
        weight = self.tok_embeddings.weight if self.weight_tying else self.output.weight
        return compute_dtype(F.linear(h, weight))  # logits in fp32, as torchtitan casts them


def init_weights(model, cfg):
    """torchtitan's init_weights (depth_init true): embedding N(0, 1); wq wk wv w1 trunc
    N(0, 0.02) cut at +-2 absolute; wo w2 w3 trunc N(0, 0.02/sqrt(2(l+1))); norms 1; output
    trunc N(0, dim^-0.5) cut at +-3 sigma. Uses torch's global RNG in parameter order."""
    with torch.no_grad():
        nn.init.normal_(model.tok_embeddings.weight, std=1.0)
        for layer_id, layer in enumerate(model.layers):
            depth_std = 0.02 / math.sqrt(2 * (layer_id + 1))
            a = layer.attention
            for w in (a.wq, a.wk, a.wv):
                nn.init.trunc_normal_(w.weight, mean=0.0, std=0.02)
            nn.init.trunc_normal_(a.wo.weight, mean=0.0, std=depth_std)
            ff = layer.feed_forward
            nn.init.trunc_normal_(ff.w1.weight, mean=0.0, std=0.02)
            for w in (ff.w2, ff.w3):
                nn.init.trunc_normal_(w.weight, mean=0.0, std=depth_std)
            layer.attention_norm.weight.fill_(1.0)
            layer.ffn_norm.weight.fill_(1.0)
        model.norm.weight.fill_(1.0)
        if not model.weight_tying:
            std = cfg["dim"] ** -0.5
            nn.init.trunc_normal_(model.output.weight, mean=0.0, std=std, a=-3 * std, b=3 * std)


def parameter_names(cfg):
    """Every parameter's name, in the model's order (= torchtitan's named_parameters)."""
    names = ["tok_embeddings.weight"]
    for i in range(cfg["n_layers"]):
        names += [f"layers.{i}.attention.{w}.weight" for w in ("wq", "wk", "wv", "wo")]
        names += [f"layers.{i}.feed_forward.{w}.weight" for w in ("w1", "w2", "w3")]
        names += [f"layers.{i}.attention_norm.weight", f"layers.{i}.ffn_norm.weight"]
    names.append("norm.weight")
    if not cfg["weight_tying"]:
        names.append("output.weight")
    return names


# ------------------------------------------------------------------------------------------
# Loss, LR schedule, training loop (notes §6)


def cross_entropy_sum(logits, labels):
    return F.cross_entropy(compute_dtype(logits.flatten(0, 1)), labels.flatten(0, 1),
                           reduction="sum", ignore_index=IGNORE_INDEX)


def lr_lambda_factory(cfg):
    """torchtitan's linear_warmup_stable_decay; LambdaLR calls it with c = 0, 1, ..."""
    total, warmup = cfg["steps"], min(cfg["warmup_steps"], cfg["steps"])
    if cfg["decay_ratio"] is None:
        decay = total - warmup
    else:
        decay = min(round(total * cfg["decay_ratio"]), total - warmup)
    stable = total + 1 - warmup - decay  # +1: a virtual step so lr never reaches 0 in training
    kind, floor = cfg["decay_type"], cfg["min_lr_factor"]

    def lr_lambda(c):
        if c < warmup:
            return (c + 1) / warmup
        if c < warmup + stable:
            return 1.0
        p = (c + 1 - warmup - stable) / decay
        g = {"linear": 1 - p, "sqrt": 1 - math.sqrt(p), "cosine": 0.5 * (1 + math.cos(math.pi * p))}[kind]
        return floor + (1 - floor) * g

    return lr_lambda


def load_inputs(input_dir, read_config=None, names_of=None):
    """config.json, init and batch of an input folder, checked; another model's reference
    passes its own config reader and parameter names."""
    cfg = (read_config or load_config)(os.path.join(input_dir, "config.json"))
    init, _ = load_safetensors(os.path.join(input_dir, "init.safetensors"))
    batch, _ = load_safetensors(os.path.join(input_dir, "batch.safetensors"))
    names = (names_of or parameter_names)(cfg)
    if set(init) != set(names):
        raise ValueError(f"init.safetensors: missing {sorted(set(names) - set(init))}, "
                         f"unexpected {sorted(set(init) - set(names))}")
    shape = (cfg["steps"], cfg["accumulation_steps"], cfg["batch_size"], cfg["seq_len"])
    for key in ("tokens", "labels"):
        if key not in batch or tuple(batch[key].shape) != shape or batch[key].dtype not in (torch.int64, torch.int32):
            raise ValueError(f"batch.safetensors: {key} must be I64 (or I32) of shape {list(shape)}")
    tokens, labels = batch["tokens"].long(), batch["labels"].long()
    if tokens.min() < 0 or tokens.max() >= cfg["vocab_size"]:
        raise ValueError("batch.safetensors: tokens outside [0, vocab_size)")
    valid = labels != IGNORE_INDEX
    if (labels[valid] < 0).any() or (labels[valid] >= cfg["vocab_size"]).any():
        raise ValueError("batch.safetensors: labels outside [0, vocab_size) and not -100")
    if (valid.flatten(1).sum(1) == 0).any():
        raise ValueError("batch.safetensors: a step has no valid label (the mean loss is 0/0)")
    return cfg, init, tokens, labels


def train(cfg, init, tokens, labels, keep_first=True):
    """Runs cfg['steps'] optimizer steps; returns a dict of golden tensors."""
    model = Transformer(cfg)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in params.items():
            if tuple(init[name].shape) != tuple(p.shape) or init[name].dtype != torch.float32:
                raise ValueError(f"init.safetensors: {name} must be F32 {list(p.shape)}, "
                                 f"got {init[name].dtype} {list(init[name].shape)}")
            p.copy_(init[name])
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]),
                                  eps=cfg["eps"], weight_decay=cfg["weight_decay"], foreach=False)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda_factory(cfg))
    out = {}
    losses, grad_norms, lrs = [], [], []
    for s in range(cfg["steps"]):
        optimizer.zero_grad()
        # torchtitan: count the valid labels of all microbatches of the step first; each
        # microbatch backpropagates its sum / that count; the logged loss is their sum.
        count = (labels[s] != IGNORE_INDEX).sum()
        step_loss = torch.zeros(())
        for m in range(cfg["accumulation_steps"]):
            logits = model(tokens[s, m])
            loss = cross_entropy_sum(logits, labels[s, m]) / count
            loss.backward()
            step_loss += loss.detach()
            if s == 0 and m == 0 and keep_first:
                out["logits"] = logits.detach().clone()
        if s == 0 and keep_first:
            out["loss"] = step_loss.reshape(1).clone()
            for name, p in params.items():
                out["grad." + name] = p.grad.detach().clone()
        grad_norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["max_norm"])))
        lrs.append(optimizer.param_groups[0]["lr"])
        losses.append(float(step_loss))
        optimizer.step()
        scheduler.step()
    out["losses"] = torch.tensor(losses, dtype=torch.float32)
    out["grad_norms"] = torch.tensor(grad_norms, dtype=torch.float32)
    out["lrs"] = torch.tensor(lrs, dtype=torch.float32)
    return out


def fingerprint(tensors):
    """name -> [numel, sum, sum |x|] in float64: lets a test see that its inputs are the ones
    the golden data was made from without committing them."""
    return {k: [t.numel(), float(t.double().sum()), float(t.double().abs().sum())]
            for k, t in tensors.items()}


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def file_bytes(tensors):
    return sum(t.numel() * t.element_size() for _, t in tensors) + 4096  # + header, generously


def command_golden(args):
    setup_torch()
    started = time.time()
    cfg, init, tokens, labels = load_inputs(args.input_dir)
    out = train(cfg, init, tokens, labels)
    elapsed = time.time() - started
    os.makedirs(args.output_dir, exist_ok=True)

    # Gradients, in parameter order, packed into files of at most MAX_FILE_BYTES each.
    grad_files, current = [], []
    for name in parameter_names(cfg):
        item = ("grad." + name, out["grad." + name])
        if file_bytes([item]) > args.max_file_bytes:
            raise ValueError(f"grad.{name} alone is over {args.max_file_bytes} bytes: use a smaller model")
        if current and file_bytes(current + [item]) > args.max_file_bytes:
            grad_files.append(current)
            current = []
        current.append(item)
    grad_files.append(current)
    grad_file_names = [f"golden_grads_{i}.safetensors" for i in range(len(grad_files))]

    main = [(k, out[k]) for k in ("logits", "loss", "losses", "grad_norms", "lrs")]
    if file_bytes(main) > args.max_file_bytes:
        raise ValueError(f"logits [B, T, V] is over {args.max_file_bytes} bytes: use a smaller batch")
    metadata = {
        "generator": "tools/reference/llama3_reference.py",
        "torch_version": torch.__version__,
        "config": json.dumps(cfg, sort_keys=True),
        "grad_files": ",".join(grad_file_names),
        "init_fingerprint": json.dumps(fingerprint(init)),
        "input_sha256": json.dumps({f: sha256(os.path.join(args.input_dir, f)) for f in
                                    ("config.json", "init.safetensors", "batch.safetensors")}),
        "elapsed_s": f"{elapsed:.3f}",
    }
    save_safetensors(os.path.join(args.output_dir, "golden.safetensors"), main, metadata)
    for file_name, items in zip(grad_file_names, grad_files):
        save_safetensors(os.path.join(args.output_dir, file_name), items,
                         {"generator": metadata["generator"], "torch_version": torch.__version__})
    if cfg.get("float8_recipe") is not None:
        converted = Transformer(cfg).float8_linears
        print(f"float8 {cfg['float8_recipe']}: {len(converted)} linears converted "
              f"(filter_fqns {cfg.get('float8_filter_fqns', [])})")
    for s in range(cfg["steps"]):
        print(f"step {s + 1}: loss {out['losses'][s]:.6f}  grad_norm {out['grad_norms'][s]:.6f}  "
              f"lr {out['lrs'][s]:.6g}")
    print(f"golden: {args.output_dir}/golden.safetensors + {len(grad_file_names)} grad files; "
          f"training took {elapsed:.2f} s on {torch.get_num_threads()} threads (torch {torch.__version__})")


# ------------------------------------------------------------------------------------------
# Random inputs, for running this script without the C++ exporter

FLAVORS = {  # dim, n_layers, n_heads, n_kv_heads, vocab_size, multiple_of
    "tiny": (64, 8, 4, 2, 2048, 64),
    "debugmodel": (256, 6, 16, 16, 2048, 256),
}


def eos_positions(T, row):
    """Fixed EOS positions of make-inputs' block_causal batches (row = sequence index b): two
    adjacent EOS (a one-token document) and one more, shifted per row so rows differ."""
    return sorted(p for p in {T // 4 + row, T // 4 + row + 1, (5 * T) // 8 + 2 * row} if p < T)


def command_make_inputs(args):
    setup_torch()
    if args.attn_mask_type == "block_causal" and args.eos_id is None:
        raise SystemExit("make-inputs: --attn-mask-type block_causal needs --eos-id")
    dim, n_layers, n_heads, n_kv_heads, vocab, multiple_of = FLAVORS[args.flavor]
    cfg = {
        "flavor": args.flavor, "seed": args.seed, "source": "llama3_reference.py make-inputs",
        "dim": dim, "n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_kv_heads,
        "vocab_size": vocab, "ffn_dim": ffn_hidden_dim(dim, multiple_of), "norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "rope_scaling": {"enabled": True, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_positions": 8192},
        "weight_tying": args.weight_tying, "batch_size": args.batch_size, "seq_len": args.seq_len,
        "accumulation_steps": args.accumulation_steps, "steps": args.steps,
        "lr": 8e-4, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1,
        "warmup_steps": 2, "decay_ratio": 0.8, "decay_type": "linear", "min_lr_factor": 0.0,
        "max_norm": 1.0, "attn_mask_type": args.attn_mask_type,
        "float8_recipe": args.float8_recipe, "float8_filter_fqns": [],
    }
    if args.eos_id is not None:
        cfg["eos_id"] = args.eos_id
    check_attn_mask_config(cfg, "make-inputs")
    torch.manual_seed(args.seed)
    model = Transformer(cfg)
    init_weights(model, cfg)
    init = [(name, p.detach()) for name, p in model.named_parameters()]
    assert [n for n, _ in init] == parameter_names(cfg)
    S, A, B, T = args.steps, args.accumulation_steps, args.batch_size, args.seq_len
    windows = torch.randint(0, vocab, (S, A, B, T + 1), dtype=torch.int64)
    if args.attn_mask_type == "block_causal":  # several documents per sequence: the mask matters
        for b in range(B):
            windows[:, :, b, eos_positions(T, b)] = args.eos_id
    tokens, labels = windows[..., :-1].clone(), windows[..., 1:].clone()
    flat = labels.view(S * A, B * T)  # a few ignored labels per microbatch: exercises -100
    for row in flat:
        row[torch.randperm(B * T)[: args.ignored_labels]] = IGNORE_INDEX
    os.makedirs(args.dir, exist_ok=True)
    with open(os.path.join(args.dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    save_safetensors(os.path.join(args.dir, "init.safetensors"), init, {"seed": str(args.seed)})
    save_safetensors(os.path.join(args.dir, "batch.safetensors"), [("tokens", tokens), ("labels", labels)])
    mask = args.attn_mask_type
    if mask == "block_causal":
        ends = [eos_positions(T, b) for b in range(B)]
        mask += f", EOS {args.eos_id} at {ends} of rows 0..{B - 1}"
    float8 = f", float8 {args.float8_recipe}" if args.float8_recipe else ""
    print(f"inputs: {args.dir} ({args.flavor}, B={B}, T={T}, steps={S}, accumulation={A}, {mask}{float8})")


# ------------------------------------------------------------------------------------------
# Speed of PyTorch eager on the same model and batch, the peer of titan-train in
# tools/bench/cpu_step.sh. Not part of the golden data: nothing here is compared.


def blas_core_name():
    """The core of the OpenBLAS that torch's sgemm runs on (Debian's torch calls the
    libblas.so.3 alternative; BLAS_INFO=generic), or a line saying why it is unknown."""
    import ctypes
    for lib in ("libblas.so.3", "libopenblas.so.0"):
        try:
            handle = ctypes.CDLL(lib)  # already loaded by torch: the same copy
            corename = handle.openblas_get_corename
            corename.restype = ctypes.c_char_p
            config = handle.openblas_get_config
            config.restype = ctypes.c_char_p
            return f"{corename().decode()} ({config().decode().strip()}, via {lib})"
        except (OSError, AttributeError):
            continue
    return "unknown (libblas.so.3 is not OpenBLAS)"


def torch_blas_path():
    """Where libblas.so.3 resolves in this process (from /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "blas" in line.split()[-1]}
        return ", ".join(sorted(paths)) or "none mapped"
    except OSError:
        return "unknown"


def command_bench(args):
    torch.set_num_threads(args.threads)
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
    scaling = {"enabled": True, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_positions": 8192}
    cfg = {"dim": args.dim, "n_layers": args.n_layers, "n_heads": args.n_heads,
           "n_kv_heads": args.n_kv_heads, "vocab_size": args.vocab_size, "ffn_dim": args.ffn_dim,
           "norm_eps": 1e-5, "rope_theta": 500000.0, "rope_scaling": scaling,
           "weight_tying": False, "seq_len": args.seq_len}
    torch.manual_seed(args.seed)
    model = Transformer(cfg)
    init_weights(model, cfg)
    n_params = sum(p.numel() for p in model.parameters())
    # torchtitan's AdamW and clipping; the constant lr is torchtitan's after warm-up (the
    # schedule is a scalar per step and costs nothing).
    optimizer = torch.optim.AdamW(model.parameters(), lr=8e-4, betas=(0.9, 0.95), eps=1e-8,
                                  weight_decay=0.1, foreach=args.foreach)
    B, T, V = args.batch_size, args.seq_len, args.vocab_size
    print(f"bench: torch {torch.__version__}, {torch.get_num_threads()} threads, BLAS "
          f"{blas_core_name()}; mapped: {torch_blas_path()}")
    print(f"bench: llama3 dim {args.dim}, {args.n_layers} layers, {args.n_heads} heads, "
          f"{args.n_kv_heads} kv heads, ffn {args.ffn_dim}, vocab {V}: {n_params} parameters; "
          f"batch {B} x {T}, fp32, AdamW foreach={args.foreach}, deterministic={args.deterministic}")
    step_s, losses = [], []
    for step in range(1, args.steps + 1):
        windows = torch.randint(0, V, (B, T + 1), dtype=torch.int64)  # synthetic, like titan's
        tokens, labels = windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = cross_entropy_sum(model(tokens), labels) / labels.numel()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        elapsed = time.perf_counter() - started
        step_s.append(elapsed)
        losses.append(float(loss))
        print(f"step {step}: loss {float(loss):.4f}  grad_norm {float(norm):.4f}  "
              f"{elapsed:.3f} s  {B * T / elapsed:.1f} tokens/s", flush=True)
    timed = sorted(step_s[args.warmup:]) or sorted(step_s)
    median_s = (timed[(len(timed) - 1) // 2] + timed[len(timed) // 2]) / 2
    result = {"tokens_per_s": B * T / median_s, "step_s_median": median_s, "step_s": step_s,
              "losses": losses, "warmup_steps": args.warmup, "threads": torch.get_num_threads(),
              "parameters": n_params, "torch_version": torch.__version__,
              "blas": blas_core_name(), "foreach": args.foreach}
    print(f"bench: median of steps {args.warmup + 1}..{args.steps}: {median_s:.3f} s per step, "
          f"{result['tokens_per_s']:.1f} tokens/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f)
            f.write("\n")


# ------------------------------------------------------------------------------------------
# Self-test of the Float8 simulation (part of `check`)


def fp8_table(fmt):
    """Every finite value of fmt decoded from its 256 bit patterns (sign, exponent field,
    mantissa field), as {value: True if its mantissa field is even}; +0 and -0 are one entry."""
    table = {}
    m_count = 1 << fmt.man_bits
    e_all = (1 << fmt.exp_bits) - 1
    for code in range(256):
        sign = -1.0 if code >> 7 else 1.0
        e_field = (code >> fmt.man_bits) & e_all
        mant = code & (m_count - 1)
        if fmt is E5M2 and e_field == e_all:
            continue  # inf, NaN
        if fmt is E4M3 and e_field == e_all and mant == m_count - 1:
            continue  # NaN (e4m3fn has no inf)
        if e_field == 0:
            value = sign * mant * 2.0 ** (1 - fmt.bias - fmt.man_bits)  # subnormal
        else:
            value = sign * (1 + mant / m_count) * 2.0 ** (e_field - fmt.bias)
        table[value] = mant % 2 == 0
    return table


def float8_scale_scalar(amax, fmt, pow2):
    """The scale rule on Python floats: float64 division, float32 rounding, power of two."""
    s = struct.unpack("<f", struct.pack("<f", fmt.fmax / max(amax, FLOAT8_SCALE_EPS)))[0]
    return 2.0 ** math.floor(math.log2(s)) if pow2 else s


def float8_cast_groups(x, axis, fmt, pow2):
    """x [rows, cols] -> x', cast slice by slice: each row or column (or the whole tensor) on
    its own, with the scale from float8_scale_scalar. The peer of float8_cast."""
    def whole(t):
        s = float8_scale_scalar(t.abs().max().item(), fmt, pow2)
        st = torch.tensor(s, dtype=torch.float32)
        return round_to_fp8(t * st, fmt).float() / st
    if axis == "tensor":
        return whole(x)
    if axis == "rows":
        return torch.stack([whole(row) for row in x])
    return torch.stack([whole(col) for col in x.t()], dim=1)


def check_float8(expect_close, scaling):
    """Returns the names of the failed checks."""
    failures = []

    def report(ok, what):
        print(f"  {'ok' if ok else 'FAIL':4} {what}")
        if not ok:
            failures.append(what)

    # round_to_fp8 vs the decoded table: every result is the nearest table value, ties to the
    # even mantissa, +-fmax beyond it. The sweep: the table values, the halfway points between
    # neighbours and the float32 values next to them, subnormals and below, values beyond
    # fmax, log-uniform random float32 over the whole range; and their negatives.
    for fmt in (E4M3, E5M2):
        table = fp8_table(fmt)
        values = torch.tensor(sorted(table), dtype=torch.float64)
        even = torch.tensor([table[v] for v in sorted(table)])
        pos = values[values >= 0]
        sub = 2.0 ** (fmt.emin - fmt.man_bits)
        layout_ok = (len(table) == (253 if fmt is E4M3 else 247) and pos.max().item() == fmt.fmax
                     and pos[1].item() == sub and (values == 2.0 ** fmt.emin).any().item())
        report(layout_ok, f"{fmt.name} table: {len(table)} finite values, max {pos.max().item():g}, "
                          f"min subnormal 2^{int(math.log2(pos[1].item()))}, min normal 2^{fmt.emin}")
        mids = (pos[1:] + pos[:-1]) / 2
        mids32 = mids.float()
        up = torch.nextafter(mids32, torch.tensor(float("inf")))
        down = torch.nextafter(mids32, torch.tensor(0.0))
        sweep = torch.cat([
            pos.float(), mids32, up, down,
            torch.tensor([0.0, sub / 4, sub / 2, sub * 0.75, sub * 1.5, sub * 2.5, fmt.fmax * 1.01,
                          fmt.fmax * 1.0625, fmt.fmax * 2, 1e30, 3.0e38]),
            torch.exp2(torch.empty(4000).uniform_(math.log2(sub) - 4, math.log2(fmt.fmax) + 4)),
        ])
        sweep = torch.cat([sweep, -sweep])
        got = round_to_fp8(sweep, fmt)
        # the nearest finite value of any v beyond 4 fmax is that of 4 fmax (+-fmax); the
        # clamp keeps float64 distances to 3e38 from all rounding to the same number
        near = sweep.double().clamp(-4 * fmt.fmax, 4 * fmt.fmax)
        dist = (near[:, None] - values[None, :]).abs()
        best = dist.min(dim=1, keepdim=True).values
        candidates = dist == best
        ties = candidates.sum(1) > 1
        want = torch.where(candidates & (~ties[:, None] | even[None, :]), values[None, :],
                           torch.tensor(float("nan"), dtype=torch.float64)).nanmean(1)
        ok = torch.equal(got, want) and not torch.isnan(want).any().item()
        bad = (got != want).sum().item()
        report(ok, f"round_to_fp8 {fmt.name}: {len(sweep)} float32 values ({int(ties.sum())} ties) "
                   f"= the nearest table value, ties to even, saturating ({bad} wrong)")

    # The scale rule: amax 0 or tiny -> fmax / 1e-12; power-of-two scales round down.
    amaxes = [0.0, 1e-13, 1e-12, 2.0 ** -140, 3.0, 448.0, 0.1, 1e30, 3.0e38]
    rows_ok = True
    for fmt in (E4M3, E5M2):
        for pow2 in (False, True):
            got = float8_scale(torch.tensor(amaxes, dtype=torch.float32), fmt, pow2).tolist()
            want = [float8_scale_scalar(struct.unpack("<f", struct.pack("<f", a))[0], fmt, pow2)
                    for a in amaxes]
            rows_ok &= got == want
    zero = float8_scale(torch.zeros(1), E4M3, True).item()
    report(rows_ok and zero == 2.0 ** 48 and float8_scale(torch.tensor([3.0]), E4M3, True).item() == 128
           and float8_scale(torch.zeros(1), E5M2, True).item() == 2.0 ** 55,
           "float8 scales: float32(fmax / max(amax, 1e-12)), power of two rounded down "
           "(amax 0 -> 2^48 e4m3, 2^55 e5m2; amax 3 -> 128)")
    z = float8_cast(torch.zeros(3, 4), "rows", E4M3, True)
    x = torch.randn(5, 7) * torch.logspace(-3, 3, 7)
    q = round_to_fp8(x * float8_scale(float8_amax(x, "cols"), E4M3, False), E4M3)
    q2 = round_to_fp8(x * float8_scale(float8_amax(x, "rows"), E5M2, True), E5M2)
    report(torch.equal(z, torch.zeros(3, 4)) and torch.equal(q.abs().amax(0), torch.full((7,), 448.0,
           dtype=torch.float64)) and bool((q2.abs().amax(1) > E5M2.fmax / 2).all())
           and bool((q2.abs().amax(1) <= E5M2.fmax).all()),
           "float8 casts: zeros stay zero; each group's amax maps to fmax (to above fmax/2 "
           "with power-of-two scales)")

    # Float8LinearFunction's forward and three GEMMs vs autograd of the same products with the
    # operands cast slice by slice: dx = d/dx sum(dy' * (x w''^T)), dw = d/dw sum(dy''' *
    # (x''' w^T)). Rows and columns of very different sizes, so the recipes differ.
    M, K, N = 24, 32, 48
    x = torch.randn(M, K) * torch.logspace(-2, 2, M)[:, None] * torch.logspace(1, -1, K)
    w = torch.randn(N, K) * 0.05 * torch.logspace(-1, 1, N)[:, None]
    dy = torch.randn(M, N) * torch.logspace(-3, 0, N)
    exact = x @ w.t()
    results = {}
    for recipe in FLOAT8_RECIPES:
        xl, wl = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = Float8LinearFunction.apply(xl.reshape(2, M // 2, K), wl, recipe).reshape(M, N)
        y.backward(dy)
        pow2 = recipe != "tensorwise"
        cast = lambda t, axis, fmt: float8_cast_groups(t, axis, fmt, pow2)
        if recipe == "tensorwise":
            x1, w1, dy2, w2 = cast(x, "tensor", E4M3), cast(w, "tensor", E4M3), cast(dy, "tensor", E5M2), None
            w2, dy3, x3 = w1, dy2, x1
        elif recipe == "rowwise":
            x1, w1, dy2, w2 = cast(x, "rows", E4M3), cast(w, "rows", E4M3), cast(dy, "rows", E4M3), cast(w, "cols", E4M3)
            dy3, x3 = cast(dy, "cols", E4M3), cast(x, "cols", E4M3)
        else:
            x1, w1, dy2, w2 = cast(x, "rows", E4M3), cast(w, "rows", E4M3), cast(dy, "rows", E4M3), cast(w, "tensor", E4M3)
            dy3, x3 = dy, x
        y_ref = x1 @ w1.t()
        xv, wv = x.clone().requires_grad_(), w.clone().requires_grad_()
        (dy2 * (xv @ w2.t())).sum().backward()
        (dy3 * (x3 @ wv.t())).sum().backward()
        rel = lambda got, want: (got - want).abs().max() / want.abs().max()
        expect_close(f"float8 {recipe}: y, dx, dw vs cast-by-slice operands + autograd (relative)",
                     torch.stack([rel(y.detach(), y_ref), rel(xl.grad, xv.grad), rel(wl.grad, wv.grad)]),
                     torch.zeros(3), 1e-6)
        results[recipe] = (rel(y.detach(), exact).item(), rel(xl.grad, dy @ w).item(),
                           rel(wl.grad, dy.t() @ x).item())
    print("  info float8 error vs float32 (max |diff| / max |exact|; y, dx, dw): " +
          "; ".join(f"{r} {a:.2g} {b:.2g} {c:.2g}" for r, (a, b, c) in results.items()))
    errors = [v for r, vs in results.items() for v in (vs[:2] if r == "rowwise_with_gw_hp" else vs)]
    report(results["rowwise_with_gw_hp"][2] < 1e-6 and all(0 < v < 0.1 for v in errors),
           "float8 GEMMs are cast (error in (0, 0.1)) except rowwise_with_gw_hp's float32 dw")

    # Which linears convert: the layers' linears with both dims divisible by 16, not filtered.
    small = {"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 1, "vocab_size": 64,
             "ffn_dim": 48, "norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": scaling,
             "weight_tying": False, "seq_len": 8, "float8_recipe": "rowwise",
             "float8_filter_fqns": ["w2", "layers.1.attention"]}
    got = Transformer(small).float8_linears
    want = ["layers.0.attention.wq", "layers.0.attention.wo", "layers.0.feed_forward.w1",
            "layers.0.feed_forward.w3", "layers.1.feed_forward.w1", "layers.1.feed_forward.w3"]
    names_ok = got == want and [n for n, _ in Transformer(small).named_parameters()] == parameter_names(small)
    report(names_ok, f"float8 conversion: wk/wv [8, 32] and filtered w2, layers.1.attention, output "
                     f"stay float32 ({len(got)} converted); parameter names unchanged")

    # A Float8 model trains: 3 steps of the tiny flavor (B 1, T 32) per recipe, losses finite
    # and within 3% of the float32 model's, step by step; and falling.
    dim, n_layers, n_heads, n_kv_heads, vocab, multiple_of = FLAVORS["tiny"]
    cfg = {"dim": dim, "n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_kv_heads,
           "vocab_size": vocab, "ffn_dim": ffn_hidden_dim(dim, multiple_of), "norm_eps": 1e-5,
           "rope_theta": 500000.0, "rope_scaling": scaling, "weight_tying": False,
           "batch_size": 1, "seq_len": 32, "accumulation_steps": 1, "steps": 3, "lr": 3e-3,
           "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1, "warmup_steps": 1,
           "decay_ratio": None, "decay_type": "linear", "min_lr_factor": 0.1, "max_norm": 1.0}
    model = Transformer(cfg)
    init_weights(model, cfg)
    init = {k: v.detach().clone() for k, v in model.named_parameters()}
    toks = torch.randint(0, vocab, (1, 1, 1, 33)).expand(3, 1, 1, 33)  # one row, learnt
    toks, labs = toks[..., :-1].contiguous(), toks[..., 1:].contiguous()
    base = train(cfg, init, toks, labs, keep_first=False)["losses"]
    for recipe in FLOAT8_RECIPES:
        f8cfg = dict(cfg, float8_recipe=recipe, float8_filter_fqns=[])
        losses = train(f8cfg, init, toks, labs, keep_first=False)["losses"]
        rel = ((losses - base).abs() / base).max().item()
        ok = bool(torch.isfinite(losses).all()) and rel < 0.03 and losses[-1] < losses[0] - 0.1
        report(ok, f"float8 {recipe} trains ({len(Transformer(f8cfg).float8_linears)} linears): losses "
                   f"{' '.join(f'{v:.4f}' for v in losses.tolist())} vs float32 "
                   f"{' '.join(f'{v:.4f}' for v in base.tolist())} (max rel diff {rel:.2g}, tolerance 0.03)")
    return failures


# ------------------------------------------------------------------------------------------
# Self-test: each piece against a naive version of itself


def command_check(args):
    setup_torch()
    torch.manual_seed(1)
    failures = []

    def expect_close(what, got, want, tol):
        err = (got.double() - want.double()).abs().max().item() if got.numel() else 0.0
        status = "ok" if err <= tol else "FAIL"
        print(f"  {status:4} {what}: max abs diff {err:.3g} (tolerance {tol:g})")
        if err > tol:
            failures.append(what)

    scaling = {"enabled": True, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_positions": 8192}
    # RoPE frequencies: the scaling's three regions, by hand in float64.
    hd, theta = 128, 500000.0
    naive_f = []
    for i in range(hd // 2):
        f = theta ** (-2 * i / hd)
        w = 2 * math.pi / f
        if w < 8192 / 4:
            naive_f.append(f)
        elif w > 8192 / 1:
            naive_f.append(f / 8)
        else:
            s = (8192 / w - 1) / (4 - 1)
            naive_f.append((1 - s) * f / 8 + s * f)
    f32 = rope_frequencies(hd, theta, scaling)
    expect_close("rope frequencies (hd 128, theta 5e5, scaled)",
                 f32 / torch.tensor(naive_f, dtype=torch.float64), torch.ones(hd // 2), 1e-6)
    regions = sum(1 for a, b in zip(f32.tolist(), [theta ** (-2 * i / hd) for i in range(hd // 2)])
                  if abs(a / b - 1) > 1e-3)
    print(f"  info rope: {regions} of {hd // 2} frequencies changed by the scaling")

    # RoPE rotation vs a loop over (b, t, h, j).
    B, T, H, hd = 2, 7, 3, 8
    x = torch.randn(B, T, H, hd)
    freqs = rope_frequencies(hd, 10000.0, scaling).double()
    y = apply_rope(x, rope_table(hd, 10000.0, scaling, T))
    naive = torch.empty(B, T, H, hd, dtype=torch.float64)
    for b in range(B):
        for t in range(T):
            for h in range(H):
                for j in range(hd // 2):
                    a = t * freqs[j].item()
                    x0, x1 = x[b, t, h, 2 * j].item(), x[b, t, h, 2 * j + 1].item()
                    naive[b, t, h, 2 * j] = x0 * math.cos(a) - x1 * math.sin(a)
                    naive[b, t, h, 2 * j + 1] = x0 * math.sin(a) + x1 * math.cos(a)
    expect_close("rope rotation vs loop", y, naive, 1e-5)

    # Causal GQA attention vs a loop over (b, h, t) with kv head h // (Hq/Hkv).
    B, T, Hq, Hkv, hd = 2, 6, 4, 2, 8
    q, k, v = torch.randn(B, T, Hq, hd), torch.randn(B, T, Hkv, hd), torch.randn(B, T, Hkv, hd)
    o = causal_attention(q, k, v)
    naive = torch.empty(B, T, Hq, hd, dtype=torch.float64)
    for b in range(B):
        for h in range(Hq):
            g = h // (Hq // Hkv)
            for t in range(T):
                s = [sum(q[b, t, h, d].item() * k[b, u, g, d].item() for d in range(hd)) / math.sqrt(hd)
                     for u in range(t + 1)]
                m = max(s)
                e = [math.exp(z - m) for z in s]
                z = sum(e)
                for d in range(hd):
                    naive[b, t, h, d] = sum(e[u] / z * v[b, u, g, d].item() for u in range(t + 1))
    expect_close("causal GQA attention vs loop", o, naive, 1e-5)

    # Document ids on a hand example: the EOS ends its document (running count shifted by one).
    E = 9
    docs = document_ids(torch.tensor([[5, E, 6, 7, E, 8], [E, E, 1, 2, 3, E]]), E)
    ok = docs.tolist() == [[0, 0, 1, 1, 1, 2], [0, 1, 2, 2, 2, 2]]
    print(f"  {'ok' if ok else 'FAIL':4} document ids: [5 E 6 7 E 8] -> {docs[0].tolist()}, "
          f"[E E 1 2 3 E] -> {docs[1].tolist()}")
    if not ok:
        failures.append("document ids")

    # Block-causal GQA attention vs a loop with an explicit per-(i, j) mask: row 0 has four
    # documents (one of a single token), row 1 starts with a one-token document, row 2 is one
    # document (its only EOS is the last token) and must give exactly causal_attention's rows.
    B, T, Hq, Hkv, hd = 3, 8, 4, 2, 8
    toks = torch.tensor([[3, E, E, 4, 5, E, 6, 2], [E, 1, 2, E, 3, 4, 5, E],
                         [1, 2, 3, 4, 5, 6, 7, E]])
    q, k, v = torch.randn(B, T, Hq, hd), torch.randn(B, T, Hkv, hd), torch.randn(B, T, Hkv, hd)
    allowed = block_causal_mask(toks, E)
    naive_allowed = torch.zeros(B, T, T, dtype=torch.bool)
    for b in range(B):
        for i in range(T):
            for j in range(T):
                # same document: no EOS among tokens j .. i-1 (an EOS at i itself is i's own)
                naive_allowed[b, i, j] = j <= i and all(toks[b, u].item() != E for u in range(j, i))
    ok = torch.equal(allowed, naive_allowed)
    print(f"  {'ok' if ok else 'FAIL':4} block-causal mask vs loop"
          f" ({int(allowed.sum())} of {B * T * T} allowed)")
    if not ok:
        failures.append("block-causal mask")
    o = block_causal_attention(q, k, v, allowed)
    naive = torch.empty(B, T, Hq, hd, dtype=torch.float64)
    for b in range(B):
        for h in range(Hq):
            g = h // (Hq // Hkv)
            for t in range(T):
                keys = [u for u in range(T) if naive_allowed[b, t, u]]
                s = [sum(q[b, t, h, d].item() * k[b, u, g, d].item() for d in range(hd))
                     / math.sqrt(hd)
                     for u in keys]
                m = max(s)
                e = [math.exp(z - m) for z in s]
                z = sum(e)
                for d in range(hd):
                    naive[b, t, h, d] = sum(e[n] / z * v[b, u, g, d].item()
                                            for n, u in enumerate(keys))
    expect_close("block-causal GQA attention vs loop (several documents per row)", o, naive, 1e-5)
    expect_close("block-causal attention, one-document row = causal (exact)", o[2],
                 causal_attention(q, k, v)[2], 0.0)

    # RMSNorm vs formula in float64.
    norm = RMSNorm(8, 1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(8))
    xn = torch.randn(3, 8)
    xd = xn.double()
    want = xd / torch.sqrt((xd * xd).mean(-1, keepdim=True) + 1e-5) * norm.weight.double()
    expect_close("rmsnorm vs formula", norm(xn).detach(), want, 1e-5)

    # Cross-entropy with ignored labels: sum of -log softmax over valid labels.
    logits = torch.randn(2, 5, 11)
    lab = torch.randint(0, 11, (2, 5))
    lab[0, 1] = lab[1, 4] = IGNORE_INDEX
    lsm = torch.log_softmax(logits.double(), -1)
    want = -sum(lsm[b, t, lab[b, t]] for b in range(2) for t in range(5) if lab[b, t] != IGNORE_INDEX)
    expect_close("cross-entropy sum, ignore -100", cross_entropy_sum(logits, lab).reshape(1),
                 want.reshape(1), 1e-4)

    # LR schedule: the values worked out in notes §6.
    sched = lr_lambda_factory({"steps": 10, "warmup_steps": 2, "decay_ratio": 0.8,
                               "decay_type": "linear", "min_lr_factor": 0.0})
    expect_close("lr schedule, debug TOML (10 steps, W 2, ratio 0.8)",
                 torch.tensor([sched(c) for c in range(10)]),
                 torch.tensor([0.5, 1, 1, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]), 1e-12)
    sched = lr_lambda_factory({"steps": 1000, "warmup_steps": 200, "decay_ratio": None,
                               "decay_type": "linear", "min_lr_factor": 0.0})
    got = torch.tensor([sched(s - 1) for s in (1, 200, 201, 202, 1000)], dtype=torch.float64)
    expect_close("lr schedule, 8B TOML (s/200, 1 at 201, 1 - (s-201)/800)", got,
                 torch.tensor([1 / 200, 1.0, 1.0, 1 - 1 / 800, 1 / 800], dtype=torch.float64), 1e-12)

    # clip_grad_norm_: pre-clip norm returned, scale max_norm / (norm + 1e-6).
    p = nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([3.0, 4.0, 0.0])
    n = torch.nn.utils.clip_grad_norm_([p], 1.0)
    expect_close("clip: returns the pre-clip norm", n.reshape(1), torch.tensor([5.0]), 1e-6)
    expect_close("clip: scales by max_norm/(norm+1e-6)", p.grad,
                 torch.tensor([3.0, 4.0, 0.0]) / (5.0 + 1e-6), 1e-7)

    # The model end to end in float64 against a loop-free recomputation: GQA with 2 kv heads,
    # tied and untied output, and the gradient of the loss against central differences.
    # block_causal: documents of 2 and 3 tokens in row 0, of 1, 1 and 3 in row 1.
    for tying, mask in ((False, "causal"), (True, "causal"), (False, "block_causal")):
        cfg = {"dim": 16, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 23,
               "ffn_dim": 32, "norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": scaling,
               "weight_tying": tying, "seq_len": 5}
        if mask == "block_causal":
            cfg.update(attn_mask_type=mask, eos_id=E)
        model = Transformer(cfg).double()
        init_weights(model, cfg)
        assert [n for n, _ in model.named_parameters()] == parameter_names(cfg)
        toks, labs = torch.randint(0, 23, (2, 5)), torch.randint(0, 23, (2, 5))
        if mask == "block_causal":
            toks[toks == E] = E + 1
            toks[0, 1] = toks[1, 0] = toks[1, 1] = E
        loss_fn = lambda: cross_entropy_sum(model(toks).double(), labs) / labs.numel()
        model.zero_grad()
        loss_fn().backward()
        params = dict(model.named_parameters())
        analytic, numeric = [], []
        for name, index in (("layers.0.attention.wq.weight", (1, 2)), ("layers.1.attention.wk.weight", (3, 5)),
                            ("layers.1.attention.wv.weight", (7, 0)), ("layers.0.feed_forward.w3.weight", (4, 9)),
                            ("layers.1.ffn_norm.weight", (6,)), ("tok_embeddings.weight", (int(toks[0, 2]), 3)),
                            ("norm.weight", (2,))):
            w = params[name]
            analytic.append(w.grad[index].item())
            with torch.no_grad():
                w[index] += 1e-4
                up = loss_fn().item()
                w[index] -= 2e-4
                down = loss_fn().item()
                w[index] += 1e-4
            numeric.append((up - down) / 2e-4)
        a, n = torch.tensor(analytic, dtype=torch.float64), torch.tensor(numeric, dtype=torch.float64)
        print(f"  info gradients checked: {', '.join(f'{x:.3g}' for x in analytic)}")
        expect_close(f"model gradients vs central differences, relative (tying={tying}, {mask})",
                     (a - n) / torch.maximum(a.abs(), n.abs()).clamp(min=1e-6), torch.zeros(len(a)), 1e-4)

    # block_causal end to end in float64: since RoPE scores depend only on i - j, a packed
    # row's logits equal each document's logits run alone (causal, from position 0); and the
    # mask matters (the packed row differs from causal after the first document).
    with torch.no_grad():
        packed = model(toks)
        alone = []
        for row in toks:
            ends = [t + 1 for t in range(5) if row[t] == E]
            starts = [0] + ends
            alone.append(torch.cat([model(row[None, a:b])[0] for a, b in
                                    zip(starts, ends + [5]) if b > a]))
        expect_close("block_causal model: packed rows = documents run alone (float64)",
                     packed, torch.stack(alone), 1e-10)
        causal_model = Transformer(dict(cfg, attn_mask_type="causal")).double()
        causal_model.load_state_dict(model.state_dict())
        moved = (causal_model(toks) - packed)[:, 2:].abs().max().item()
        ok = moved > 1e-3 and torch.equal(causal_model(toks)[0, :2], packed[0, :2])
        print(f"  {'ok' if ok else 'FAIL':4} block_causal vs causal logits: equal in the first "
              f"document, differ after it (max {moved:.3g})")
        if not ok:
            failures.append("block_causal changes the logits")

    # Gradient accumulation: 2 microbatches of 1 sequence = 1 microbatch of 2 sequences (the
    # valid-label count is the step's, so both give the same token mean, loss and updates).
    cfg = {"dim": 16, "n_layers": 2, "n_heads": 4, "n_kv_heads": 1, "vocab_size": 23, "ffn_dim": 32,
           "norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": scaling, "weight_tying": False,
           "batch_size": 2, "seq_len": 6, "accumulation_steps": 1, "steps": 3, "lr": 1e-2,
           "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1, "warmup_steps": 1,
           "decay_ratio": None, "decay_type": "cosine", "min_lr_factor": 0.1, "max_norm": 0.5}
    model = Transformer(cfg)
    init_weights(model, cfg)
    init = {k: v.detach().clone() for k, v in model.named_parameters()}
    toks, labs = torch.randint(0, 23, (3, 1, 2, 6)), torch.randint(0, 23, (3, 1, 2, 6))
    labs[0, 0, 0, :4] = IGNORE_INDEX  # unequal valid counts per sequence
    one = train(cfg, init, toks, labs)
    two = train(dict(cfg, batch_size=1, accumulation_steps=2), init, toks.view(3, 2, 1, 6), labs.view(3, 2, 1, 6))
    expect_close("accumulation 2 x B1 = 1 x B2: losses", two["losses"], one["losses"], 1e-5)
    expect_close("accumulation 2 x B1 = 1 x B2: step-1 grads",
                 torch.cat([two[k].flatten() for k in one if k.startswith("grad.")]),
                 torch.cat([one[k].flatten() for k in one if k.startswith("grad.")]), 1e-6)

    # Float8 (torchao's Float8Linear simulated in float32): the fp8 rounding against a table
    # decoded from the bit layout, the scale rule, the three GEMMs' gradients against autograd
    # with operands cast group by group, and that a Float8 model trains like the float32 one.
    started = time.time()
    failures.extend(check_float8(expect_close, scaling))
    print(f"  info float8 checks took {time.time() - started:.1f} s")

    # safetensors: round trip and byte layout.
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.safetensors")
        items = [("a", torch.randn(3, 2)), ("b", torch.arange(5)), ("s", torch.tensor(2.5)),
                 ("e", torch.empty(0, 4)), ("h", torch.randn(3).bfloat16())]
        save_safetensors(path, items, {"k": "v"})
        back, meta = load_safetensors(path)
        same = all(torch.equal(back[n], t) and back[n].dtype == t.dtype for n, t in items)
        with open(path, "rb") as f:
            raw = f.read()
        (n,) = struct.unpack("<Q", raw[:8])
        layout = n % 8 == 0 and raw[8:9] == b"{" and len(raw) == 8 + n + 24 + 40 + 4 + 0 + 6
        ok = same and layout and meta == {"format": "pt", "k": "v"}
        print(f"  {'ok' if ok else 'FAIL':4} safetensors round trip and layout")
        if not ok:
            failures.append("safetensors")

    if failures:
        print(f"check: {len(failures)} FAILED: {', '.join(failures)}")
        sys.exit(1)
    print("check: all passed")


def setup_torch():
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("golden", help="inputs folder -> golden*.safetensors")
    g.add_argument("input_dir")
    g.add_argument("output_dir")
    g.add_argument("--max-file-bytes", type=int, default=MAX_FILE_BYTES)
    g.set_defaults(func=command_golden)
    m = sub.add_parser("make-inputs", help="random inputs with torchtitan's init rules")
    m.add_argument("dir")
    m.add_argument("--flavor", choices=sorted(FLAVORS), default="tiny")
    m.add_argument("--batch-size", type=int, default=2)
    m.add_argument("--seq-len", type=int, default=64)
    m.add_argument("--steps", type=int, default=5)
    m.add_argument("--accumulation-steps", type=int, default=1)
    m.add_argument("--ignored-labels", type=int, default=3, help="labels set to -100 per microbatch")
    m.add_argument("--weight-tying", action="store_true")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--attn-mask-type", choices=ATTN_MASK_TYPES, default="causal",
                   help="block_causal: attention within documents ending at --eos-id")
    m.add_argument("--eos-id", type=int, help="end-of-document token (needed by block_causal)")
    m.add_argument("--float8-recipe", choices=sorted(FLOAT8_RECIPES),
                   help="Float8 linears with this torchao recipe (default: none, float32)")
    m.set_defaults(func=command_make_inputs)
    c = sub.add_parser("check", help="self-test of the reference's pieces")
    c.set_defaults(func=command_check)
    b = sub.add_parser("bench", help="time PyTorch eager training steps (tools/bench/cpu_step.sh)")
    b.add_argument("--dim", type=int, default=512)
    b.add_argument("--n-layers", type=int, default=8)
    b.add_argument("--n-heads", type=int, default=8)
    b.add_argument("--n-kv-heads", type=int, default=4)
    b.add_argument("--ffn-dim", type=int, default=1536)
    b.add_argument("--vocab-size", type=int, default=32000)
    b.add_argument("--seq-len", type=int, default=512)
    b.add_argument("--batch-size", type=int, default=4)
    b.add_argument("--steps", type=int, default=6)
    b.add_argument("--warmup", type=int, default=2, help="first steps left out of the median")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--foreach", action=argparse.BooleanOptionalAction, default=False,
                   help="AdamW's multi-tensor path (same arithmetic)")
    b.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.use_deterministic_algorithms(True), as golden runs")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", help="also write the figures to this file")
    b.set_defaults(func=command_bench)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
