"""threshold.py: serial against parallel adam_c steps around the parallel threshold (bench --sweep-threshold)."""
import functools

import numpy as np

import adam_c
from adam_c import _core

from .harness import MIN_SAMPLE_NS, WARMUP_NS, SharedBuffers, Timed, format_time, measure_interleaved
from .step import build_adam_c

# sizes (in float32 elements) around the serial/parallel threshold; a float64 sweep uses half as many elements
THRESHOLD_SWEEP_SIZES = (4_096, 8_192, 12_288, 16_384, 24_576, 32_768, 49_152, 65_536, 98_304, 131_072,
                         196_608, 262_144, 524_288, 1_048_576)
ALWAYS_SERIAL = 2 ** 40  # not larger: the core multiplies the threshold by 4 (2**62 * 4 wraps to 0)


def part_label(dtype, f32_size):
    return f"threshold {dtype} {f32_size:,}"


def parts(dtypes, settings):
    """(label, estimated seconds) of each size: two timed variants, each sample a batch of MIN_SAMPLE_NS, until the
    sweep budget or the rounds run out (for these short steps, the rounds), and their warm-up."""
    rounds_s = settings.sweep_max_rounds * 2 * MIN_SAMPLE_NS * 1e-9
    return [(part_label(dtype, n), min(1.3 * settings.sweep_budget_s, 1.2 * rounds_s) + 2 * WARMUP_NS * 1e-9 + 0.02)
            for dtype in dtypes for n in THRESHOLD_SWEEP_SIZES]


def sweep_threshold(dtypes, settings, done=lambda label: None):
    """adam_c step time with the threshold forced high (always serial) vs 0 (always parallel), per size.
    Two speedups: of the medians, and of the best samples. On a shared machine a parallel region whose second
    thread finds its core busy waits a scheduler tick, which inflates the parallel medians; the best samples are
    the times with both cores free, the case the threshold is for. done(label) is called after each size."""
    saved = _core.get_parallel_threshold()
    threads = adam_c.get_num_threads()
    results = []
    try:
        if threads < 2:
            print("adam_c uses 1 thread: serial and parallel are the same; use --threads 2 or more")
            return results
        for dtype in dtypes:
            scale = np.dtype(dtype).itemsize // 4  # a float64 element counts as 2 in the threshold
            print(f"\nserial vs parallel ({threads} threads), {dtype}; 'as f32': the size in float32 elements, "
                  "the threshold's unit")
            print(f"  {'elements':>10} {'as f32':>10} {'serial':>10} {'parallel':>10} {'speedup':>8} "
                  f"{'best: serial':>12} {'parallel':>10} {'speedup':>8}")
            rows = []
            for f32_size in THRESHOLD_SWEEP_SIZES:
                n = f32_size // scale
                buf = SharedBuffers([n], dtype)
                step = build_adam_c(buf)
                timed = [Timed("serial", step, functools.partial(_core.set_parallel_threshold, ALWAYS_SERIAL)),
                         Timed("parallel", step, functools.partial(_core.set_parallel_threshold, 0))]
                stats = measure_interleaved(timed, settings.sweep_min_rounds, settings.sweep_max_rounds,
                                            settings.sweep_budget_s)
                ser, par = stats["serial"], stats["parallel"]
                row = {"dtype": dtype, "n_elements": n, "float32_elements": f32_size, "threads": threads,
                       "serial_median_ns": ser["median_ns"], "parallel_median_ns": par["median_ns"],
                       "speedup_median": ser["median_ns"] / par["median_ns"],
                       "serial_best_ns": ser["min_ns"], "parallel_best_ns": par["min_ns"],
                       "speedup_best": ser["min_ns"] / par["min_ns"]}
                rows.append(row)
                print(f"  {n:>10,} {f32_size:>10,} {format_time(ser['median_ns']):>10} "
                      f"{format_time(par['median_ns']):>10} {row['speedup_median']:>7.2f}x "
                      f"{format_time(ser['min_ns']):>12} {format_time(par['min_ns']):>10} "
                      f"{row['speedup_best']:>7.2f}x")
                done(part_label(dtype, f32_size))
            for key, label in (("speedup_best", "best samples"), ("speedup_median", "medians")):
                crossover = find_crossover(rows, key)
                if crossover is None:
                    print(f"  crossover ({label}): parallel wins at no two consecutive sizes in this range")
                else:
                    print(f"  crossover ({label}): parallel wins from {crossover:,} float32 elements on "
                          f"(two in a row)")
            print(f"  current threshold: {saved:,} float32 elements")
            results.extend(rows)
    finally:
        _core.set_parallel_threshold(saved)
    return results


def find_crossover(rows, key):
    """The first size (in float32 elements) where parallel is faster at it and at the next larger size (the
    largest size alone counts when it is the first win); None if there is none. Two consecutive wins, rather
    than 'faster from here on', so one noisy large size does not hide the crossover."""
    rows = sorted(rows, key=lambda r: r["float32_elements"])
    wins = [r[key] > 1.0 for r in rows]
    for i, win in enumerate(wins):
        if win and (i + 1 == len(wins) or wins[i + 1]):
            return rows[i]["float32_elements"]
    return None


