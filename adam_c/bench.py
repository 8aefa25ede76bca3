"""bench.py: adam_c against its memory floor, NumPy and torch, interleaved in one process (python -m adam_c.bench)."""
import argparse
import datetime
import functools
import gc
import importlib
import json
import math
import os
import platform
import random
import sys
import time

import numpy as np

import adam_c
from adam_c import _core

LR, BETAS, EPS = 1e-3, (0.9, 0.999), 1e-8
DTYPES = ("float32", "float64")
WORKLOADS = ("ram", "cache", "call", "multi", "loop")
# The training-loop workload: float32 params of these sizes, a 256x256 float32 matmul (BLAS) before every step,
# as in any NumPy model; after a BLAS call its worker threads keep spinning on the cores for a while.
LOOP_SIZES = (26_000, 100_000, 1_000_000, 8_000_000)
LOOP_MATMUL = 256
# RAM-bound tensor sizes: p, g, m, v of 6.4e7 float32 (or 3.2e7 float64) elements are 1.02 GB, shared by all
# implementations; NumPy adds one scratch array (0.26 GB), torch foreach a few transient ones.
RAM_ELEMENTS = {"float32": 64_000_000, "float64": 32_000_000}
MULTI_TENSORS, MULTI_SEED = 200, 0          # seed 0: 3,732,411 elements in all
SWEEP_SIZES = (1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000, 10_000_000)
# sizes (in float32 elements) around the serial/parallel threshold; a float64 sweep uses half as many elements
THRESHOLD_SWEEP_SIZES = (4_096, 8_192, 12_288, 16_384, 24_576, 32_768, 49_152, 65_536, 98_304, 131_072,
                         196_608, 262_144, 524_288, 1_048_576)
ALWAYS_SERIAL = 2 ** 40  # not larger: the core multiplies the threshold by 4 (2**62 * 4 wraps to 0)
FLOOR, ADAM_C = "floor (probe)", "adam_c"
MIN_SAMPLE_NS = 2_000_000                   # a sample times a batch of calls lasting at least this long
WARMUP_NS = 20_000_000


def bytes_per_element(dtype, amsgrad=False):
    """Bytes a step moves per element: reads p, g, m, v (and vmax) and writes p, m, v (and vmax)."""
    return np.dtype(dtype).itemsize * (9 if amsgrad else 7)


def multi_sizes():
    """The 200-tensor workload: sizes log-uniform in 1e2..1e5, fixed seed."""
    exponents = np.random.default_rng(MULTI_SEED).uniform(2.0, 5.0, MULTI_TENSORS)
    return [int(s) for s in np.round(10.0 ** exponents)]


def workload_sizes(name, dtype):
    if name == "ram":
        return [RAM_ELEMENTS[dtype]]
    if name == "cache":
        return [1_000_000]
    if name == "call":
        return [10_000]
    if name == "multi":
        return multi_sizes()
    raise ValueError(f"unknown workload {name!r}")


def describe_workload(name, sizes):
    total = sum(sizes)
    if len(sizes) == 1:
        return f"{name}: 1 tensor of {total:,} elements"
    return f"{name}: {len(sizes)} tensors, {min(sizes):,}..{max(sizes):,} elements, {total:,} in all"


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


def build_floor(buf):
    plan, groups = buf.optimizer._plan, buf.optimizer.param_groups
    return functools.partial(plan.run, buf.grads, groups, True)


def build_adam_c(buf):
    return functools.partial(buf.optimizer.step, buf.grads)


class NumpyAdam:
    """Adam (torch's formulas, no weight decay) in NumPy: every operation in place or into one scratch buffer."""

    def __init__(self, params, grads, exp_avgs, exp_avg_sqs, lr=LR, betas=BETAS, eps=EPS):
        self.tensors = list(zip(params, grads, exp_avgs, exp_avg_sqs))
        self.scratch = np.empty(max(p.size for p in params), params[0].dtype)
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.step_count = 0

    def step(self):
        self.step_count += 1
        beta1, beta2, t = self.beta1, self.beta2, self.step_count
        neg_step_size = -self.lr / (1.0 - beta1 ** t)
        bias_correction2_sqrt = math.sqrt(1.0 - beta2 ** t)
        for p, g, m, v in self.tensors:
            tmp = self.scratch[:p.size].reshape(p.shape)
            np.subtract(g, m, out=tmp)          # m = lerp(m, g, 1 - beta1)
            tmp *= 1.0 - beta1
            m += tmp
            v *= beta2                          # v = beta2 v + (1 - beta2) g^2
            np.multiply(g, g, out=tmp)
            tmp *= 1.0 - beta2
            v += tmp
            np.sqrt(v, out=tmp)                 # denom = sqrt(v) / sqrt(bc2) + eps
            tmp /= bias_correction2_sqrt
            tmp += self.eps
            np.divide(m, tmp, out=tmp)          # p -= lr / bc1 * m / denom
            tmp *= neg_step_size
            p += tmp


def build_numpy(buf):
    return NumpyAdam(buf.params, buf.grads, buf.exp_avgs, buf.exp_avg_sqs).step


def optional_module(name):
    """The module if it imports, else None (not installed, or broken)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def build_torch(buf, fused):
    torch = optional_module("torch")
    if torch is None:
        raise Skipped("torch not installed")
    params = [torch.nn.Parameter(torch.from_numpy(p)) for p in buf.params]  # shares the NumPy memory
    for tp, g in zip(params, buf.grads):
        tp.grad = torch.from_numpy(g)
    if fused:
        opt = torch.optim.Adam(params, lr=LR, betas=BETAS, eps=EPS, fused=True)
    else:
        opt = torch.optim.Adam(params, lr=LR, betas=BETAS, eps=EPS, foreach=True)
    opt.step()  # creates torch's state, then point it at the shared state arrays
    for tp, m, v in zip(params, buf.exp_avgs, buf.exp_avg_sqs):
        opt.state[tp]["exp_avg"] = torch.from_numpy(m)
        opt.state[tp]["exp_avg_sq"] = torch.from_numpy(v)
    return opt.step


@functools.lru_cache(maxsize=None)
def _numba_kernel():
    numba = optional_module("numba")
    if numba is None:
        raise Skipped("numba not installed")

    @numba.njit(parallel=True, fastmath=False, nogil=True)
    def adam_numba(p, g, m, v, beta1, beta2, neg_step_size, bias_correction2_sqrt, eps):
        one = beta1 - beta1 + 1  # 1 in the element type: a literal 1 would turn float32 math into float64
        for i in numba.prange(p.shape[0]):
            grad = g[i]
            new_m = m[i] + (one - beta1) * (grad - m[i])
            new_v = v[i] * beta2 + (one - beta2) * grad * grad
            m[i] = new_m
            v[i] = new_v
            p[i] = p[i] + neg_step_size * new_m / (math.sqrt(new_v) / bias_correction2_sqrt + eps)

    return adam_numba


class NumbaAdam:
    """Adam with a numba parallel kernel, one kernel call (one parallel region) per tensor."""

    def __init__(self, params, grads, exp_avgs, exp_avg_sqs, lr=LR, betas=BETAS, eps=EPS):
        self.kernel = _numba_kernel()
        self.scalar = params[0].dtype.type  # scalars in the element type, so float32 math stays float32
        self.tensors = [(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1))
                        for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs)]
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.step_count = 0

    def step(self):
        self.step_count += 1
        t, scalar = self.step_count, self.scalar
        neg_step_size = scalar(-self.lr / (1.0 - self.beta1 ** t))
        bc2_sqrt = scalar(math.sqrt(1.0 - self.beta2 ** t))
        beta1, beta2, eps = scalar(self.beta1), scalar(self.beta2), scalar(self.eps)
        for p, g, m, v in self.tensors:
            self.kernel(p, g, m, v, beta1, beta2, neg_step_size, bc2_sqrt, eps)


def build_numba(buf):
    adam = NumbaAdam(buf.params, buf.grads, buf.exp_avgs, buf.exp_avg_sqs)
    adam.step()  # compiles for this dtype
    return adam.step


IMPLEMENTATIONS = {
    FLOOR: build_floor,
    ADAM_C: build_adam_c,
    "numpy (out=)": build_numpy,
    "torch fused": functools.partial(build_torch, fused=True),
    "torch foreach": functools.partial(build_torch, fused=False),
    "numba parallel": build_numba,
}


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


# ---------------------------------------------------------------- the main benchmark

def run_workload(name, dtype, settings, impl_names, skipped, min_rounds=None, max_rounds=None, budget_s=None,
                 sizes=None):
    """Measure every available implementation on one workload; returns result records (one per impl)."""
    sizes = sizes if sizes is not None else workload_sizes(name, dtype)
    buf = SharedBuffers(sizes, dtype)
    timed = []
    for impl in impl_names:
        if impl in skipped:
            continue
        try:
            call = IMPLEMENTATIONS[impl](buf)
        except Skipped as exc:
            skipped[impl] = str(exc)
            continue
        except Exception as exc:  # an implementation that fails on this dtype or size: report, go on
            print(f"  {impl}: skipped on {name}/{dtype}: {type(exc).__name__}: {exc}")
            continue
        timed.append(Timed(impl, call))
    stats = measure_interleaved(timed,
                                min_rounds if min_rounds is not None else settings.min_rounds,
                                max_rounds if max_rounds is not None else settings.max_rounds,
                                budget_s if budget_s is not None else settings.budget_s)
    n = buf.n_elements
    per_element_bytes = bytes_per_element(dtype)
    floor = stats.get(FLOOR, {}).get("median_ns")
    ours = stats.get(ADAM_C, {}).get("median_ns")
    records = []
    for impl, s in stats.items():
        t = s["median_ns"]
        records.append({
            "workload": name, "dtype": dtype, "implementation": impl, "n_tensors": len(sizes), "n_elements": n,
            "bytes_per_element": per_element_bytes, **s,
            "ns_per_element": t / n,
            "gb_per_s": n * per_element_bytes / t,
            "percent_of_floor": 100.0 * floor / t if floor else None,
            "adam_c_over_this": ours / t if ours else None,
        })
    del buf, timed
    gc.collect()
    return records


def format_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def print_table(records, title):
    print(f"\n{title}")
    print(f"  {'implementation':<16} {'time/step':>10} {'ns/el':>8} {'GB/s':>7} {'% floor':>8} "
          f"{'adam_c/this':>11} {'IQR/2':>7} {'samples':>9}")
    for r in records:
        pct = f"{r['percent_of_floor']:.0f}%" if r["percent_of_floor"] is not None else "-"
        ratio = f"{r['adam_c_over_this']:.2f}" if r["adam_c_over_this"] is not None else "-"
        spread = 50.0 * (r["q3_ns"] - r["q1_ns"]) / r["median_ns"]
        print(f"  {r['implementation']:<16} {format_time(r['median_ns']):>10} {r['ns_per_element']:>8.3f} "
              f"{r['gb_per_s']:>7.1f} {pct:>8} {ratio:>11} {spread:>6.1f}% {r['samples']:>4}x{r['batch']:<4}")


# ---------------------------------------------------------------- the training loop

def run_training_loop(settings, skipped, threads):
    """The loop users run, in four groups measured one after another, each interleaved in a random order:
    - time per (matmul + step) for adam_c's default threading and adam_c forced serial, with no other library
      stepping (torch, if installed, is imported but idle);
    - torch's fused Adam in the same loop, alone;
    - adam_c's step alone (default and serial), each timed right after an untimed torch step + matmul, whose
      OpenMP and BLAS threads are still spinning (a torch model's loop);
    - default vs serial back to back (no matmul), where threads should win, beside the memory probe's 2-thread
      speedup. Each implementation has its own optimizer on shared arrays."""
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
    print(f"\nfloat32 | training loop: a {LOOP_MATMUL}x{LOOP_MATMUL} matmul before every step | time per "
          f"(matmul + step); adam_c threads {threads}, threading {adam_c.cpu_info()['threading']}")
    print(f"  {'':>10} {'time per (matmul + step)':^66} | {'step alone, after torch + matmul':^33} |")
    print(f"  {'elements':>10} {'matmul':>9} {'adam_c':>9} {'serial':>9} {'torch fused':>11} {'adam_c/serial':>13} "
          f"{'/torch':>7} | {'adam_c':>9} {'serial':>9} {'/serial':>9} | {'decision':>9} | back to back: "
          f"{'adam_c':>9} {'serial':>9} {'speedup':>7} {'probe':>7}")
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
        chosen = {0: "?", 1: "serial"}.get(decision["threads"], f"{decision['threads']} thr")
        if torch_ns:
            torch_ratio = f"{row['adam_c_over_torch']:>7.3f}"
            after_torch = (f"{format_time(med['adam_c | torch']):>9} {format_time(med['adam_c serial | torch']):>9} "
                           f"{row['adam_c_over_serial_with_torch']:>9.3f}")
        else:
            torch_ratio, after_torch = f"{'-':>7}", f"{'(torch not measured)':^29}"
        print(f"  {n:>10,} {format_time(med['matmul alone']):>9} {format_time(med['adam_c']):>9} "
              f"{format_time(med['adam_c serial']):>9} {format_time(torch_ns) if torch_ns else '-':>11} "
              f"{row['adam_c_over_serial']:>13.3f} {torch_ratio} | {after_torch} | {chosen:>9} | "
              f"{format_time(med['b2b adam_c']):>22} {format_time(med['b2b serial']):>9} {row['b2b_speedup']:>6.2f}x "
              f"{row['b2b_probe_speedup']:>6.2f}x")
        del buf, quiet, torch_loop, with_torch, back_to_back, default_opt, serial_opt, b2b_opt, b2b_serial_opt
        gc.collect()
    print("  targets: adam_c/serial <= 1.1 at every size, also for the step after torch; adam_c/torch <= 0.5 at "
          "2.6e4 and 1e5; back-to-back speedup >= 1.3x at 8e6 with 2 threads (probe: the same for the memory probe, what "
          "a second thread can add on this host now)")
    return records


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


def print_header(info, vers, threads):
    print(f"adam_c benchmark, {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs), {platform.system()} {platform.release()}")
    print(f"adam_c {vers['adam_c']}: SIMD target {info['target']} (compiled {', '.join(info['targets'])}; "
          f"CPU supports {', '.join(info['supported_targets'])}), OpenMP {'yes' if info['openmp'] else 'no'}, "
          f"threads {info['num_threads']}, parallel threshold {info['parallel_threshold']:,} float32 elements")
    shown = [f"{k} {v}" for k, v in vers.items() if k != "adam_c" and v is not None]
    missing = [k for k, v in vers.items() if v is None]
    print(f"{', '.join(shown)}" + (f"; not installed: {', '.join(missing)}" if missing else ""))
    print(f"threads for adam_c, torch and numba: {threads}; {load_note()}")
    print("DeepSpeed CPUAdam: skipped (not installable on this machine)")
    print("Bytes per element per step: 28 (float32), 56 (float64); the floor is the 4-read/3-write probe on the "
          "same table and threads as a step.\nadam_c/this < 1: adam_c is faster. IQR/2: half the interquartile "
          "range of the samples, relative to the median.")


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


def check_numpy_reference(dtypes):
    """The NumPy implementation must compute what adam_c computes, or its timing means nothing."""
    for dtype in dtypes:
        rng = np.random.default_rng(7)
        p = rng.standard_normal(1000).astype(dtype)
        g = [rng.standard_normal(1000).astype(dtype) for _ in range(3)]
        ours, ref = p.copy(), p.copy()
        opt = adam_c.Adam([ours], lr=LR, betas=BETAS, eps=EPS)
        m, v = np.zeros_like(p), np.zeros_like(p)
        grad = np.empty_like(p)
        reference = NumpyAdam([ref], [grad], [m], [v])
        for gi in g:
            opt.step([gi])
            grad[...] = gi
            reference.step()
        tol = 1e-5 if dtype == "float32" else 1e-12
        if not np.allclose(ours, ref, rtol=tol, atol=tol):
            print(f"WARNING: the NumPy Adam differs from adam_c in {dtype} "
                  f"(max abs diff {np.max(np.abs(ours - ref)):.3g}); its timings compare different work")


# ---------------------------------------------------------------- size sweep and plot

def run_size_sweep(dtypes, settings, impl_names, skipped):
    records = []
    for dtype in dtypes:
        for n in SWEEP_SIZES:
            recs = run_workload(f"sweep {n}", dtype, settings, impl_names, skipped, sizes=[n],
                                min_rounds=settings.sweep_min_rounds, max_rounds=settings.sweep_max_rounds,
                                budget_s=settings.sweep_budget_s)
            line = ", ".join(f"{r['implementation']} {r['ns_per_element']:.3f}" for r in recs)
            print(f"  sweep {dtype} {n:>10,}: ns/el: {line}")
            records.extend(recs)
    return records


def draw_plot(sweep, path, threads):
    import matplotlib  # type: ignore[import-not-found,unused-ignore]  # optional: the bench extra
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
    dtypes = sorted({r["dtype"] for r in sweep})
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6.5 * len(dtypes), 4.8), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes):
        rows = [r for r in sweep if r["dtype"] == dtype]
        for impl in dict.fromkeys(r["implementation"] for r in rows):
            pts = sorted((r["n_elements"], r["ns_per_element"]) for r in rows if r["implementation"] == impl)
            style = {"color": "black", "linestyle": "--", "linewidth": 2} if impl == FLOOR else {"marker": "o"}
            ax.plot([x for x, _ in pts], [y for _, y in pts], label=impl, **style)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("elements (one tensor)")
        ax.set_ylabel("ns per element per step")
        ax.set_title(f"Adam step, {dtype}, {threads} thread(s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- serial/parallel threshold sweep

def sweep_threshold(dtypes, settings):
    """adam_c step time with the threshold forced high (always serial) vs 0 (always parallel), per size.
    Two speedups: of the medians, and of the best samples. On a shared machine a parallel region whose second
    thread finds its core busy waits a scheduler tick, which inflates the parallel medians; the best samples are
    the times with both cores free, the case the threshold is for."""
    saved = _core.get_parallel_threshold()
    threads = adam_c.get_num_threads()
    results = []
    try:
        if threads < 2:
            print("adam_c uses 1 thread: serial and parallel are the same; use --threads 2 or more")
            return results
        for dtype in dtypes:
            scale = np.dtype(dtype).itemsize // 4  # a float64 element counts as 2 in the threshold
            print(f"\nserial vs parallel ({threads} threads), {dtype}; size also given in float32 elements "
                  "(the threshold's unit)")
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
            for key, label in (("speedup_best", "best samples"), ("speedup_median", "medians")):
                crossover = find_crossover(rows, key)
                if crossover is None:
                    print(f"  crossover ({label}): parallel does not win at two consecutive sizes in this range")
                else:
                    print(f"  crossover ({label}): parallel wins from {crossover:,} float32 elements on "
                          f"(first of two consecutive wins)")
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


# ---------------------------------------------------------------- torch drop-in: adam_c.torch vs torch.optim fused

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


def run_torch_dropin(dtypes, settings):
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
                spread = 50.0 * (st["q3_ns"] - st["q1_ns"]) / st["median_ns"]
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
        many, one = DropinBuffers(dropin_shapes("overhead"), dtype), DropinBuffers(dropin_shapes("overhead-1"),
                                                                                      dtype)
        timed = [Timed("150 tensors", many.ours.step), Timed("1 tensor", one.ours.step),
                 Timed("torch fused 150", many.torch_fused.step)]
        stats = measure_interleaved(timed, settings.min_rounds, settings.max_rounds, settings.budget_s)
        per_tensor = (stats["150 tensors"]["median_ns"] - stats["1 tensor"]["median_ns"]) / (OVERHEAD_TENSORS - 1)
        fused_per_tensor = stats["torch fused 150"]["median_ns"] / OVERHEAD_TENSORS
        print(f"\n{dtype} | Python overhead of adam_c.torch: {per_tensor:.0f} ns per tensor per step "
              f"(step of 1 tiny tensor: {format_time(stats['1 tensor']['median_ns'])}); torch fused: "
              f"{fused_per_tensor:.0f} ns per tensor (all included)")
        records.append({"workload": "overhead", "dtype": dtype, "stats": stats, "ns_per_tensor": per_tensor,
                        "torch_fused_ns_per_tensor": fused_per_tensor})
    return records


# ---------------------------------------------------------------- entry point

def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m adam_c.bench", description=__doc__)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for adam_c, torch and numba (default: adam_c's default)")
    parser.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS + ("mixed", "compressed"),
                        default=list(WORKLOADS),
                        help="not in the default set: mixed (mixed precision vs torch's recipes, bench_mixed.py), "
                             "compressed (float32 vs bfloat16 vs int8 optimizer state, bench_compressed.py)")
    parser.add_argument("--quality", action="store_true",
                        help="also train with float32, bfloat16 and int8 state and compare final losses "
                             "(adam_c.quality; with --plot, the curves go to OUT-quality.png)")
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--plot", metavar="OUT.png", help="also sweep sizes 1e3..1e7 and plot ns/element vs size")
    parser.add_argument("--json", metavar="OUT.json", help="save all results as JSON")
    parser.add_argument("--sweep-threshold", action="store_true",
                        help="only measure serial vs parallel adam_c steps around the parallel threshold")
    parser.add_argument("--no-torch", action="store_true", help="leave torch out even when it is installed")
    parser.add_argument("--torch-dropin", action="store_true",
                        help="only measure adam_c.torch.Adam against torch.optim.Adam(fused=True)")
    args = parser.parse_args(argv)
    most = _core.max_threads()
    if args.threads is not None and not 1 <= args.threads <= most:
        parser.error(f"--threads must be in 1..{most}, got {args.threads}")
    if args.torch_dropin or args.sweep_threshold:
        # those modes measure one thing: options of the full run would be ignored, so they are refused
        mode = "--torch-dropin" if args.torch_dropin else "--sweep-threshold"
        ignored = [flag for flag, used in (("--torch-dropin", args.torch_dropin and mode != "--torch-dropin"),
                                           ("--workloads", args.workloads != list(WORKLOADS)),
                                           ("--no-torch", args.no_torch), ("--plot", args.plot),
                                           ("--quality", args.quality)) if used]
        if ignored:
            parser.error(f"{mode} measures only its own comparison; it does not take {', '.join(ignored)}")
    if args.json:  # say so before minutes of measuring, not after
        folder = os.path.dirname(os.path.abspath(args.json))
        if os.path.isdir(args.json) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            parser.error(f"--json {args.json}: cannot write a file there")
    if args.plot and optional_module("matplotlib") is None:
        # say so before minutes of measuring, not after
        parser.error("--plot needs matplotlib, which is not installed (pip install matplotlib, or "
                     "pip install 'adam_c[bench]')")
    return args


def peak_rss_mb():
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except (ImportError, OSError):
        return float("nan")


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    settings = Settings(args.quick)
    dtypes = list(DTYPES) if args.dtype == "both" else [args.dtype]
    threads = args.threads if args.threads is not None else adam_c.get_num_threads()
    set_threads(threads, not args.no_torch)
    info = adam_c.cpu_info()
    vers = versions(not args.no_torch)
    print_header(info, vers, threads)
    out = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_model(),
           "cpu_info": info, "versions": vers, "threads": threads, "quick": args.quick}

    if args.torch_dropin:
        out["torch_dropin"] = run_torch_dropin(dtypes, settings)
    elif args.sweep_threshold:
        out["threshold_sweep"] = sweep_threshold(dtypes, settings)
    else:
        skipped = {}
        if args.no_torch:
            skipped.update({"torch fused": "--no-torch", "torch foreach": "--no-torch"})
        impl_names = list(IMPLEMENTATIONS)
        check_numpy_reference(dtypes)
        results = []
        for dtype in dtypes:
            for name in args.workloads:
                if name in ("loop", "mixed", "compressed"):
                    continue
                workload_started = time.perf_counter()
                records = run_workload(name, dtype, settings, impl_names, skipped)
                results.extend(records)
                print_table(records, f"{dtype} | {describe_workload(name, workload_sizes(name, dtype))} | "
                                     f"{bytes_per_element(dtype)} B/el | "
                                     f"{time.perf_counter() - workload_started:.0f} s")
        if "loop" in args.workloads:
            results.extend(run_training_loop(settings, skipped, threads))
        if "mixed" in args.workloads:
            from .bench_mixed import run_mixed
            results.extend(run_mixed(settings, skipped, threads))
        if "compressed" in args.workloads:
            from .bench_compressed import run_compressed
            out["compressed"] = run_compressed(settings, threads)
        if args.quality:
            from . import quality
            quality_args = ["--quick"] if args.quick else []
            if args.plot:
                quality_args += ["--plot", os.path.splitext(args.plot)[0] + "-quality.png"]
            out["quality_ok"] = quality.main(quality_args) == 0
        for impl, why in skipped.items():
            print(f"{impl}: skipped ({why})")
        out["results"] = results
        out["skipped"] = skipped
        if args.plot:
            print("\nsize sweep (one tensor) for the plot:")
            out["size_sweep"] = run_size_sweep(dtypes, settings, impl_names, skipped)
            draw_plot(out["size_sweep"], args.plot, threads)
            print(f"plot written to {args.plot}")

    elapsed = time.perf_counter() - started
    print(f"\ntotal {elapsed:.0f} s, peak RSS {peak_rss_mb():,.0f} MB, {load_note()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
