"""loop.py: the training-loop workload: a BLAS matmul before every step, adam_c's threading against serial and torch."""
import functools
import gc

import numpy as np

import adam_c

from .harness import BETAS, EPS, LR, SharedBuffers, Skipped, Timed, fit, format_time, measure_interleaved
from .step import build_torch

# The training-loop workload: float32 params of these sizes, a 256x256 float32 matmul (BLAS) before every step,
# as in any NumPy model; after a BLAS call its worker threads keep spinning on the cores for a while.
LOOP_SIZES = (26_000, 100_000, 1_000_000, 8_000_000)
LOOP_MATMUL = 256


def part_label(n):
    return f"loop {n:,} elements"


def parts(settings):
    """(label, estimated seconds) of each size: four groups timed for 3 budgets in all, and the buffers' set-up."""
    return [(part_label(n), 3.6 * settings.budget_s + 0.4 + n * 1e-7) for n in LOOP_SIZES]


def run_training_loop(settings, skipped, threads, done=lambda label: None):
    """The loop users run, in four groups measured one after another, each interleaved in a random order:
    - time per (matmul + step) for adam_c's default threading and adam_c forced serial, with no other library
      stepping (torch, if installed, is imported but idle);
    - torch's fused Adam in the same loop, alone;
    - adam_c's step alone (default and serial), each timed right after an untimed torch step + matmul, whose
      OpenMP and BLAS threads are still spinning (a torch model's loop);
    - default vs serial back to back (no matmul), where threads should win, beside the memory probe's 2-thread
      speedup. Each implementation has its own optimizer on shared arrays. done(label) is called after each size
    (progress); the tables are printed at the end."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((LOOP_MATMUL, LOOP_MATMUL)).astype(np.float32)
    b = rng.standard_normal((LOOP_MATMUL, LOOP_MATMUL)).astype(np.float32)
    product = np.empty_like(a)

    def matmul():
        np.matmul(a, b, out=product)

    def with_matmul(step):
        def call():
            np.matmul(a, b, out=product)
            step()
        return call

    use_threads = functools.partial(adam_c.set_num_threads, threads)
    serial = functools.partial(adam_c.set_num_threads, 1)
    records = []
    for n in LOOP_SIZES:
        buf = SharedBuffers([n], "float32")
        default_opt = buf.optimizer
        serial_opt = adam_c.Adam(buf.params, lr=LR, betas=BETAS, eps=EPS)
        b2b_opt = adam_c.Adam(buf.params, lr=LR, betas=BETAS, eps=EPS)
        b2b_serial_opt = adam_c.Adam(buf.params, lr=LR, betas=BETAS, eps=EPS)
        default_call = with_matmul(functools.partial(default_opt.step, buf.grads))
        serial_call = with_matmul(functools.partial(serial_opt.step, buf.grads))
        # groups measured one after another: torch's loop alone, as a torch user runs it, and its spinning
        # threads only where a group is about them
        quiet = [Timed("matmul alone", matmul), Timed("adam_c", default_call, use_threads),
                 Timed("adam_c serial", serial_call, serial)]
        torch_loop, with_torch = [], []
        if "torch fused" not in skipped:
            try:
                torch_step = build_torch(buf, fused=True)
                torch_then_matmul = with_matmul(torch_step)
                # here only the step is timed, and every one follows an untimed torch step and matmul, as in a torch
                # model's loop (forward and backward on torch's OpenMP threads, then the step): torch's and BLAS's
                # threads are still spinning when adam_c starts
                torch_loop = [Timed("torch fused", torch_then_matmul)]
                with_torch = [Timed("adam_c | torch", functools.partial(default_opt.step, buf.grads),
                                    lambda: (torch_then_matmul(), use_threads()), True),
                              Timed("adam_c serial | torch", functools.partial(serial_opt.step, buf.grads),
                                    lambda: (torch_then_matmul(), serial()), True)]
            except Skipped as exc:
                skipped["torch fused"] = str(exc)
        # the memory probe (the step's bytes, no math) with 2 threads and 1: how much a second thread can add
        # here at all, on this host at this moment
        probe = functools.partial(default_opt._plan.run, buf.grads, default_opt.param_groups, True)
        back_to_back = [Timed("b2b adam_c", functools.partial(b2b_opt.step, buf.grads), use_threads),
                        Timed("b2b serial", functools.partial(b2b_serial_opt.step, buf.grads), serial),
                        Timed("b2b probe", probe, use_threads), Timed("b2b probe serial", probe, serial)]
        stats = {}
        try:
            for group, budget in ((quiet, settings.budget_s), (torch_loop, settings.budget_s / 2),
                                  (with_torch, settings.budget_s),
                                  (back_to_back, settings.budget_s / 2)):
                if group:
                    stats.update(measure_interleaved(group, settings.sweep_min_rounds, settings.sweep_max_rounds,
                                                     budget))
        finally:
            adam_c.set_num_threads(threads)
        med = {k: v["median_ns"] for k, v in stats.items()}
        spread = {k: 50.0 * (v["q3_ns"] - v["q1_ns"]) / v["median_ns"] for k, v in stats.items()}
        decision = default_opt.threading_info()
        torch_ns = med.get("torch fused")
        row = {"workload": "loop", "dtype": "float32", "n_elements": n, "threads": threads,
               "median_ns": med, "half_iqr_percent": spread, "decision": decision,
               "b2b_decision": b2b_opt.threading_info(),
               "adam_c_over_serial": med["adam_c"] / med["adam_c serial"],
               "adam_c_over_serial_with_torch": (med["adam_c | torch"] / med["adam_c serial | torch"]
                                                 if torch_ns else None),
               "adam_c_over_torch": med["adam_c"] / torch_ns if torch_ns else None,
               "b2b_speedup": med["b2b serial"] / med["b2b adam_c"],
               "b2b_probe_speedup": med["b2b probe serial"] / med["b2b probe"]}
        records.append(row)
        done(part_label(n))
        del buf, quiet, torch_loop, with_torch, back_to_back, default_opt, serial_opt, b2b_opt, b2b_serial_opt
        gc.collect()
    print_loop_tables(records, threads)
    return records




def print_loop_tables(records, threads):
    """The loop's results in two tables of at most 100 columns (one row per size), then the targets."""
    print(f"\nfloat32 | training loop: a {LOOP_MATMUL}x{LOOP_MATMUL} matmul before every step | adam_c threads "
          f"{threads}, threading {adam_c.cpu_info()['threading']}")
    print("  time per (matmul + step); decision: what adam_c's default optimizer chose after timing its steps")
    print(f"  {'elements':>10} {'matmul':>9} {'adam_c':>9} {'serial':>9} {'torch fused':>11} {'adam_c/serial':>13} "
          f"{'adam_c/torch':>12} {'decision':>9}")
    for row in records:
        med, decision = row["median_ns"], row["decision"]
        chosen = {0: "?", 1: "serial"}.get(decision["threads"], f"{decision['threads']} thr")
        torch_ns = med.get("torch fused")
        ratio = fit(row["adam_c_over_torch"], 12) if torch_ns else "-"
        print(f"  {row['n_elements']:>10,} {format_time(med['matmul alone']):>9} {format_time(med['adam_c']):>9} "
              f"{format_time(med['adam_c serial']):>9} {format_time(torch_ns) if torch_ns else '-':>11} "
              f"{fit(row['adam_c_over_serial'], 13)} {ratio:>12} {chosen:>9}")
    print("  left: the step alone, right after an untimed torch step + matmul (their threads still spinning);\n"
          "  right: back to back, steps with no matmul between them, adam_c's default against serial, and the\n"
          "  memory probe's speedup with 2 threads (what a second thread can add on this host now)")
    print(f"  {'elements':>10} {'adam_c':>9} {'serial':>9} {'/serial':>8} | {'b2b adam_c':>10} {'serial':>9} "
          f"{'speedup':>8} {'probe':>7}")
    for row in records:
        med = row["median_ns"]
        if row["adam_c_over_serial_with_torch"] is not None:
            after = (f"{format_time(med['adam_c | torch']):>9} {format_time(med['adam_c serial | torch']):>9} "
                     f"{fit(row['adam_c_over_serial_with_torch'], 8)}")
        else:
            after = f"{'(torch not measured)':^28}"
        print(f"  {row['n_elements']:>10,} {after} | {format_time(med['b2b adam_c']):>10} "
              f"{format_time(med['b2b serial']):>9} {fit(row['b2b_speedup'], 7, 2)}x {fit(row['b2b_probe_speedup'], 6, 2)}x")
    print("  targets: adam_c/serial <= 1.1 at every size, also for the step after torch (/serial);\n"
          "           adam_c/torch <= 0.5 at 2.6e4 and 1e5 elements;\n"
          "           back-to-back speedup >= 1.3x at 8e6 with 2 threads (compare the probe's)")
