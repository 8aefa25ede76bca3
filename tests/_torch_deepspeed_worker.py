"""One gloo rank for test_torch_deepspeed: DeepSpeed ZeRO stage 1/2 (CPU accelerator) with a client optimizer.

usage: python _torch_deepspeed_worker.py RANK WORLD PORT OUTDIR   (writes OUTDIR/STAGE.KIND.RANK.pt)
"""
import os
import sys

os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before deepspeed is imported

import deepspeed  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import adam_c.torch as at  # noqa: E402

STEPS = 5


def train(stage, cls):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(7, 33), torch.nn.Tanh(), torch.nn.Linear(33, 3))
    opt = cls(model.parameters(), lr=1e-2, weight_decay=0.01)
    config = {"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 1,
              "zero_optimization": {"stage": stage}, "zero_allow_untested_optimizer": True,
              "zero_force_ds_cpu_optimizer": False}
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=config)
    for step in range(STEPS):
        gen = torch.Generator().manual_seed(100 * step + dist.get_rank())  # each rank its own rows
        x, y = torch.randn(8, 7, generator=gen), torch.randn(8, 3, generator=gen)
        engine.backward(torch.nn.functional.mse_loss(engine(x), y))
        engine.step()
    return [p.detach().clone() for p in model.parameters()]


def main():
    rank, world, port, outdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    deepspeed.init_distributed(dist_backend="gloo")
    for stage in (1, 2):
        for kind, cls in (("adam_c", at.AdamW), ("torch", torch.optim.AdamW)):
            torch.save(train(stage, cls), os.path.join(outdir, f"{stage}.{kind}.{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
