"""``fisherprec demo``: print how this installation was built and run one native kernel."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def _run(args: argparse.Namespace) -> int:
    import torch

    import fisherprec
    from fisherprec import ops

    print("fisherprec build info:")
    print(json.dumps(fisherprec.build_info(), indent=2))
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(n, generator=generator) for n in (1, 1000, 1 << 20, 12345)]
    start = time.perf_counter()
    native = float(ops.sum_of_squares(tensors))
    elapsed = time.perf_counter() - start
    reference = float(sum(t.double().square().sum() for t in tensors))
    print(
        f"sum_of_squares over {len(tensors)} tensors ({sum(t.numel() for t in tensors)} elements): "
        f"{native:.6f} (torch float64: {reference:.6f}, {elapsed * 1e3:.2f} ms)"
    )
    return 0 if abs(native - reference) <= 1e-9 * abs(reference) else 1


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="print build information and run a native kernel",
        description="Print how fisherprec was built (compiler, OpenMP, CUDA) and check one "
        "native kernel (sum of squares) against torch in float64.",
    )
    parser.set_defaults(func=_run)
    return parser
