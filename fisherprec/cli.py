"""The ``fisherprec`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    import fisherprec

    parser = argparse.ArgumentParser(
        prog="fisherprec", description="Fisher preconditioning for PyTorch."
    )
    parser.add_argument(
        "--version", action="version", version=f"fisherprec {fisherprec.__version__}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="print build information and run a native kernel")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
