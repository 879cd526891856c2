#!/usr/bin/python3
"""PyTorch reference for `tandem bench train`: one full float32 training step of the same GPT-2
(forward, masked mean cross-entropy, backward, grad-norm clip 1.0, AdamW lr 3e-4 wd 0.1) on
random byte tokens, context 128. Prints exactly one line: tokens_per_s=<B*T*steps / seconds>.

Run with Debian's /usr/bin/python3 (python3-torch). Thread/BLAS environment variables
(OPENBLAS_NUM_THREADS, OMP_WAIT_POLICY) are the caller's; see bench/train_vs_torch.sh.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "models"))
import torch_gpt2 as tg  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="slm-tiny", choices=sorted(tg.PRESETS))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave default)")
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--no-foreach", action="store_true", help="per-tensor AdamW instead of foreach")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    cfg = dict(tg.PRESETS[args.preset], n_positions=args.context)
    model = tg.GPT2(cfg, dtype=torch.float32, seed=0)
    params = [p for _, p in model.named()]
    opt = torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1,
                            foreach=not args.no_foreach)
    g = torch.Generator().manual_seed(0)
    B, T, V = args.batch, args.context, cfg["vocab_size"]
    # A few distinct batches, drawn before timing, so data generation is not measured.
    batches = [torch.randint(0, V, (B, T + 1), generator=g) for _ in range(4)]

    def step(i):
        data = batches[i % len(batches)]
        logits = model(data[:, :-1])
        loss = tg.loss_fn(logits, data[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss

    for i in range(args.warmup):
        step(i)
    start = time.perf_counter()
    for i in range(args.steps):
        loss = step(i)
    loss.item()
    elapsed = time.perf_counter() - start
    print(f"tokens_per_s={B * T * args.steps / elapsed:.1f}")


if __name__ == "__main__":
    main()
