"""harness.py: the bench's timing harness (interleaved samples, medians and spreads), the shared arrays, the host's
description and progress lines; every workload module and the asv suite time through it. Imports no workload."""
import gc
import importlib
import math
import os
import platform
import random
import sys
import time

import numpy as np

import adam_c

LR, BETAS, EPS = 1e-3, (0.9, 0.999), 1e-8
FLOOR, ADAM_C = "floor (probe)", "adam_c"
MIN_SAMPLE_NS = 2_000_000                   # a sample times a batch of calls lasting at least this long
WARMUP_NS = 20_000_000
WIDTH = 100                                 # every line the bench prints fits this many columns
PROGRESS_AFTER_S = 30.0                     # runs expected to last longer report progress and an ETA (stderr)


def bytes_per_element(dtype, amsgrad=False):
    """Bytes a step moves per element: reads p, g, m, v (and vmax) and writes p, m, v (and vmax)."""
    return np.dtype(dtype).itemsize * (9 if amsgrad else 7)

# ---------------------------------------------------------------- the arrays every implementation shares

class SharedBuffers:
    """Params, grads and Adam state that every implementation steps in turn, so memory stays bounded (the
    values drift, but stay finite: grads are positive, so v never goes negative under the probe).
    The adam_c optimizer owns the state; the others are pointed at the same arrays."""

    def __init__(self, sizes, dtype, seed=1):
        rng = np.random.default_rng(seed)
        self.dtype = np.dtype(dtype)
        self.sizes = list(sizes)
        self.params, self.grads = [], []
        for n in self.sizes:
            p = rng.random(n, dtype=self.dtype)
            p -= 0.5
            g = rng.random(n, dtype=self.dtype)
            g *= 9e-3
            g += 1e-3
            self.params.append(p)
            self.grads.append(g)
        self.optimizer = adam_c.Adam(self.params, lr=LR, betas=BETAS, eps=EPS)
        self.optimizer.step(self.grads)  # allocates the state and builds opt._plan
        state = self.optimizer.state
        self.exp_avgs = [state[i]["exp_avg"] for i in range(len(self.sizes))]
        self.exp_avg_sqs = [state[i]["exp_avg_sq"] for i in range(len(self.sizes))]

    @property
    def n_elements(self):
        return sum(self.sizes)


class Skipped(Exception):
    """An implementation that cannot run here; the message says why."""

def optional_module(name):
    """The module if it imports, else None (not installed, or broken)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# ---------------------------------------------------------------- timing

class Timed:
    """One thing to time: `call` is one step; `prepare` (optional) runs before each sample, untimed. With
    single_calls=True every sample is one call, so whatever `prepare` leaves behind (threads still spinning) meets
    every timed call rather than the first of a batch."""

    def __init__(self, name, call, prepare=None, single_calls=False):
        self.name, self.call, self.prepare, self.single_calls = name, call, prepare, single_calls
        self.batch = 1
        self.samples = []  # ns per call, one per sample

    def warm_up(self):
        """Run once, then again until WARMUP_NS have passed; size the batch so a sample lasts MIN_SAMPLE_NS."""
        if self.prepare:
            self.prepare()
        self.call()
        calls, start = 0, time.perf_counter_ns()
        while True:
            self.call()
            calls += 1
            elapsed = time.perf_counter_ns() - start
            if elapsed >= WARMUP_NS:
                break
        self.batch = 1 if self.single_calls else max(1, math.ceil(MIN_SAMPLE_NS / (elapsed / calls)))

    def sample(self):
        if self.prepare:
            self.prepare()
        call, batch = self.call, self.batch
        start = time.perf_counter_ns()
        for _ in range(batch):
            call()
        self.samples.append((time.perf_counter_ns() - start) / batch)

    def summary(self):
        q1, median, q3 = np.percentile(self.samples, [25, 50, 75])
        return {"median_ns": float(median), "q1_ns": float(q1), "q3_ns": float(q3),
                "min_ns": float(min(self.samples)), "samples": len(self.samples), "batch": self.batch}


def measure_interleaved(timed, min_rounds, max_rounds, budget_s):
    """Rounds over `timed` (one sample each per round, in a fresh random order every round) until min_rounds are
    done and budget_s has passed, or max_rounds, or 3 rounds and 2 x budget_s. GC is off while timing.

    Why a random order: a sample can slow down the one after it (BLAS or torch OpenMP threads still spinning,
    caches filled with its arrays). A fixed or rotated order gives each implementation the same predecessor most
    of the time, a bias that once made adam_c look 2.4x slower than an identical serial step; a seeded shuffle
    gives every implementation the same mix of predecessors, and the same order on every run."""
    for t in timed:
        t.warm_up()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        order = random.Random(len(timed))
        for r in range(max_rounds):
            for t in order.sample(timed, len(timed)):
                t.sample()
            elapsed = time.perf_counter() - start
            # enough samples within the budget, or (slow steps, loaded machine) 3 samples and 2x the budget
            if (r + 1 >= min_rounds and elapsed >= budget_s) or (r + 1 >= 3 and elapsed >= 2 * budget_s):
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return {t.name: t.summary() for t in timed}


class Settings:
    """Sampling effort: rounds and time budget per measured point."""

    def __init__(self, quick):
        self.quick = quick
        self.min_rounds, self.max_rounds, self.budget_s = (5, 31, 1.0) if quick else (11, 201, 3.0)
        self.sweep_min_rounds, self.sweep_max_rounds, self.sweep_budget_s = (3, 21, 0.3) if quick else (7, 101, 1.2)


def format_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


# ---------------------------------------------------------------- environment

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(torch_wanted):
    out = {"python": platform.python_version(), "numpy": np.__version__, "adam_c": adam_c.__version__}
    for name in (["torch"] if torch_wanted else []) + ["numba", "matplotlib"]:
        module = optional_module(name)
        out[name] = None if module is None else getattr(module, "__version__", "?")
    return out


def load_note():
    """The 1-minute load average: with other processes running, parallel timings on a small machine are
    distorted (a thread of a parallel region waits for a core), so say so."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return "load average unknown"
    busy = " (other processes are running: timings are noisy)" if load > 0.5 else ""
    return f"load average {load:.2f}{busy}"


def set_threads(n, torch_wanted):
    """The same thread count for adam_c and every threaded peer."""
    adam_c.set_num_threads(n)
    torch = optional_module("torch") if torch_wanted else None
    if torch is not None:
        torch.set_num_threads(n)
    numba = optional_module("numba")
    if numba is not None:
        try:
            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        except Exception as exc:  # numba present but unusable: its builder reports it
            print(f"numba: could not set threads: {exc}")


def peak_rss_mb():
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except (ImportError, OSError):
        return float("nan")




def wrap(text, indent="  "):
    """text as lines of at most WIDTH columns, continuation lines indented by `indent` (for sentences, not tables)."""
    import textwrap
    return "\n".join(textwrap.wrap(text, WIDTH, subsequent_indent=indent, break_on_hyphens=False))


def fit(value, width, decimals=3):
    """value right-aligned in `width` columns with as many of `decimals` decimals as fit (a slow peer on a loaded
    host must not widen a table past WIDTH)."""
    for d in range(decimals, -1, -1):
        text = f"{value:.{d}f}"
        if len(text) <= width:
            return text.rjust(width)
    return f"{value:.2g}".rjust(width)


def half_iqr_percent(stats):
    """Half the interquartile range of a summary()'s samples, relative to their median, in percent."""
    return 50.0 * (stats["q3_ns"] - stats["q1_ns"]) / stats["median_ns"]


def host_note():
    """One line naming where and when the numbers were taken: CPU, logical CPUs, adam_c's SIMD target and threads,
    the load average and the date (for a figure's caption or a saved result)."""
    import datetime
    info = adam_c.cpu_info()
    try:
        load = f"load average {os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        load = "load unknown"
    return (f"{cpu_model()}, {os.cpu_count()} logical CPUs; adam_c {adam_c.__version__} {info['target']}, "
            f"{adam_c.get_num_threads()} threads; {load}; {datetime.datetime.now().isoformat(timespec='minutes')}")


class Progress:
    """The run's overall progress, on stderr (stdout stays the report): after each finished part, how many are done,
    the time so far and an estimate of the time left, the parts' estimates scaled by how fast the run has gone so far.
    Silent for a run expected to end within PROGRESS_AFTER_S, until it has run that long."""

    def __init__(self, parts, stream=None):
        self.estimates = dict(parts)               # {label: estimated seconds}, in the order they will run
        self.total = sum(self.estimates.values())
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.perf_counter()
        self.done_estimate = 0.0
        self.count = 0

    def done(self, label):
        """Part `label` has finished (a label not in the plan counts as a part of unknown length)."""
        self.count += 1
        self.done_estimate += self.estimates.get(label, 0.0)
        elapsed = time.perf_counter() - self.start
        if self.total < PROGRESS_AFTER_S and elapsed < PROGRESS_AFTER_S:
            return
        left = self.total - self.done_estimate
        pace = elapsed / self.done_estimate if self.done_estimate > 0 else 1.0
        eta = f"about {format_duration(left * pace)} left" if left > 0 else "finishing"
        print(f"[bench {self.count}/{len(self.estimates)}] {label} done; {format_duration(elapsed)} so far, {eta}",
              file=self.stream, flush=True)


def format_duration(seconds):
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min {seconds % 60:02d} s"
