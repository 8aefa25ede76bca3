"""One gloo rank for test_torch_fsdp: FSDP2 (DTensor params) with adam_c.torch and torch.optim, clipping and DCP.

usage: python _torch_fsdp_worker.py RANK WORLD PORT OUTDIR SCENARIO...   (writes OUTDIR/SCENARIO.RANK.pt)
"""
import datetime
import os
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

import adam_c.torch as at

LR, WEIGHT_DECAY, MAX_NORM = 1e-2, 0.01, 0.05


def make_model(mesh, dtype=torch.float32, **shard_options):
    """A 3-layer MLP, each Linear and the root sharded (FSDP2's usual wrapping); odd sizes make uneven shards."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 33), nn.Tanh(), nn.Linear(33, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh, **shard_options)
    fully_shard(model, mesh=mesh, **shard_options)
    return model


def batch(step, dtype=torch.float32):
    """The same rows on every rank: FSDP2 averages equal grads, so any number of ranks trains the same model."""
    gen = torch.Generator().manual_seed(step)
    return torch.randn(16, 7, generator=gen).to(dtype), torch.randn(16, 3, generator=gen).to(dtype)


def train(model, opt, steps, first=0, clip=None, dtype=torch.float32):
    """Returns the grad norm of each step where it clips (torch's clip_grad_norm_, or adam_c's fused clipping)."""
    norms = []
    for step in range(first, first + steps):
        x, y = batch(step, dtype)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        if clip == "torch":
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM).full_tensor()))
        if clip == "fused":
            opt.step(max_grad_norm=MAX_NORM)
            norms.append(opt.last_grad_norm)
        else:
            opt.step()
    return norms


def full_params(model):
    return [p.full_tensor().detach().clone() for p in model.parameters()]


def optimizer(kind, model):
    cls = at.AdamW if kind == "adam_c" else torch.optim.AdamW
    return cls(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)


def scenario(name, mesh, outdir):
    """name -> {label: full params}, compared by the test."""
    out = {}
    if name in ("plain", "clip", "fused_clip", "offload"):
        options = {"offload_policy": CPUOffloadPolicy(pin_memory=False)} if name == "offload" else {}
        for kind in ("adam_c", "torch"):
            model = make_model(mesh, **options)
            opt = optimizer(kind, model)
            clip = {"clip": "torch", "fused_clip": "fused" if kind == "adam_c" else "torch"}.get(name)
            out[kind + "_norms"] = train(model, opt, 5, clip=clip)
            out[kind] = full_params(model)
            out[kind + "_state_types"] = sorted({type(v).__name__ for s in opt.state.values() for v in s.values()})
    elif name == "dcp_save":  # 5 steps straight; 3 steps, a DCP checkpoint, a fresh model and optimizer, 2 steps
        model = make_model(mesh)
        opt = optimizer("adam_c", model)
        train(model, opt, 5)
        out["straight"] = full_params(model)
        model = make_model(mesh)
        opt = optimizer("adam_c", model)
        train(model, opt, 3)
        msd, osd = get_state_dict(model, opt)
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=os.path.join(outdir, "ckpt"))
        out["resumed"] = resume(mesh, outdir)
    elif name == "dcp_master":  # bfloat16 params with float32 masters and an EMA (all DTensors) through DCP
        bf16 = torch.bfloat16
        options = {"lr": LR, "master_weights": True, "ema_decay": 0.9}
        model = make_model(mesh, bf16)
        opt = at.AdamW(model.parameters(), **options)
        train(model, opt, 5, dtype=bf16)
        out["straight"] = full_params(model)
        model = make_model(mesh, bf16)
        opt = at.AdamW(model.parameters(), **options)
        train(model, opt, 3, dtype=bf16)
        out["state_types"] = {k: type(v).__name__ for s in opt.state.values() for k, v in s.items()}
        msd, osd = get_state_dict(model, opt)
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=os.path.join(outdir, "ckpt_master"))
        model = make_model(mesh, bf16)
        opt = at.AdamW(model.parameters(), **options)
        msd, osd = get_state_dict(model, opt)
        loaded = {"model": msd, "optim": osd}
        dcp.load(loaded, checkpoint_id=os.path.join(outdir, "ckpt_master"))
        set_state_dict(model, opt, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"])
        train(model, opt, 2, first=3, dtype=bf16)
        out["resumed"] = full_params(model)
    elif name == "rank_local":  # a step that ends early on one rank only, with fused clipping
        out = rank_local(mesh)
    elif name == "errors":  # what adam_c.torch refuses, each with the message the test checks
        out = refusals(mesh)
    elif name == "dcp_load":  # the checkpoint saved by another number of ranks (resharded), 2 more steps
        out["resumed"] = resume(mesh, outdir)
    else:
        raise ValueError(name)
    return out


def refusals(mesh):
    """{case: (exception type name, message, whether the params stayed as they were)}."""
    from torch.distributed.tensor import DTensor, Partial, Replicate

    def attempt(case, make_and_step, params):
        before = [p.detach().clone() for p in params]
        try:
            make_and_step()
        except Exception as e:  # noqa: BLE001 - the test checks the type
            out[case] = (type(e).__name__, str(e), all(torch.equal(a, b.detach()) for a, b in zip(before, params)))
        else:
            out[case] = ("no error", "", True)

    out = {}
    partial = nn.Parameter(DTensor.from_local(torch.randn(4), mesh, [Partial()]))
    attempt("partial", lambda: at.AdamW([partial]), [])
    model = make_model(mesh)
    plain = nn.Parameter(torch.randn(3))

    def mixed_clip():
        opt = at.AdamW(list(model.parameters()) + [plain], lr=LR)
        x, y = batch(0)
        nn.functional.mse_loss(model(x), y).backward()
        plain.grad = torch.ones(3)
        opt.step(max_grad_norm=MAX_NORM)
    attempt("mixed_clip", mixed_clip, list(model.parameters()) + [plain])

    opt = at.AdamW(model.parameters(), lr=LR)
    train(model, opt, 1)
    first = next(iter(model.parameters()))
    opt.state[first]["exp_avg"] = DTensor.from_local(torch.zeros(1), mesh, first.placements, shape=first.shape,
                                                     stride=first.stride(), run_check=False)
    attempt("small_local_shard", lambda: train(model, opt, 1), list(model.parameters()))

    def compressed():
        opt = at.AdamW(model.parameters(), lr=LR, state_dtype="bfloat16")
        opt.step()
    attempt("compressed", compressed, list(model.parameters()))

    def dtensor_grad_of_plain_param():
        opt = at.AdamW([plain], lr=LR)
        plain.grad = torch.ones(3)
        opt.step()
        plain.grad = DTensor.from_local(torch.ones(3), mesh, [Replicate()])
        opt.step()
    attempt("dtensor_grad_of_plain_param", dtensor_grad_of_plain_param, [])

    # a step counter given as a (Replicate) DTensor is read as the plain tensor torch.optim keeps
    opt = at.AdamW(model.parameters(), lr=LR)
    train(model, opt, 1)
    opt.state[first]["step"] = DTensor.from_local(torch.tensor(1.0), mesh, [Replicate()])
    train(model, opt, 1)
    out["dtensor_step"] = (type(opt.state[first]["step"]).__name__, float(opt.state[first]["step"]))
    return out


def rank_local(mesh):
    """{case: (last_step_skipped, params unchanged, this rank's error or None)} for fused clipping steps that end
    early on rank 1 only (its found_inf; a refusal in Python before the C call), on a fresh optimizer and one that
    has stepped; and state_bytes (this rank's shards)."""
    rank = dist.get_rank()
    out = {}

    def attempt(case, opt, model, found_inf=None):
        x, y = batch(7)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        before = full_params(model)
        error = None
        try:
            opt.step(max_grad_norm=MAX_NORM, found_inf=found_inf)
        except ValueError as e:
            error = str(e)
        out[case] = (opt.last_step_skipped, all(torch.equal(a, b) for a, b in zip(before, full_params(model))),
                     error)

    model = make_model(mesh)
    opt = optimizer("adam_c", model)
    attempt("found_inf_first_step", opt, model, torch.tensor(float(rank == 1)))
    out["state_after_skipped_first_step"] = len(opt.state)
    train(model, opt, 2, clip="fused")
    attempt("found_inf", opt, model, torch.tensor(float(rank == 1)))
    if rank == 1:  # refused by the plan before its C call: a step count past the largest one
        first = next(iter(model.parameters()))
        saved = opt.state[first]["step"].clone()
        opt.state[first]["step"].fill_(2.0 ** 62)
    attempt("refused", opt, model)
    if rank == 1:
        opt.state[first]["step"].copy_(saved)
    # a param list edited in place (the plan is out of date) with a param fused clipping refuses (another
    # placement), while rank 0 has its own found_inf: neither reduces, and once the list is as it was, both step
    from torch.distributed.tensor import DTensor, Replicate
    extra = nn.Parameter(DTensor.from_local(torch.zeros(4), mesh, [Replicate()]))
    opt.param_groups[0]["params"].append(extra)
    attempt("stale_plan", opt, model, torch.tensor(float(rank == 0)))
    opt.param_groups[0]["params"].pop()
    train(model, opt, 1, clip="fused")  # both ranks step on together afterwards
    out["norm_after"] = opt.last_grad_norm
    out["steps"] = sorted({int(s["step"]) for s in opt.state.values() if s})
    out["state_bytes"] = opt.state_bytes()
    out["local_numel"] = sum(p.to_local().numel() for p in model.parameters())
    return out


def resume(mesh, outdir):
    model = make_model(mesh)
    opt = optimizer("adam_c", model)
    msd, osd = get_state_dict(model, opt)   # initialises the empty state (a step with zero grads, lr 0)
    before = full_params(model)
    loaded = {"model": msd, "optim": osd}
    dcp.load(loaded, checkpoint_id=os.path.join(outdir, "ckpt"))
    set_state_dict(model, opt, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"])
    assert all(torch.equal(a, b) for a, b in zip(before, full_params(make_model(mesh)))), \
        "get_state_dict's state initialisation moved a param"
    train(model, opt, 2, first=3)
    return full_params(model)


def main():
    rank, world, port, outdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    mesh = init_device_mesh("cpu", (world,))
    for name in sys.argv[5:]:
        result = scenario(name, mesh, outdir)
        torch.save(result, os.path.join(outdir, f"{name}.{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
