"""Train a small regression MLP with a fisherprec optimizer under DDP or FSDP2.

    torchrun --nproc-per-node 2 examples/distributed_train.py --wrap ddp --optimizer kron
    torchrun --nproc-per-node 2 examples/distributed_train.py --wrap fsdp2 --optimizer lowrank

On CPUs it uses gloo; with one GPU per process, nccl. Each rank draws its own
batches (data parallelism). Under DDP, BlockFisher and KronFisher split their
refreshes across the ranks (``process_group=``); under FSDP2 every optimizer
steps its rank's shards. Rank 0 prints the mean loss over the ranks as it goes
(docs/distributed.md; tests/test_examples.py runs this script).
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import fisherprec as fp

SPLITS_REFRESHES = ("block", "kron")  # the optimizers that take process_group=


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wrap", choices=("ddp", "fsdp2"), default="ddp")
    parser.add_argument("--optimizer", default="kron", choices=list(fp.optim.registry.REGISTRY))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = (
        torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    )

    torch.manual_seed(0)  # the same initial weights on every rank
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.Linear(64, 64), torch.nn.GELU(),
        torch.nn.Linear(64, 1),
    ).to(device)  # fmt: skip
    extra = {}
    if args.wrap == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model)
        if args.optimizer in SPLITS_REFRESHES:
            extra["process_group"] = dist.group.WORLD
    else:
        mesh = init_device_mesh(device.type, (world,))
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    opt = fp.optim.registry.build(args.optimizer, model.parameters(), lr=args.lr, **extra)

    generator = torch.Generator().manual_seed(1000 + rank)  # each rank its own batches
    teacher = torch.Generator().manual_seed(7)
    w = torch.randn(16, 1, generator=teacher)
    for step in range(1, args.steps + 1):
        x = torch.randn(64, 16, generator=generator)
        y = torch.tanh(x @ w) + 0.1 * x[:, :1] * x[:, 1:2]
        loss = torch.nn.functional.mse_loss(model(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step == 1 or step % 10 == 0 or step == args.steps:
            mean = loss.detach().clone()
            dist.all_reduce(mean)
            if rank == 0:
                print(f"step {step}: loss {mean.item() / world:.4f}", flush=True)
    if rank == 0:
        print(f"{args.optimizer} under {args.wrap} on {world} ranks: done", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
