"""bench_step.py: asv benchmarks of adam_c's fused step: time per step, GB/s, and percent of the memory floor."""
import os

import numpy as np

import adam_c
from adam_c.bench import Timed, measure_interleaved

SIZES = [1_000, 100_000, 1_000_000, 10_000_000]   # call cost, L2, L3/RAM edge, RAM
TRACK_SIZES = [100_000, 1_000_000, 10_000_000]
DTYPES = ["float32", "float64"]
OPTIONS = ["adam", "amsgrad", "adamw"]
THREADS = [1, 2]
MULTI_TENSORS, MULTI_SEED = 200, 0                 # 3,732,411 elements in all, as in python -m adam_c.bench
LR = 1e-3


def bytes_per_element(dtype, option):
    """Bytes one step moves per element: reads p, g, m, v (+ vmax) and writes p, m, v (+ vmax)."""
    return np.dtype(dtype).itemsize * (9 if option == "amsgrad" else 7)


def multi_sizes():
    """200 tensor sizes, log-uniform in 1e2..1e5, fixed seed."""
    exponents = np.random.default_rng(MULTI_SEED).uniform(2.0, 5.0, MULTI_TENSORS)
    return [int(s) for s in np.round(10.0 ** exponents)]


def make_optimizer(option, params):
    if option == "adamw":
        return adam_c.AdamW(params, lr=LR, weight_decay=1e-2)
    return adam_c.Adam(params, lr=LR, amsgrad=(option == "amsgrad"))


def make_tensors(sizes, dtype):
    """Params in [-0.5, 0.5) and positive grads (so the floor probe keeps every value finite)."""
    rng = np.random.default_rng(1)
    params, grads = [], []
    for n in sizes:
        p = rng.random(n, dtype=dtype)
        p -= 0.5
        g = rng.random(n, dtype=dtype)
        g *= 9e-3
        g += 1e-3
        params.append(p)
        grads.append(g)
    return params, grads


def use_threads(threads):
    """Set adam_c's threads, or skip the benchmark (NotImplementedError) where they cannot be used."""
    if threads is None:
        adam_c.set_num_threads(None)
        return
    if threads > (os.cpu_count() or 1):
        raise NotImplementedError(f"{threads} threads on {os.cpu_count()} CPUs")
    adam_c.set_num_threads(threads)


def interleaved_medians(calls, min_rounds=7, max_rounds=15, budget_s=0.5):
    """Median seconds per call of each of `calls` ({name: fn}), timed by the bench's harness
    (adam_c.bench.measure_interleaved: one sample of each per round, in a seeded random order, each sample a batch
    of calls lasting at least 2 ms, GC off)."""
    stats = measure_interleaved([Timed(name, fn) for name, fn in calls.items()], min_rounds, max_rounds, budget_s)
    return {name: s["median_ns"] * 1e-9 for name, s in stats.items()}


class StepSuite:
    """One optimizer over one tensor: time per step for each size, dtype, option set and thread count."""

    params = (SIZES, DTYPES, OPTIONS, THREADS)
    param_names = ["size", "dtype", "option", "threads"]
    timeout = 300

    def setup(self, size, dtype, option, threads):
        use_threads(threads)
        self.param_arrays, self.grads = make_tensors([size], dtype)
        self.opt = make_optimizer(option, self.param_arrays)
        self.opt.step(self.grads)  # allocates the state: not part of a step's cost

    def teardown(self, size, dtype, option, threads):
        adam_c.set_num_threads(None)

    def time_step(self, size, dtype, option, threads):
        self.opt.step(self.grads)


class MultiTensorSuite:
    """One optimizer over 200 tensors (log-uniform sizes 1e2..1e5): one C call per step for all of them."""

    params = (DTYPES, THREADS)
    param_names = ["dtype", "threads"]
    timeout = 300

    def setup(self, dtype, threads):
        use_threads(threads)
        self.param_arrays, self.grads = make_tensors(multi_sizes(), dtype)
        self.opt = make_optimizer("adam", self.param_arrays)
        self.opt.step(self.grads)

    def teardown(self, dtype, threads):
        adam_c.set_num_threads(None)

    def time_multi(self, dtype, threads):
        self.opt.step(self.grads)


class ThroughputSuite:
    """Bandwidth of a step (adam_c's default threads) and how close it is to the memory floor, measured in the
    same process, interleaved: the floor is adam_c's probe (p += g, m += g, v += g on the same table and threads:
    28 bytes per float32 element). AMSGrad moves 36 bytes per element, so its floor is the probe's time x 36/28."""

    params = (TRACK_SIZES, DTYPES, OPTIONS)
    param_names = ["size", "dtype", "option"]
    timeout = 300

    def setup(self, size, dtype, option):
        use_threads(None)
        self.size, self.dtype, self.option = size, dtype, option
        self.param_arrays, self.grads = make_tensors([size], dtype)
        self.opt = make_optimizer(option, self.param_arrays)
        self.opt.step(self.grads)
        plan = getattr(self.opt, "_plan", None)
        if plan is None:
            raise NotImplementedError("this adam_c has no step plan to run the floor probe on")
        groups = self.opt.param_groups
        self.probe = lambda: plan.run(self.grads, groups, probe=True)
        self.step = lambda: self.opt.step(self.grads)

    def _bytes_per_step(self):
        return self.size * bytes_per_element(self.dtype, self.option)

    def track_gbps(self, size, dtype, option):
        seconds = interleaved_medians({"step": self.step})["step"]
        return self._bytes_per_step() / seconds / 1e9

    track_gbps.unit = "GB/s"

    def track_percent_of_floor(self, size, dtype, option):
        medians = interleaved_medians({"probe": self.probe, "step": self.step})
        floor = medians["probe"] * bytes_per_element(dtype, option) / bytes_per_element(dtype, "adam")
        return 100.0 * floor / medians["step"]

    track_percent_of_floor.unit = "%"


LOOP_SIZES = [26_000, 100_000, 1_000_000, 8_000_000]
LOOP_MODES = ["default", "serial", "torch fused"]


class TrainingLoopSuite:
    """The loop NumPy users run: a 256x256 float32 matmul (BLAS, whose threads keep spinning afterwards) before
    every step. Time per (matmul + step) for adam_c's default threading, adam_c serial, and torch's fused Adam."""

    params = (LOOP_SIZES, LOOP_MODES)
    param_names = ["size", "mode"]
    timeout = 300

    def setup(self, size, mode):
        self.a, self.b, self.out = loop_matrices()
        self.param_arrays, self.grads = make_tensors([size], "float32")
        if mode == "torch fused":
            try:
                import torch
            except ImportError:
                raise NotImplementedError("torch not installed") from None
            tparams = [torch.nn.Parameter(torch.from_numpy(p)) for p in self.param_arrays]
            for tp, g in zip(tparams, self.grads):
                tp.grad = torch.from_numpy(g)
            topt = torch.optim.Adam(tparams, lr=LR, fused=True)
            self.step = topt.step
        else:
            use_threads(1 if mode == "serial" else None)
            self.opt = make_optimizer("adam", self.param_arrays)
            self.step = lambda: self.opt.step(self.grads)
        self.step()

    def teardown(self, size, mode):
        adam_c.set_num_threads(None)

    def time_matmul_and_step(self, size, mode):
        np.matmul(self.a, self.b, out=self.out)
        self.step()


def loop_matrices():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((256, 256)).astype(np.float32)
    b = rng.standard_normal((256, 256)).astype(np.float32)
    return a, b, np.empty_like(a)


class TrainingLoopRatioSuite:
    """In the same loop, adam_c's default threading over adam_c serial, the two measured interleaved in one run
    (target <= 1.1: the default never loses much to serial, whatever BLAS's threads are doing)."""

    params = (LOOP_SIZES,)
    param_names = ["size"]
    timeout = 300

    def setup(self, size):
        self.a, self.b, self.out = loop_matrices()
        self.param_arrays, self.grads = make_tensors([size], "float32")
        self.default = make_optimizer("adam", self.param_arrays)
        self.serial = make_optimizer("adam", self.param_arrays)
        self.default.step(self.grads)
        self.serial.step(self.grads)

    def teardown(self, size):
        adam_c.set_num_threads(None)

    def track_default_over_serial(self, size):
        def with_threads(threads, opt):
            def call():
                adam_c.set_num_threads(threads)
                np.matmul(self.a, self.b, out=self.out)
                opt.step(self.grads)
            return call

        medians = interleaved_medians({"default": with_threads(None, self.default),
                                       "serial": with_threads(1, self.serial)})
        adam_c.set_num_threads(None)
        return medians["default"] / medians["serial"]

    track_default_over_serial.unit = "ratio"


STATE_DTYPES = ["float32", "bfloat16", "int8"]
STATE_SIZES = [1_000_000, 10_000_000]


class CompressedStateSuite:
    """The step with compressed optimizer state (state_dtype) on float32 params: time, the ratio to the float32-state
    step and percent of its own memory floor (adam_c's probe of the same layout), measured side by side."""

    params = (STATE_SIZES, STATE_DTYPES)
    param_names = ["size", "state_dtype"]
    timeout = 300

    def setup(self, size, state_dtype):
        use_threads(None)
        self.param_arrays, self.grads = make_tensors([size], "float32")
        try:
            self.opt = adam_c.Adam(self.param_arrays, lr=LR, state_dtype=state_dtype)
        except TypeError:
            raise NotImplementedError("this adam_c has no state_dtype") from None
        self.opt.step(self.grads)
        reference_params = [p.copy() for p in self.param_arrays]
        self.reference = adam_c.Adam(reference_params, lr=LR)
        self.reference.step(self.grads)
        plan, groups = self.opt._plan, self.opt.param_groups
        self.probe = lambda: plan.run(self.grads, groups, probe=True)
        self.step = lambda: self.opt.step(self.grads)
        self.fp32_step = lambda: self.reference.step(self.grads)

    def time_step(self, size, state_dtype):
        self.opt.step(self.grads)

    def track_ratio_to_fp32_state(self, size, state_dtype):
        medians = interleaved_medians({"step": self.step, "fp32": self.fp32_step})
        return medians["step"] / medians["fp32"]

    track_ratio_to_fp32_state.unit = "x"

    def track_percent_of_floor(self, size, state_dtype):
        medians = interleaved_medians({"probe": self.probe, "step": self.step})
        return 100.0 * medians["probe"] / medians["step"]

    track_percent_of_floor.unit = "%"
