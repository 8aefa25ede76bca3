"""One gloo rank for test_torch_dropin_distributed: DDP + adam_c.torch, and ZeroRedundancyOptimizer(adam_c.torch.AdamW)."""
import datetime
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel

import adam_c.torch as at

STEPS, ROWS, LR, WEIGHT_DECAY = 8, 8, 1e-2, 0.01


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 5), nn.Tanh(), nn.Linear(5, 1)).double()


def param_groups(model):
    """Three groups; the last two hold one param each, so ZeRO leaves one rank an empty group."""
    return [{"params": list(model[0].parameters()) + list(model[2].parameters())},
            {"params": [model[4].weight], "lr": 3e-3},
            {"params": [model[4].bias], "weight_decay": 0.0}]


def batch(step):
    gen = torch.Generator().manual_seed(step)
    return torch.randn(ROWS, 6, generator=gen, dtype=torch.float64), torch.randn(ROWS, 1, generator=gen,
                                                                                 dtype=torch.float64)


def train(model, opt, step_rows):
    """step_rows(x, y) -> this process's rows; the loss is a mean, so DDP's averaged grads equal the full
    batch's when the shards have equal sizes."""
    for step in range(STEPS):
        x, y = step_rows(*batch(step))
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def main(rank, world, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    shard = lambda x, y: (x[rank::world], y[rank::world])  # noqa: E731
    result = {}

    model = make_model()
    ddp = DistributedDataParallel(model)
    train(ddp, at.AdamW(param_groups(model), lr=LR, weight_decay=WEIGHT_DECAY), shard)
    result["ddp"] = [p.detach().clone() for p in model.parameters()]

    for name, bucket_view in (("zero", False), ("zero-bucket-view", True)):
        model = make_model()
        ddp = DistributedDataParallel(model)
        zero = ZeroRedundancyOptimizer(param_groups(model), optimizer_class=at.AdamW, lr=LR,
                                       weight_decay=WEIGHT_DECAY, parameters_as_bucket_view=bucket_view)
        assert isinstance(zero.optim, at.AdamW)
        train(ddp, zero, shard)
        result[name] = [p.detach().clone() for p in model.parameters()]
        result[name + "-local-group-sizes"] = [len(g["params"]) for g in zero.optim.param_groups]
        zero.consolidate_state_dict(to=0)
        if rank == 0:
            result[name + "-state-dict"] = zero.state_dict()
    torch.save(result, f"{out}.{rank}")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
