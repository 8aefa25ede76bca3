"""compressed.py: the step with compressed state (bfloat16, int8) against fp32 state and each one's memory floor.

Run through `python -m adam_c.bench --workloads compressed` (or `python -m adam_c.bench.compressed`): one RAM-bound
float32 tensor (6.4e7 elements), three optimizers on the same params and grads (float32, bfloat16 and int8 state),
each timed interleaved with the memory probe of its own layout (the same bytes, no math). Prints ns/element,
bytes/element, % of its floor and the ratio to the fp32-state step (targets: int8 <= 0.62x, bf16 <= 0.75x).
"""
import functools
import gc
import sys

import numpy as np

import adam_c

from .harness import BETAS, EPS, LR, Settings, Timed, fit, measure_interleaved, wrap
from .step import RAM_ELEMENTS

LAYOUTS = ("float32", "bfloat16", "int8")
TARGET_RATIO = {"bfloat16": 0.75, "int8": 0.62}


def state_bytes_per_element(layout):
    """Bytes a step moves per element: p and g read (4 + 4), p written (4), m and v read and written; int8 adds
    its block scales (4 bytes per 256 elements, read and written, for m and v)."""
    per = {"float32": 4, "bfloat16": 2, "int8": 1}[layout]
    scales = 2 * 2 * 4 / 256 if layout == "int8" else 0.0
    return 12 + 4 * per + scales


def bitsandbytes_status():
    """Why bitsandbytes' 8-bit Adam is not in the table (or None if it could be)."""
    try:
        import bitsandbytes  # type: ignore[import-untyped,import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return "bitsandbytes is not installed (pip install bitsandbytes; its CPU backend needs torch)"
    return None


def build_bitsandbytes(params, grads):
    import bitsandbytes as bnb  # type: ignore[import-untyped,import-not-found,unused-ignore]
    import torch
    tp = [torch.from_numpy(p) for p in params]
    for t, g in zip(tp, grads):
        t.grad = torch.from_numpy(g)
    opt = bnb.optim.Adam8bit(tp, lr=LR, betas=BETAS, eps=EPS)
    opt.step()
    return opt.step


PART_LABEL = "compressed state"


def parts(settings):
    """(label, estimated seconds): six timed entries for one budget, 1 GB of arrays to set up."""
    return [(PART_LABEL, 1.4 * settings.budget_s + 6.0)]


def run_compressed(settings, threads, n=None, log=print):
    """Returns result records; prints the table."""
    n = n or RAM_ELEMENTS["float32"]
    rng = np.random.default_rng(1)
    p = rng.random(n, dtype=np.float32)
    p -= 0.5
    g = rng.random(n, dtype=np.float32)
    g *= 9e-3
    g += 1e-3
    timed, opts = [], {}
    for layout in LAYOUTS:
        opt = adam_c.Adam([p], lr=LR, betas=BETAS, eps=EPS, state_dtype=layout)
        opt.step([g])  # allocates the state and the plan
        opts[layout] = opt
        timed.append(Timed(f"floor {layout}", functools.partial(opt._plan.run, [g], opt.param_groups, True)))
        timed.append(Timed(f"adam_c {layout}", functools.partial(opt.step, [g])))
    stats = measure_interleaved(timed, settings.min_rounds, settings.max_rounds, settings.budget_s)
    why_not_bnb = bitsandbytes_status()
    if why_not_bnb is None:
        # on its own, after adam_c's group: its step runs on torch's OpenMP threads, which keep spinning after it
        # and would slow whichever adam_c sample came next
        try:
            bnb_timed = [Timed("bitsandbytes Adam8bit", build_bitsandbytes([p.copy()], [g]))]
            stats.update(measure_interleaved(bnb_timed, 3, settings.min_rounds, settings.budget_s / 2))
        except Exception as exc:  # no CPU path in this build, or any other failure: report it
            why_not_bnb = f"bitsandbytes Adam8bit failed here: {type(exc).__name__}: {exc}"
    base = stats["adam_c float32"]["median_ns"]
    records = []
    log(f"\ncompressed state | 1 tensor of {n:,} float32 params | {threads} threads | "
        f"{adam_c.cpu_info()['target']} kernels")
    log(f"{'implementation':22s} {'ns/el':>6s} {'IQR':>13s} {'B/el':>5s} {'GB/s':>5s} {'% floor':>7s} "
        f"{'x fp32':>6s} {'state MB':>8s}")
    for name, s in stats.items():
        layout = name.split()[-1] if name.split()[-1] in LAYOUTS else "int8"
        per_el = state_bytes_per_element(layout)
        t = s["median_ns"]
        floor = stats.get(f"floor {layout}", {}).get("median_ns")
        rec = {"implementation": name, "layout": layout, "n_elements": n, "ns_per_element": t / n,
               "q1_ns_per_element": s["q1_ns"] / n, "q3_ns_per_element": s["q3_ns"] / n,
               "bytes_per_element": per_el, "gb_per_s": n * per_el / t,
               "percent_of_floor": 100.0 * floor / t if floor and not name.startswith("floor") else None,
               "over_fp32": t / base, "samples": s["samples"],
               "state_bytes": opts[layout].state_bytes() if name.startswith("adam_c") else None}
        records.append(rec)
        target = TARGET_RATIO.get(layout) if name.startswith("adam_c") else None
        verdict = "" if target is None else (" ok" if t / base <= target else f" (target <={target})")
        pf = f"{fit(rec['percent_of_floor'], 6, 0)}%" if rec["percent_of_floor"] else f"{'':7s}"
        mb = fit(rec["state_bytes"] / 1e6, 9, 0) if rec["state_bytes"] else f"{'':9s}"
        log(f"{name:22s} {fit(t / n, 6)} {fit(s['q1_ns'] / n, 6)}-{fit(s['q3_ns'] / n, 6)} {per_el:5.2f} "
            f"{fit(rec['gb_per_s'], 5, 1)} {pf} {fit(t / base, 5, 2)}x{mb}{verdict}")
    if why_not_bnb:
        log(wrap(f"bitsandbytes: not measured ({why_not_bnb})"))
    del opts, timed, p, g
    gc.collect()
    return records


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="python -m adam_c.bench.compressed", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--elements", type=int, default=None)
    args = parser.parse_args(argv)
    if args.elements is not None and args.elements < 1:
        parser.error(f"--elements must be >= 1, got {args.elements}")
    run_compressed(Settings(args.quick), adam_c.get_num_threads(), args.elements)
    return 0


if __name__ == "__main__":
    sys.exit(main())
