"""dropin.py: adam_c.torch.Adam against torch.optim.Adam(fused=True) on the same tensors (bench --torch-dropin)."""
import functools
import gc

import numpy as np

from adam_c import _core

from .harness import (BETAS, EPS, FLOOR, LR, Timed, format_time, half_iqr_percent, measure_interleaved,
                      optional_module)

DROPIN_WORKLOADS = ("transformer", "ram", "call")
DROPIN_RAM_SHAPE = (5_000, 4_000)            # 2e7 elements: p, grad, m, v are 320 MB in float32
OVERHEAD_TENSORS = 150


def transformer_shapes(layers=12, width=64, vocab=5_800, context=128):
    """A GPT-like parameter list: embeddings, then per layer LayerNorm, attention and MLP weights and biases;
    148 tensors, 979,328 elements."""
    w = width
    shapes = [(vocab, w), (context, w)]
    for _ in range(layers):
        shapes += [(w,), (w,), (3 * w, w), (3 * w,), (w, w), (w,), (w,), (w,), (4 * w, w), (4 * w,), (w, 4 * w),
                   (w,)]
    return shapes + [(w,), (w,)]


def dropin_shapes(name):
    return {"transformer": transformer_shapes(), "ram": [DROPIN_RAM_SHAPE], "call": [(10_000,)],
            "overhead": [(1,)] * OVERHEAD_TENSORS, "overhead-1": [(1,)]}[name]


class DropinBuffers:
    """Params (nn.Parameter) with grads, stepped by adam_c.torch.Adam and by torch.optim.Adam(fused=True), both
    pointed at the same state tensors; the floor probe runs on NumPy views of the very same memory."""

    def __init__(self, shapes, dtype):
        import torch
        import adam_c.torch as adam_c_torch
        tdtype = getattr(torch, dtype)
        gen = torch.Generator().manual_seed(1)
        self.params = [torch.nn.Parameter(torch.rand(s, generator=gen, dtype=tdtype) - 0.5) for s in shapes]
        for p in self.params:
            p.grad = torch.rand(p.shape, generator=gen, dtype=tdtype) * 9e-3 + 1e-3  # positive: v stays >= 0
        self.n_elements = sum(p.numel() for p in self.params)
        self.ours = adam_c_torch.Adam(self.params, lr=LR, betas=BETAS, eps=EPS)
        self.ours.step()
        self.torch_fused = torch.optim.Adam(self.params, lr=LR, betas=BETAS, eps=EPS, fused=True)
        self.torch_fused.step()
        for p in self.params:
            for key in ("exp_avg", "exp_avg_sq"):
                self.torch_fused.state[p][key] = self.ours.state[p][key]
        state = [self.ours.state[p] for p in self.params]
        n = len(self.params)
        self.floor_plan = _core.StepPlan([p.detach().numpy() for p in self.params],
                                         [s["exp_avg"].numpy() for s in state],
                                         [s["exp_avg_sq"].numpy() for s in state], [None] * n, [n],
                                         np.zeros(n, np.int64))
        self.floor_grads = [p.grad.numpy() for p in self.params]
        self.floor_groups = [{"lr": LR, "betas": BETAS, "eps": EPS, "weight_decay": 0.0, "amsgrad": False,
                              "maximize": False, "decoupled_weight_decay": False}]

    def timed(self, with_floor):
        out = [Timed("adam_c.torch", self.ours.step), Timed("torch fused", self.torch_fused.step)]
        if with_floor:
            out.insert(0, Timed(FLOOR, functools.partial(self.floor_plan.run, self.floor_grads, self.floor_groups,
                                                         True)))
        return out


def part_label(dtype, name):
    return f"drop-in {dtype} {name}"


def parts(dtypes, settings):
    """(label, estimated seconds) of each workload (and the per-tensor overhead), per dtype."""
    setup = {"transformer": 1.0, "ram": 4.0, "call": 0.3, "overhead": 0.5}
    return [(part_label(dtype, name), 1.3 * settings.budget_s + setup[name]) for dtype in dtypes
            for name in DROPIN_WORKLOADS + ("overhead",)]


def run_torch_dropin(dtypes, settings, done=lambda label: None):
    """adam_c.torch.Adam.step() against torch.optim.Adam(fused=True).step() on the same tensors, interleaved:
    a transformer-like list (~1e6 elements in 148 tensors), 2e7 elements (RAM-bound, with the memory floor)
    and one 1e4-element tensor; then adam_c.torch's Python cost per tensor per step (150 one-element tensors
    against one)."""
    if optional_module("torch") is None:
        print("--torch-dropin: torch is not installed")
        return []
    records = []
    for dtype in dtypes:
        for name in DROPIN_WORKLOADS:
            buf = DropinBuffers(dropin_shapes(name), dtype)
            stats = measure_interleaved(buf.timed(with_floor=name == "ram"), settings.min_rounds,
                                        settings.max_rounds, settings.budget_s)
            ours, theirs = stats["adam_c.torch"]["median_ns"], stats["torch fused"]["median_ns"]
            floor = stats.get(FLOOR, {}).get("median_ns")
            print(f"\n{dtype} | {name}: {len(buf.params)} tensors, {buf.n_elements:,} elements")
            for impl, st in stats.items():
                spread = half_iqr_percent(st)
                pct = f", {100.0 * floor / st['median_ns']:.0f}% of floor speed" if floor else ""
                print(f"  {impl:<14} {format_time(st['median_ns']):>10}  (IQR/2 {spread:.1f}%, "
                      f"{st['samples']}x{st['batch']}){pct}")
            print(f"  adam_c.torch / torch fused: {ours / theirs:.3f}" +
                  (f"; adam_c.torch / floor: {ours / floor:.3f}" if floor else ""))
            records.append({"workload": name, "dtype": dtype, "n_tensors": len(buf.params),
                            "n_elements": buf.n_elements, "stats": stats, "adam_c_torch_over_fused": ours / theirs,
                            "adam_c_torch_over_floor": ours / floor if floor else None})
            del buf
            gc.collect()
            done(part_label(dtype, name))
        many, one = DropinBuffers(dropin_shapes("overhead"), dtype), DropinBuffers(dropin_shapes("overhead-1"),
                                                                                      dtype)
        timed = [Timed("150 tensors", many.ours.step), Timed("1 tensor", one.ours.step),
                 Timed("torch fused 150", many.torch_fused.step)]
        stats = measure_interleaved(timed, settings.min_rounds, settings.max_rounds, settings.budget_s)
        per_tensor = (stats["150 tensors"]["median_ns"] - stats["1 tensor"]["median_ns"]) / (OVERHEAD_TENSORS - 1)
        fused_per_tensor = stats["torch fused 150"]["median_ns"] / OVERHEAD_TENSORS
        print(f"\n{dtype} | Python overhead of adam_c.torch: {per_tensor:.0f} ns per tensor per step\n"
              f"  (a step of 1 tiny tensor: {format_time(stats['1 tensor']['median_ns'])}); torch fused: "
              f"{fused_per_tensor:.0f} ns per tensor (all included)")
        done(part_label(dtype, "overhead"))
        records.append({"workload": "overhead", "dtype": dtype, "stats": stats, "ns_per_tensor": per_tensor,
                        "torch_fused_ns_per_tensor": fused_per_tensor})
    return records


