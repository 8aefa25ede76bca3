"""fingerprint.py: one SHA-256 of a fixed set of optimizer steps per SIMD target, checked equal for 1, 2, 3 threads.

A refactoring of the C core must not change a single result bit on any target. This runs the same fixed problems
(every param dtype, state format and option the kernels take, odd lengths, multi-tensor steps above the parallel
threshold) through the public Python API on every target this CPU supports and every thread count in THREADS,
hashes params, state, EMA and the step results, and prints one hash per target. tests/kernels/test_fingerprint.py keeps
the recorded hashes (tests/kernels/fingerprint.json) true.

    python tools/fingerprint.py            # print {"target": "sha256", ...} as JSON
    python tools/fingerprint.py --write    # record it in tests/kernels/fingerprint.json (only after a deliberate change)
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np

import adam_c
from adam_c import _core
from adam_c._validation import BFLOAT16

THREADS = (1, 2, 3)
STEPS = 3
JSON_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests", "kernels", "fingerprint.json")

# Sizes: odd lengths around the 256-element tile / int8 block and the vector widths, and tensors whose total is
# above the parallel threshold (16384 float32 elements) so the threaded path runs under set_threading("fixed").
SMALL = [1, 7, 255, 257, 1031]
LARGE = [40003, 5001, 3, 4096]

# (name, param dtype, sizes, optimizer keyword arguments, step keyword arguments)
CONFIGS = [
    ("f32 adam", np.float32, SMALL, {}, {}),
    ("f32 adam large", np.float32, LARGE, {}, {}),
    ("f64 adam large", np.float64, LARGE, {}, {}),
    ("f32 amsgrad maximize l2", np.float32, LARGE, dict(amsgrad=True, maximize=True, weight_decay=0.1), {}),
    ("f64 amsgrad l2", np.float64, SMALL, dict(amsgrad=True, weight_decay=0.05), {}),
    ("f32 adamw", np.float32, LARGE, dict(weight_decay=0.01, decoupled_weight_decay=True), {}),
    ("f32 betas lerp large", np.float32, SMALL, dict(betas=(0.3, 0.9)), {}),
    ("f32 grad_scale", np.float32, LARGE, {}, dict(grad_scale=1024.0)),
    ("f32 grad_scale npot", np.float32, SMALL, {}, dict(grad_scale=3.0)),
    ("f32 clip", np.float32, LARGE, {}, dict(max_grad_norm=0.5)),
    ("f64 clip scale", np.float64, LARGE, {}, dict(max_grad_norm=0.25, grad_scale=512.0)),
    ("f32 skip_nonfinite", np.float32, SMALL, {}, dict(skip_nonfinite=True)),
    ("f32 ema", np.float32, LARGE, dict(ema_decay=0.9), {}),
    ("f64 ema amsgrad", np.float64, SMALL, dict(ema_decay=0.99, amsgrad=True), {}),
    ("f16 params", np.float16, LARGE, {}, {}),
    ("f16 master amsgrad", np.float16, LARGE, dict(master_weights=True, amsgrad=True), {}),
    ("bf16 params", BFLOAT16, LARGE, {}, {}),
    ("bf16 master ema", BFLOAT16, LARGE, dict(master_weights=True, ema_decay=0.95), {}),
    ("bf16 stochastic", BFLOAT16, LARGE, dict(rounding="stochastic", seed=7), {}),
    ("bf16 stochastic clip", BFLOAT16, SMALL, dict(rounding="stochastic", seed=3), dict(max_grad_norm=1.0)),
    ("f32 bf16 state", np.float32, LARGE, dict(state_dtype="bfloat16"), {}),
    ("f32 bf16 state sr amsgrad", np.float32, LARGE,
     dict(state_dtype="bfloat16", state_rounding="stochastic", amsgrad=True, seed=11), {}),
    ("bf16 bf16 state", BFLOAT16, LARGE, dict(state_dtype="bfloat16"), {}),
    ("f32 int8 state", np.float32, LARGE, dict(state_dtype="int8"), {}),
    ("f32 int8 state amsgrad ema", np.float32, LARGE, dict(state_dtype="int8", amsgrad=True, ema_decay=0.9), {}),
    ("f16 int8 state master", np.float16, LARGE, dict(state_dtype="int8", master_weights=True), {}),
    ("bf16 int8 state scale clip", BFLOAT16, LARGE, dict(state_dtype="int8"),
     dict(grad_scale=256.0, max_grad_norm=2.0)),
]


def _data(rng, n, dtype, step):
    """Params and grads with a wide spread of magnitudes, float32 denormals and exact zeros among them."""
    scale = np.float32(10.0) ** rng.integers(-8, 2, n).astype(np.float32)
    g = (rng.standard_normal(n).astype(np.float32) * scale).astype(np.float32)
    if n > 8:
        g[:: max(n // 7, 1)] = np.float32(3e-39)  # denormal: the bfloat16 conversions' special case
        g[1] = 0.0
    g = g * np.float32(1 + step)
    return g.astype(dtype)


def _hash_array(h, a):
    a = np.ascontiguousarray(a)
    h.update(str(a.dtype).encode() + str(a.shape).encode())
    h.update(a.view(np.uint8).tobytes())


def _run_config(h, name, dtype, sizes, opt_kw, step_kw):
    rng = np.random.default_rng(sum(map(ord, name)))  # fixed per config, independent of PYTHONHASHSEED
    params = [(rng.standard_normal(n).astype(np.float32) * np.float32(0.5)).astype(dtype) for n in sizes]
    opt = adam_c.Adam(params, lr=1e-2, **opt_kw)
    for step in range(STEPS):
        grads = [_data(rng, n, dtype, step) for n in sizes]
        if name.endswith("skip_nonfinite") and step == 1:
            grads[2][3] = np.inf  # this step is skipped, nothing changes
        opt.step(grads, **step_kw)
        h.update(f"{name} {step} {opt.last_step_skipped} {opt.last_grad_norm!r}".encode())
    for p in params:
        _hash_array(h, p)
    for index, entry in sorted(opt.state.items()):
        for key in sorted(entry):
            value = entry[key]
            h.update(f"{index} {key}".encode())
            if isinstance(value, np.ndarray):
                _hash_array(h, value)
            else:
                h.update(repr(value).encode())
    if opt_kw.get("ema_decay") is not None:
        with opt.ema_weights():
            for p in params:
                _hash_array(h, p)


def _run_functional(h):
    """adam_c.adam_step on single buffers (float32/float64, odd lengths, amsgrad and both weight decays)."""
    rng = np.random.default_rng(20)
    for dtype in (np.float32, np.float64):
        for n in (1, 31, 257, 40001):
            for amsgrad, wd, decoupled, maximize in ((False, 0.0, False, False), (True, 0.1, False, True),
                                                     (False, 0.05, True, False)):
                p = rng.standard_normal(n).astype(dtype)
                m, v, vmax = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
                for step in range(1, STEPS + 1):
                    g = _data(rng, n, np.float32, step).astype(dtype)
                    adam_c.adam_step(p, g, m, v, step=step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                                     weight_decay=wd, amsgrad=amsgrad, max_exp_avg_sq=vmax if amsgrad else None,
                                     maximize=maximize, decoupled_weight_decay=decoupled)
                for a in (p, m, v, vmax):
                    _hash_array(h, a)


def fingerprint_once():
    """The hash of every config under the current target and thread count."""
    h = hashlib.sha256()
    for config in CONFIGS:
        _run_config(h, *config)
    _run_functional(h)
    return h.hexdigest()


def fingerprint(targets=None):
    """{target: sha256} for `targets` (default: every supported one); raises if thread counts disagree."""
    before = adam_c.cpu_info()
    targets = targets or before["supported_targets"]
    out = {}
    try:
        adam_c.set_threading("fixed")  # threads for every step above the threshold: the threaded path runs
        for target in targets:
            adam_c.set_target(target)
            hashes = {}
            for threads in THREADS:
                adam_c.set_num_threads(threads)
                hashes[threads] = fingerprint_once()
            if len(set(hashes.values())) != 1:
                raise AssertionError(f"target {target}: thread counts disagree: {hashes}")
            out[target] = hashes[THREADS[0]]
    finally:
        adam_c.set_target(before["target"])
        adam_c.set_num_threads(None)
        adam_c.set_threading(before["threading"])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help=f"record the result in {os.path.normpath(JSON_PATH)}")
    args = ap.parse_args(argv)
    result = fingerprint()
    print(json.dumps(result, indent=2))
    if args.write:
        recorded = {}
        if os.path.exists(JSON_PATH):
            with open(JSON_PATH) as f:
                recorded = json.load(f)
        recorded.update(result)
        with open(JSON_PATH, "w") as f:
            json.dump(dict(sorted(recorded.items())), f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
