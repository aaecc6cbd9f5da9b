"""The fused Conv-4 block (batch norm, 2x2 max-pool, ReLU: ``metaopt.models.fused``) beside PyTorch's three kernels.

On Conv-4's maps (glyphs 5w1s: a 25-image query pass and a 5-image support pass at 28x28, the query's second block
at 14x14), one CPU thread, in both layouts: the forward pass, forward and backward, and forward, backward and
double backward (what second-order MAML's outer step takes through the support pass), each the median of
interleaved windows — one window of the fused kernel, one of PyTorch's, in turn. Writes
``benchmarks/results/fused_block.json``.

    python benchmarks/fused_block.py [--repeats 30] [--windows 7]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from metaopt.allocator import keep_freed_memory
from metaopt.models.fused import NormPoolReLU, extension

SHAPES = {"query, block 1": (25, 64, 28, 28), "support, block 1": (5, 64, 28, 28), "query, block 2": (25, 64, 14, 14)}
LAYOUTS = {"NCHW": torch.contiguous_format, "channels-last": torch.channels_last}


def passes(block: NormPoolReLU, x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The three workloads on ``block`` (fused or not): forward; forward + backward; + the double backward."""
    grad = torch.randn(x.shape[0], x.shape[1], x.shape[2] // 2, x.shape[3] // 2)
    leaf = x.clone().requires_grad_()
    params = (leaf, block.weight, block.bias)
    cotangents = [torch.randn_like(p) for p in params]

    def forward() -> object:
        with torch.no_grad():
            return block(x)

    def backward() -> object:
        return torch.autograd.grad(block(leaf), params, grad)

    def double() -> object:
        first = torch.autograd.grad(block(leaf), params, grad, create_graph=True)
        return torch.autograd.grad(first, params, cotangents, allow_unused=True)  # the shift: no second derivative

    return {"forward": forward, "forward + backward": backward, "+ double backward": double}


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Milliseconds per call over ``repeats`` calls."""
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="calls per timed window")
    parser.add_argument("--windows", type=int, default=7, help="interleaved windows per row (the median is kept)")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "fused_block.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()
    if extension() is None:
        raise SystemExit("the fused block could not be built here (a C++ compiler and ninja are needed)")
    torch.manual_seed(0)
    fused, native = NormPoolReLU(64), NormPoolReLU(64)
    native.fused = False
    rows = []
    print(f"{'map':<18}{'layout':<15}{'pass':<22}{'fused ms':>10}{'PyTorch ms':>12}{'speed-up':>10}")
    for name, shape in SHAPES.items():
        for layout, memory_format in LAYOUTS.items():
            x = torch.randn(shape).contiguous(memory_format=memory_format)
            ours, theirs = passes(fused, x), passes(native, x)
            for work in ours:
                ours[work](), theirs[work]()  # warm-up (and the kernel's build, once)
                times: dict[str, list[float]] = {"fused": [], "pytorch": []}
                for _ in range(args.windows):
                    times["fused"].append(timed(ours[work], args.repeats))
                    times["pytorch"].append(timed(theirs[work], args.repeats))
                a, b = statistics.median(times["fused"]), statistics.median(times["pytorch"])
                rows.append({"map": name, "shape": list(shape), "layout": layout, "pass": work, "fused_ms": a,
                             "pytorch_ms": b, "speedup": b / a})
                print(f"{name:<18}{layout:<15}{work:<22}{a:>10.2f}{b:>12.2f}{b / a:>9.2f}x", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"torch": torch.__version__, "machine": platform.processor() or
                                           platform.machine(), "threads": 1, "rows": rows}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
