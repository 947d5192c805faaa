"""Time one training step of the built-in architecture in each layout and precision.

The figure behind `models/train_consep.py --precision bf16` (the README and model card): a
batch of 8 random 256² crops, forward + loss + backward + AdamW step, median of `--repeats`
after one warm-up step, for float32 in the default layout, float32 channels_last, and bfloat16
autocast channels_last. bfloat16 pays off only on CPUs with native support (AVX512-BF16, AMX).

    .venv/bin/python scripts/bench_train_step.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "models"))

from train_consep import build_model  # noqa: E402


def step_seconds(channels_last: bool, bf16: bool, repeats: int) -> float:
    torch.manual_seed(0)
    model = build_model("unet", "tu-regnetx_004", 5, [128, 64, 32, 16, 16])
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(8, 3, 256, 256).contiguous(memory_format=fmt)
    y = torch.randint(0, 5, (8, 256, 256))
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = step_seconds(False, False, args.repeats)
    print(f"training step, batch 8 at 256², {args.threads} threads, median of {args.repeats}")
    print(f"  fp32                    {base:.3f} s")
    for name, cl, bf16 in (("fp32 channels_last", True, False), ("bf16 channels_last", True, True)):
        t = step_seconds(cl, bf16, args.repeats)
        print(f"  {name:<23} {t:.3f} s  ({base / t:.2f}x faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
