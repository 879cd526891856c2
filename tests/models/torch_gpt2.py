"""Reference GPT-2 in PyTorch, written from tandem's model spec (docs in DESIGN.md, "Models").

Pre-LayerNorm decoder, learned positions, tied head, GELU (tanh), no dropout. Blocks may differ
in head count and MLP width (pruned models): block i has layer_n_head[i] heads of head_dim and a
layer_n_inner[i]-wide MLP, read from the optional checkpoint metadata keys n_inner, head_dim,
layer_n_head and layer_n_inner (comma-separated lists); absent keys mean GPT-2's shape. Linear weights use
the Hugging Face GPT-2 Conv1D layout [in, out], so a layer is `x @ W + b`. Checkpoints are
safetensors, parsed by hand (no `safetensors` package on Debian): u64 LE header length N, N bytes
of JSON, then raw little-endian data addressed by offsets relative to the end of the header.
"""
import json
import math
import struct

import numpy as np
import torch
import torch.nn.functional as F

_DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64,
           "F16": np.float16, "U8": np.uint8, "I8": np.int8}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}

PRESETS = {
    "slm-tiny": dict(n_embd=128, n_layer=4, n_head=4, n_positions=128, vocab_size=256),
    # What pruning leaves: heads of the parent's size, fewer of them and narrower MLPs per block.
    "nonuniform": dict(n_embd=64, n_layer=3, n_head=4, n_positions=64, vocab_size=256,
                       head_dim=16, layer_n_head=[4, 1, 3], layer_n_inner=[256, 40, 96]),
    "llm-small": dict(n_embd=384, n_layer=6, n_head=6, n_positions=128, vocab_size=256),
}


def load_safetensors(path):
    """Returns ({name: np.ndarray}, {str: str} metadata)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        arr = np.frombuffer(blob, dtype=dtype, count=(end - begin) // dtype.itemsize,
                            offset=base + begin)
        if arr.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"{path}: tensor {name}: {arr.size} elements, shape {shape}")
        tensors[name] = arr.reshape(shape).astype(dtype.newbyteorder("="))
    return tensors, meta


def save_safetensors(path, tensors, metadata=None):
    """Writes {name: np.ndarray} (F32/F64/I32/I64/...) with string metadata."""
    header, chunks, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        raw = arr.tobytes()
        header[name] = {"dtype": _NAMES[np.dtype(arr.dtype.newbyteorder("="))],
                        "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)  # pad so the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for raw in chunks:
            f.write(raw)


def config_from_metadata(meta):
    cfg = {k: int(meta[k]) for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")}
    for k in ("n_inner", "head_dim"):
        if k in meta:
            cfg[k] = int(meta[k])
    for k in ("layer_n_head", "layer_n_inner"):
        if k in meta:
            cfg[k] = [int(x) for x in meta[k].split(",")]
    return cfg


def block_shape(cfg, i):
    """(heads, head_dim, MLP width) of block i."""
    C = cfg["n_embd"]
    hd = cfg.get("head_dim", C // cfg["n_head"])
    heads = cfg["layer_n_head"][i] if "layer_n_head" in cfg else cfg["n_head"]
    inner = cfg["layer_n_inner"][i] if "layer_n_inner" in cfg else cfg.get("n_inner", 4 * C)
    return heads, hd, inner


def parameter_shapes(cfg):
    """Every parameter name in checkpoint order, with its shape."""
    C, V, T, L = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"], cfg["n_layer"]
    shapes = {"wte.weight": (V, C), "wpe.weight": (T, C)}
    for i in range(L):
        p = f"h.{i}."
        heads, hd, M = block_shape(cfg, i)
        A = heads * hd
        shapes.update({
            p + "ln_1.weight": (C,), p + "ln_1.bias": (C,),
            p + "attn.c_attn.weight": (C, 3 * A), p + "attn.c_attn.bias": (3 * A,),
            p + "attn.c_proj.weight": (A, C), p + "attn.c_proj.bias": (C,),
            p + "ln_2.weight": (C,), p + "ln_2.bias": (C,),
            p + "mlp.c_fc.weight": (C, M), p + "mlp.c_fc.bias": (M,),
            p + "mlp.c_proj.weight": (M, C), p + "mlp.c_proj.bias": (C,),
        })
    shapes.update({"ln_f.weight": (C,), "ln_f.bias": (C,)})
    return shapes


class GPT2(torch.nn.Module):
    """Parameters live in a flat name -> Parameter dict with the checkpoint's names."""

    def __init__(self, cfg, dtype=torch.float32, seed=0):
        super().__init__()
        self.cfg = dict(cfg)
        assert "head_dim" in cfg or cfg["n_embd"] % cfg["n_head"] == 0
        self.names = list(parameter_shapes(cfg))
        self.params = torch.nn.ParameterDict()  # keys may not contain '.', so map them
        g = torch.Generator().manual_seed(seed)
        resid_std = 0.02 / math.sqrt(2 * cfg["n_layer"])
        for name, shape in parameter_shapes(cfg).items():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                t = torch.ones(shape, dtype=dtype)
            elif name.endswith(".bias"):
                t = torch.zeros(shape, dtype=dtype)
            else:
                std = resid_std if name.endswith("c_proj.weight") else 0.02
                t = torch.randn(shape, generator=g, dtype=torch.float32).to(dtype) * std
            self.params[name.replace(".", "/")] = torch.nn.Parameter(t)

    def p(self, name):
        return self.params[name.replace(".", "/")]

    def named(self):
        return [(n, self.p(n)) for n in self.names]

    def load_numpy(self, tensors):
        with torch.no_grad():
            for name, param in self.named():
                if name not in tensors:
                    raise KeyError(f"checkpoint lacks {name}")
                src = tensors[name]
                if tuple(src.shape) != tuple(param.shape):
                    raise ValueError(f"{name}: checkpoint shape {src.shape}, model {tuple(param.shape)}")
                param.copy_(torch.from_numpy(np.asarray(src)).to(param.dtype))

    def to_numpy(self):
        return {n: p.detach().cpu().numpy().astype(np.float32) for n, p in self.named()}

    def metadata(self):
        meta = {k: ",".join(map(str, v)) if isinstance(v, list) else str(v)
                for k, v in self.cfg.items()}
        meta["format"] = "tandem-gpt2"
        return meta

    def forward(self, tokens, hidden=None):  # tokens (B,T) int64 -> logits (B,T,V)
        """hidden, a list, receives every block's output (B,T,C) in order."""
        cfg, p = self.cfg, self.p
        B, T = tokens.shape
        C = cfg["n_embd"]
        x = p("wte.weight")[tokens] + p("wpe.weight")[:T]  # (B,T,C)
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        for i in range(cfg["n_layer"]):
            h = f"h.{i}."
            H, hd, _ = block_shape(cfg, i)
            A = H * hd
            a = F.layer_norm(x, (C,), p(h + "ln_1.weight"), p(h + "ln_1.bias"), 1e-5)
            qkv = linear(a, p(h + "attn.c_attn.weight"), p(h + "attn.c_attn.bias"))  # (B,T,3A)
            q, k, v = qkv.split(A, dim=-1)
            q, k, v = (t.view(B, T, H, hd).transpose(1, 2) for t in (q, k, v))  # (B,H,T,hd)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)  # (B,H,T,T)
            att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, A)
            x = x + linear(y, p(h + "attn.c_proj.weight"), p(h + "attn.c_proj.bias"))
            m = F.layer_norm(x, (C,), p(h + "ln_2.weight"), p(h + "ln_2.bias"), 1e-5)
            m = F.gelu(linear(m, p(h + "mlp.c_fc.weight"), p(h + "mlp.c_fc.bias")), approximate="tanh")
            x = x + linear(m, p(h + "mlp.c_proj.weight"), p(h + "mlp.c_proj.bias"))
            if hidden is not None:
                hidden.append(x)
        x = F.layer_norm(x, (C,), p("ln_f.weight"), p("ln_f.bias"), 1e-5)
        return x @ p("wte.weight").t()  # (B,T,V), tied head


def linear(x, w, b):
    """x (..., in) @ w (in, out) + b (out,): one addmm, as a fused GEMM-with-bias."""
    return torch.addmm(b, x.reshape(-1, x.shape[-1]), w).view(*x.shape[:-1], w.shape[1])


def loss_fn(logits, targets):
    """Mean cross-entropy over positions whose target != -1."""
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1).long(), ignore_index=-1)


def model_from_file(path, dtype=torch.float32):
    tensors, meta = load_safetensors(path)
    model = GPT2(config_from_metadata(meta), dtype=dtype)
    model.load_numpy(tensors)
    return model
