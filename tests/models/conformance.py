#!/usr/bin/python3
"""Checks tandem's C++ GPT-2 against the PyTorch reference (torch_gpt2.py), run in float64.

    conformance.py --model model.safetensors --expected expected.safetensors
    conformance.py --self-test

`expected.safetensors` (dumped by the C++ side) holds `tokens` (I32 B,T), `targets` (I32 B,T,
-1 = ignore), `logits` (F32 B,T,V), `loss` (F32 [1]) and `grad.<name>` for every parameter.
Each tensor passes when max|ours - ref| <= rtol * max|ref| + atol. A correct float32
implementation is off by ~1e-6 relative (measured by --self-test); the tolerances sit 100-1000x
above that and well below what a flipped sign, a transposition, a swapped q/k or a missing term
produces (1e-2 and up). Exit 0 when all pass, 1 otherwise.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_gpt2 as tg  # noqa: E402

# (rtol, atol) per kind: error relative to the tensor's largest reference magnitude.
TOL = {"logits": (1e-4, 1e-5), "loss": (1e-5, 0.0), "grad": (1e-3, 1e-7)}


def reference(model_path, tokens, targets, hidden_grads=None):
    """float64 logits (B,T,V), loss and {name: grad} from the checkpoint at model_path. With
    hidden_grads {layer: G (B,T,C)}, the gradients are those of loss + sum(G * h_layer), h_layer
    being that block's output; the loss returned is the cross-entropy alone."""
    model = tg.model_from_file(model_path, dtype=torch.float64)
    hidden = []
    logits = model(torch.from_numpy(tokens.astype(np.int64)), hidden)
    loss = tg.loss_fn(logits, torch.from_numpy(targets.astype(np.int64)))
    total = loss
    for layer, g in (hidden_grads or {}).items():
        total = total + (torch.from_numpy(g.astype(np.float64)) * hidden[layer]).sum()
    total.backward()
    grads = {n: p.grad.numpy() for n, p in model.named()}
    return logits.detach().numpy(), np.array([loss.item()]), grads, model


def compare(name, ours, ref, kind, quiet=False):
    rtol, atol = TOL[kind]
    ours = np.asarray(ours, dtype=np.float64)
    err = float(np.max(np.abs(ours - ref))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    ok = np.all(np.isfinite(ours)) and err <= rtol * scale + atol
    rel = err / scale if scale > 0 else float("inf") if err > 0 else 0.0
    if quiet and ok:
        return True
    print(f"{name:<28} max_abs_err={err:.3e} ref_max={scale:.3e} rel={rel:.1e} "
          f"{'ok' if ok else 'FAIL'}")
    return bool(ok)


def check(model_path, expected_path, quiet=False):
    """Prints one line per tensor (only failures if quiet); returns 0 when everything conforms, 1 otherwise."""
    try:
        exp, _ = tg.load_safetensors(expected_path)
        params, meta = tg.load_safetensors(model_path)
        cfg = tg.config_from_metadata(meta)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: cannot read inputs: {e!r}")
        return 1
    shapes = tg.parameter_shapes(cfg)
    required = {"tokens": None, "targets": None, "logits": None, "loss": (1,)}
    required.update({"grad." + n: s for n, s in shapes.items()})
    problems = [f"missing tensor '{k}' in {expected_path}" for k in required if k not in exp]
    problems += [f"missing parameter '{n}' in {model_path}" for n in shapes if n not in params]
    problems += [f"parameter '{n}': shape {params[n].shape}, expected {s}"
                 for n, s in shapes.items() if n in params and params[n].shape != s]
    if not problems:
        tokens, targets = exp["tokens"], exp["targets"]
        if tokens.ndim != 2:
            problems.append(f"tokens: shape {tokens.shape}, expected (B,T)")
        else:
            B, T = tokens.shape
            V = cfg["vocab_size"]
            required.update({"targets": (B, T), "logits": (B, T, V)})
            if T > cfg["n_positions"]:
                problems.append(f"tokens: T={T} exceeds n_positions={cfg['n_positions']}")
            if tokens.min() < 0 or tokens.max() >= V:
                problems.append(f"tokens outside [0, {V})")
            if np.any((targets < -1) | (targets >= V)):
                problems.append(f"targets outside [-1, {V})")
        problems += [f"'{k}': shape {exp[k].shape}, expected {s}" for k, s in required.items()
                     if s is not None and k in exp and tuple(exp[k].shape) != tuple(s)]
    if problems:
        for p in problems:
            print("error: " + p)
        return 1

    hidden_grads = {int(k.split(".")[1]): v for k, v in exp.items() if k.startswith("hidden_grad.")}
    bad = [l for l, g in hidden_grads.items()
           if not 0 <= l < cfg["n_layer"] or tuple(g.shape) != (B, T, cfg["n_embd"])]
    if bad:
        print(f"error: hidden_grad for layers {bad}: outside the model or not (B,T,C)")
        return 1
    if hidden_grads:
        print(f"with gradients injected at the outputs of blocks {sorted(hidden_grads)}")
    ref_logits, ref_loss, ref_grads, _ = reference(model_path, tokens, targets, hidden_grads)
    ok = compare("logits", exp["logits"], ref_logits, "logits", quiet)
    ok &= compare("loss", exp["loss"], ref_loss, "loss", quiet)
    for n in shapes:
        ok &= compare("grad." + n, exp["grad." + n], ref_grads[n], "grad", quiet)
    print("conformance: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


# ---- self-test: PyTorch float32 plays the part of the C++ implementation ----------------------

def _dump_float32(dirname, cfg, B, T, seed):
    torch.manual_seed(seed)
    model = tg.GPT2(cfg, dtype=torch.float32, seed=seed)
    with torch.no_grad():  # move LayerNorms off (1, 0) so their gradients are exercised
        for n, p in model.named():
            if "ln_" in n:
                p.add_(0.1 * torch.randn_like(p))
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, cfg["vocab_size"], (B, T)).astype(np.int32)
    targets = np.roll(tokens, -1, axis=1)
    targets[:, -1] = -1
    targets[0, : T // 3] = -1  # a run of ignored positions
    logits = model(torch.from_numpy(tokens.astype(np.int64)))
    loss = tg.loss_fn(logits, torch.from_numpy(targets.astype(np.int64)))
    loss.backward()
    expected = {"tokens": tokens, "targets": targets.astype(np.int32),
                "logits": logits.detach().numpy(), "loss": np.array([loss.item()], np.float32)}
    expected.update({"grad." + n: p.grad.numpy() for n, p in model.named()})
    model_path = os.path.join(dirname, "model.safetensors")
    tg.save_safetensors(model_path, model.to_numpy(), model.metadata())
    return model_path, expected


def self_test():
    cfg = dict(tg.PRESETS["slm-tiny"])
    failures = []
    with tempfile.TemporaryDirectory() as d:
        model_path, good = _dump_float32(d, cfg, B=4, T=128, seed=1)
        exp_path = os.path.join(d, "expected.safetensors")

        def run(label, expected, want):
            tg.save_safetensors(exp_path, expected)
            print(f"--- {label} (want exit {want})")
            got = check(model_path, exp_path, quiet=want != 0)
            if got != want:
                failures.append(label)

        run("float32 PyTorch as the implementation", good, 0)
        C = cfg["n_embd"]
        corruptions = {
            "sign of grad.h.1.attn.c_proj.weight": ("grad.h.1.attn.c_proj.weight", lambda g: -g),
            "transposed grad.h.0.attn.c_proj.weight": ("grad.h.0.attn.c_proj.weight", lambda g: g.T),
            "q,k swapped in grad.h.0.attn.c_attn.bias": (
                "grad.h.0.attn.c_attn.bias",
                lambda g: np.concatenate([g[C:2 * C], g[:C], g[2 * C:]])),
            "grad.wte.weight without the head term": ("grad.wte.weight", lambda g: g * 0.5),
            "grad.ln_f.bias off by 1%": ("grad.ln_f.bias", lambda g: g * 1.01),
            "logits of last position shifted": ("logits", lambda x: x + np.eye(x.shape[1])[-1][None, :, None] * 1e-2),
            "loss off by 1e-4 relative": ("loss", lambda x: x * (1 + 1e-4)),
            "transposed grad.h.0.mlp.c_fc.weight (shape)": ("grad.h.0.mlp.c_fc.weight", lambda g: g.T),
        }
        for label, (key, fn) in corruptions.items():
            bad = dict(good)
            bad[key] = np.ascontiguousarray(fn(good[key])).astype(good[key].dtype)
            run(label, bad, 1)
        bad = dict(good)
        del bad["grad.ln_f.weight"]
        run("missing grad.ln_f.weight", bad, 1)

        # The CLI itself: exit code of a passing run.
        tg.save_safetensors(exp_path, good)
        rc = subprocess.run([sys.executable, os.path.abspath(__file__), "--model", model_path,
                             "--expected", exp_path], stdout=subprocess.DEVNULL).returncode
        if rc != 0:
            failures.append(f"CLI exit {rc} on a passing run")
    print("self-test: " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint the C++ side used (safetensors)")
    ap.add_argument("--expected", help="logits, loss and grads dumped by the C++ side")
    ap.add_argument("--self-test", action="store_true", help="check this checker against PyTorch float32")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    if not (args.model and args.expected):
        ap.error("--model and --expected are required (or --self-test)")
    for p in (args.model, args.expected):
        if not os.path.isfile(p):
            print(f"error: no such file: {p}")
            return 1
    return check(args.model, args.expected)


if __name__ == "__main__":
    sys.exit(main())
