"""A pruned child against its parent and against PyTorch.

1. The cut: the alignment map in the child's metadata is decoded here, independently of tandem's
   C++ (runs -> index sets -> per-tensor slices of the parent, following docs/pruning.md), and every
   child tensor must equal its parent slice exactly.
2. The child is an ordinary model: tests/models/conformance.py recomputes its logits, loss and
   every gradient with the PyTorch GPT-2 of torch_gpt2.py (non-uniform blocks included).

Usage: pruned_conformance.py --parent P --model CHILD --expected EXPECTED
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
import conformance  # noqa: E402
import torch_gpt2 as tg  # noqa: E402


def runs_to_index(runs):
    return np.array([i for b, e in runs for i in range(b, e)], dtype=np.int64)


def check_cut(parent_path, child_path):
    parent, _ = tg.load_safetensors(parent_path)
    child, meta = tg.load_safetensors(child_path)
    m = json.loads(meta["tandem_alignment"])
    assert m["format"] == "tandem-alignment" and m["version"] == 1
    p = m["parent"]
    hd = p["d_head"]
    ch = runs_to_index(m["channels"])
    vocab, ctx = np.arange(p["vocab"]), np.arange(p["context"])
    expected = {"wte.weight": ("wte.weight", (vocab, ch)), "wpe.weight": ("wpe.weight", (ctx, ch)),
                "ln_f.weight": ("ln_f.weight", (ch,)), "ln_f.bias": ("ln_f.bias", (ch,))}
    for l, pl in enumerate(m["layers"]):
        a = p["layer_n_head"][pl] * hd
        heads = runs_to_index(m["heads"][l])
        head_cols = (heads[:, None] * hd + np.arange(hd)[None, :]).reshape(-1)
        qkv_cols = np.concatenate([part * a + head_cols for part in range(3)])
        nr = runs_to_index(m["neurons"][l])
        for name, index in {
                "ln_1.weight": (ch,), "ln_1.bias": (ch,), "ln_2.weight": (ch,), "ln_2.bias": (ch,),
                "attn.c_attn.weight": (ch, qkv_cols), "attn.c_attn.bias": (qkv_cols,),
                "attn.c_proj.weight": (head_cols, ch), "attn.c_proj.bias": (ch,),
                "mlp.c_fc.weight": (ch, nr), "mlp.c_fc.bias": (nr,),
                "mlp.c_proj.weight": (nr, ch), "mlp.c_proj.bias": (ch,)}.items():
            expected[f"h.{l}.{name}"] = (f"h.{pl}.{name}", index)
    ok = set(expected) == set(child)
    if not ok:
        print(f"cut: child tensors {sorted(set(child) ^ set(expected))} do not match the map")
    for name, (pname, index) in sorted(expected.items()):
        want = parent[pname][np.ix_(*index)] if len(index) > 1 else parent[pname][index[0]]
        if name not in child or child[name].shape != want.shape or not np.array_equal(child[name], want):
            print(f"cut: {name} is not {pname}{[len(i) for i in index]} of the parent")
            ok = False
    print(f"cut: {len(expected)} tensors, kept parent blocks {m['layers']}, "
          f"{len(ch)}/{p['d_model']} channels: " + ("PASS" if ok else "FAIL"))
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parent", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--expected", required=True)
    args = ap.parse_args()
    ok = check_cut(args.parent, args.model)
    rc = conformance.check(args.model, args.expected)
    return 0 if ok and rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
