"""torchloop.py: the step inside a real torch training loop, adam_c.torch against torch's fused AdamW (--workloads torchloop).

Each variant trains its own copy of the same MLP (Linear+GELU layers, batch 16): `zero_grad(); loss.backward();
opt.step()`, timed separately as "iteration" (zero_grad + forward + backward + step) and "step". The variants take
turns in a random order each round, so load changes reach all of them alike; medians and the spread over rounds.
Then the interleaved in-cache case: 1e6 float32 elements in one tensor each, adam_c.torch's step, torch fused's
and adam_c's memory probe (the same 28 bytes per element, no math) in a random order step after step.
"""
import argparse
import random
import statistics
import sys
import time

import numpy as np

import adam_c

SIZES = {"0.27M": 256, "4.2M": 1024, "16.8M": 2048}  # MLP width: 4 square layers, ~4 * width**2 params
DEPTH = 4
BATCH = 16


def _model(torch, width, seed):
    torch.manual_seed(seed)
    layers = []
    for _ in range(DEPTH):
        layers += [torch.nn.Linear(width, width), torch.nn.GELU()]
    return torch.nn.Sequential(*layers[:-1])


def _variants(torch, executors):
    import adam_c.torch as at

    out = {"torch fused": lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True)}
    for name in executors:
        out[f"adam_c ({name})"] = (lambda ps, name=name: (adam_c.set_executor(name), at.AdamW(ps, lr=1e-3))[1])
    return out


def memory_floor_ns(n_elements, repeats=7):
    """The step's floor in ns: adam_c's memory probe (the float32 step's 28 bytes per element moved, no Adam math)
    over n_elements, with threads, median of `repeats`; and the bandwidth it reached (bytes per ns = GB/s)."""
    from adam_c import _core

    p = np.zeros(n_elements, np.float32)
    g = np.full(n_elements, 1e-3, np.float32)
    opt = adam_c.Adam([p])
    opt.step([g])  # builds the plan the probe runs
    saved = _core.get_autotune()
    adam_c.set_threading("fixed")
    try:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            opt._plan.run([g], opt.param_groups, True)
            times.append(time.perf_counter_ns() - t0)
    finally:
        _core.set_autotune(saved)
    floor = statistics.median(times)
    return floor, 28 * n_elements / floor


def part_label(size):
    return f"torchloop {size} params"


# seconds per round and variant at each size (training iterations dominate), for the progress estimate
_ROUND_S = {"0.27M": 0.1, "4.2M": 1.0, "16.8M": 4.0}


INTERLEAVED_LABEL = "torchloop interleaved 1e6"
INTERLEAVED_N = 1_000_000


def parts(settings):
    """(label, estimated seconds) of each model size, and of the interleaved case."""
    rounds = 3 if settings.quick else 7
    return ([(part_label(size), 3 * (rounds + 1) * _ROUND_S[size] + 1.0) for size in SIZES]
            + [(INTERLEAVED_LABEL, 1.0 if settings.quick else 2.5)])


def interleaved(steps=600, n=INTERLEAVED_N, out=None):
    """adam_c.torch.AdamW (default executor), torch.optim.AdamW(fused=True), each on its own n-element tensor,
    and adam_c's memory probe over n elements, in a random order each step (each evicts the others' data from
    the cache, as steps between training iterations would); medians in ns per element."""
    import torch

    import adam_c.torch as at

    out = sys.stdout if out is None else out
    torch.manual_seed(0)
    pa, pt = torch.nn.Parameter(torch.randn(n)), torch.nn.Parameter(torch.randn(n))
    pa.grad, pt.grad = torch.randn(n), torch.randn(n)
    ours, fused = at.AdamW([pa], lr=1e-4), torch.optim.AdamW([pt], lr=1e-4, fused=True)
    p, g = np.zeros(n, np.float32), np.full(n, 1e-3, np.float32)
    probe = adam_c.Adam([p])
    probe.step([g])  # builds the plan the probe runs
    calls = {"adam_c": ours.step, "torch fused": fused.step,
             "memory floor": lambda: probe._plan.run([g], probe.param_groups, True)}
    times = {name: [] for name in calls}
    rng = random.Random(0)
    for r in range(steps + 20):  # 20 warm-up steps each
        for name in rng.sample(list(calls), len(calls)):
            t0 = time.perf_counter_ns()
            calls[name]()
            if r >= 20:
                times[name].append(time.perf_counter_ns() - t0)
    per_el = {name: statistics.median(ts) / n for name, ts in times.items()}
    print(f"\ninterleaved in cache: {n:,} float32 each, {steps} steps each in random order, "
          f"{torch.get_num_threads()} torch / {adam_c.get_num_threads()} adam_c threads", file=out)
    for name, value in per_el.items():
        print(f"{name:<18} {value:8.3f} ns/element  {value / per_el['torch fused']:6.2f} x fused  "
              f"{value / per_el['memory floor']:6.2f} x floor", file=out)
    return {"n": n, "ns_per_element": per_el}


def run_torchloop(settings, done=lambda label: None):
    """Every size, with 3 rounds (quick) or 7; returns the results by size (also printed)."""
    rounds = 3 if settings.quick else 7
    results = {}
    for size in SIZES:
        results.update(run((size,), rounds=rounds))
        done(part_label(size))
    results["interleaved"] = interleaved(200 if settings.quick else 600)
    done(INTERLEAVED_LABEL)
    return results


def run(sizes=("0.27M", "4.2M", "16.8M"), rounds=7, iters=20, executors=("auto", "pool"), seed=0, out=sys.stdout):
    """adam_c.torch.AdamW with each executor ("auto": torch's OpenMP team when torch loaded one; "pool": adam_c's
    own threads) and torch.optim.AdamW(fused=True), each training its own copy of the model."""
    import torch

    results = {}
    for size in sizes:
        width = SIZES[size]
        variants = _variants(torch, executors)
        models = {name: _model(torch, width, seed) for name in variants}
        opts = {name: make(list(models[name].parameters())) for name, make in variants.items()}
        x = torch.randn(BATCH, width)
        y = torch.randn(BATCH, width)
        n = sum(p.numel() for p in models["torch fused"].parameters())
        step_t = {name: [] for name in variants}
        iter_t = {name: [] for name in variants}
        order = list(variants)
        rng = random.Random(seed)
        for r in range(rounds + 1):  # round 0 warms up (state allocation, the autotune's first samples)
            rng.shuffle(order)
            for name in order:
                if name.startswith("adam_c"):
                    adam_c.set_executor(name[len("adam_c ("):-1])
                model, opt = models[name], opts[name]
                steps, whole = [], []
                for _ in range(iters):
                    t0 = time.perf_counter_ns()
                    opt.zero_grad()
                    loss = torch.nn.functional.mse_loss(model(x), y)
                    loss.backward()
                    t1 = time.perf_counter_ns()
                    opt.step()
                    t2 = time.perf_counter_ns()
                    steps.append(t2 - t1)
                    whole.append(t2 - t0)
                if r:
                    step_t[name].append(statistics.median(steps))
                    iter_t[name].append(statistics.median(whole))
        adam_c.set_executor("auto")
        floor, bw = memory_floor_ns(n)
        results[size] = {"params": n, "floor_us": floor / 1e3, "bandwidth_GBs": bw,
                         "torch_threads": torch.get_num_threads(), "adam_c_threads": adam_c.get_num_threads(),
                         "step_us": {k: [t / 1e3 for t in v] for k, v in step_t.items()},
                         "iter_us": {k: [t / 1e3 for t in v] for k, v in iter_t.items()}}
        _print_size(size, results[size], out)
    return results


def _spread(values):
    return f"{statistics.median(values):8.1f} [{min(values):.0f}-{max(values):.0f}]"


def _print_size(size, res, out):
    ref_step = statistics.median(res["step_us"]["torch fused"])
    ref_iter = statistics.median(res["iter_us"]["torch fused"])
    print(f"\ntorch training loop, {size} params ({res['params']:,}), {res['torch_threads']} torch threads, "
          f"adam_c {res['adam_c_threads']} threads; memory floor {res['floor_us']:.0f} us at "
          f"{res['bandwidth_GBs']:.0f} GB/s", file=out)
    print(f"{'variant':<18} {'step us (median [min-max])':>28} {'x fused':>8} {'iteration us':>26} {'x fused':>8}",
          file=out)
    for name in res["step_us"]:
        s, i = res["step_us"][name], res["iter_us"][name]
        print(f"{name:<18} {_spread(s):>28} {statistics.median(s) / ref_step:8.2f} {_spread(i):>26} "
              f"{statistics.median(i) / ref_iter:8.2f}", file=out)


