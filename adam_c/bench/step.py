"""step.py: the step workloads (ram, cache, call, multi) and the size sweep: the memory floor, adam_c, NumPy, torch
and numba stepping the same arrays, interleaved."""
import functools
import gc
import math

import numpy as np

import adam_c

from .harness import (ADAM_C, BETAS, EPS, FLOOR, LR, SharedBuffers, Skipped, Timed, bytes_per_element,
                      fit, format_time, half_iqr_percent, measure_interleaved, optional_module, wrap)

# RAM-bound tensor sizes: p, g, m, v of 6.4e7 float32 (or 3.2e7 float64) elements are 1.02 GB, shared by all
# implementations; NumPy adds one scratch array (0.26 GB), torch foreach a few transient ones.
RAM_ELEMENTS = {"float32": 64_000_000, "float64": 32_000_000}
MULTI_TENSORS, MULTI_SEED = 200, 0          # seed 0: 3,732,411 elements in all
SWEEP_SIZES = (1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000, 10_000_000)

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


def print_table(records, title):
    print(f"\n{title}")
    print(f"  {'implementation':<16} {'time/step':>10} {'ns/el':>8} {'GB/s':>7} {'% floor':>8} "
          f"{'adam_c/this':>11} {'IQR/2':>7} {'samples':>9}")
    for r in records:
        pct = f"{r['percent_of_floor']:.0f}%" if r["percent_of_floor"] is not None else "-"
        ratio = f"{r['adam_c_over_this']:.2f}" if r["adam_c_over_this"] is not None else "-"
        spread = half_iqr_percent(r)
        print(f"  {r['implementation']:<16} {format_time(r['median_ns']):>10} {fit(r['ns_per_element'], 8)} "
              f"{fit(r['gb_per_s'], 7, 1)} {pct:>8} {ratio:>11} {fit(spread, 6, 1)}% "
              f"{r['samples']:>4}x{r['batch']:<4}")


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

def run_size_sweep(dtypes, settings, impl_names, skipped, done=lambda label: None):
    """One tensor of each of SWEEP_SIZES per dtype, every implementation; prints ns/element, one size a line."""
    records = []
    for dtype in dtypes:
        for n in SWEEP_SIZES:
            recs = run_workload(f"sweep {n}", dtype, settings, impl_names, skipped, sizes=[n],
                                min_rounds=settings.sweep_min_rounds, max_rounds=settings.sweep_max_rounds,
                                budget_s=settings.sweep_budget_s)
            line = ", ".join(f"{SHORT_NAMES.get(r['implementation'], r['implementation'])} {r['ns_per_element']:.3f}"
                             for r in recs)
            print(wrap(f"  {dtype} {n:>10,}: ns/el {line}", " " * 22))
            records.extend(recs)
            done(sweep_label(dtype, n))
    return records


SHORT_NAMES = {FLOOR: "floor", "numpy (out=)": "numpy", "numba parallel": "numba"}


def workload_label(name, dtype):
    return f"{dtype} {name}"


def sweep_label(dtype, n):
    return f"size sweep {dtype} {n:,}"


# seconds a workload takes besides its timing budget: filling its buffers (RAM: 1 GB of random arrays), each
# implementation's warm-up, and rounds of slow peers (a RAM round of all of them lasts seconds; torch foreach on 200
# tensors is slow per call)
SETUP_S = {"ram": 12.0, "cache": 0.3, "call": 0.2, "multi": 1.5}


def parts(names, dtypes, settings):
    """(label, estimated seconds) of the step workloads `names`, per dtype."""
    return [(workload_label(name, dtype), 1.3 * settings.budget_s + SETUP_S[name])
            for dtype in dtypes for name in names]


def sweep_parts(dtypes, settings):
    return [(sweep_label(dtype, n), 1.3 * settings.sweep_budget_s + 0.2 + n * 1e-7)
            for dtype in dtypes for n in SWEEP_SIZES]
