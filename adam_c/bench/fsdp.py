"""fsdp.py: the optimizer step under FSDP2 (DTensor shards), adam_c.torch against torch's AdamW (foreach, fused).

Run on N ranks: `torchrun --nproc-per-node=2 -m adam_c.bench.fsdp [--width 512] [--rounds 15]`. Each variant
trains its own FSDP2 copy of the same MLP (each Linear and the root sharded: many small local shards); every
round runs one training iteration per variant in a random order (the same on every rank), timing `opt.step()`
alone between barriers. Rank 0 prints the medians, the spread over rounds and each ratio to torch's fused AdamW
and to the memory floor: adam_c's memory probe (the float32 step's 28 bytes per element moved, no Adam math) over
as many elements as a rank's shards, run by every rank at once between the same barriers, in the same rounds.
"""
import argparse
import random
import statistics
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import adam_c.torch as at

DEPTH, BATCH = 4, 16


def _model(width, mesh):
    torch.manual_seed(0)
    layers = []
    for _ in range(DEPTH):
        layers += [torch.nn.Linear(width, width), torch.nn.GELU()]
    model = torch.nn.Sequential(*layers[:-1])
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


VARIANTS = {
    "adam_c": lambda params: at.AdamW(params, lr=1e-4),
    "torch foreach": lambda params: torch.optim.AdamW(params, lr=1e-4, foreach=True),
    "torch fused": lambda params: torch.optim.AdamW(params, lr=1e-4, fused=True),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=512, help="MLP width (about 4 * width**2 params in all)")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args(argv)
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    runs = {}
    for name, make in VARIANTS.items():
        model = _model(args.width, mesh)
        runs[name] = (model, make(model.parameters()))
    x = torch.randn(BATCH, args.width)
    local = sum(p.to_local().numel() for p in runs["adam_c"][0].parameters())
    floor = _floor_probe(local)
    times = {name: [] for name in runs}
    times["memory floor"] = []
    order = list(times)
    rng = random.Random(0)  # the same order on every rank
    for r in range(args.rounds + 2):  # 2 warm-up rounds
        rng.shuffle(order)
        for name in order:
            if name == "memory floor":
                step = floor
            else:
                model, opt = runs[name]
                opt.zero_grad()
                model(x).square().mean().backward()
                step = opt.step
            dist.barrier()
            start = time.perf_counter()
            step()
            dist.barrier()
            if r >= 2:
                times[name].append(time.perf_counter() - start)
    if dist.get_rank() == 0:
        world = dist.get_world_size()
        print(f"FSDP2 on {world} ranks, {local} params per rank, torch {torch.__version__}, {args.rounds} rounds "
              "(step between barriers, ms: median [min-max], ratio to torch fused, to the memory floor)")
        fused, at_floor = statistics.median(times["torch fused"]), statistics.median(times["memory floor"])
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"  {name:14s} {med * 1e3:8.3f} [{min(ts) * 1e3:.3f}-{max(ts) * 1e3:.3f}]  {med / fused:.2f}x "
                  f"fused  {med / at_floor:.2f}x floor")
        print(f"  the floor moved {28 * local * world / at_floor / 1e9:.1f} GB/s over all ranks")
    dist.destroy_process_group()


def _floor_probe(n):
    """A call running adam_c's memory probe over n float32 elements (threads as adam_c's step would use)."""
    import adam_c

    p, g = np.zeros(n, np.float32), np.full(n, 1e-3, np.float32)
    opt = adam_c.Adam([p])
    opt.step([g])  # builds the plan the probe runs
    plan, groups = opt._plan, opt.param_groups
    return lambda: plan.run([g], groups, True)


if __name__ == "__main__":
    main()
