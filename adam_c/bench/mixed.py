"""mixed.py: mixed precision at memory speed, adam_c against torch's recipes side by side (bench --workloads mixed)."""
import gc

import numpy as np

import adam_c

from .harness import Timed, fit, measure_interleaved, optional_module

N_TENSORS, TENSOR_ELEMENTS = 8, 4_000_000  # 3.2e7 elements: RAM-bound
LR = 1e-3
# Loss scale 1 and a clip threshold no norm reaches: every pass (unscale multiply, norm, clip multiply, inf
# check) still runs, and repeated steps do not shrink the grads (torch unscales and clips them in place).
SCALE, MAX_NORM = 1.0, 1e30


def _bf16():
    ml_dtypes = optional_module("ml_dtypes")
    return None if ml_dtypes is None else np.dtype(ml_dtypes.bfloat16)


def _arrays(dtype, rng, scale=1.0):
    return [(rng.standard_normal(TENSOR_ELEMENTS) * scale).astype(np.float32).astype(dtype)
            for _ in range(N_TENSORS)]


# ---------------------------------------------------------------- the variants: (name, bytes/el, builder) pairs

def fp32_fused_around(torch):
    """fp32: loss-scale unscale + inf check + global-norm clip + step."""
    rng = np.random.default_rng(0)
    params, grads = _arrays(np.float32, rng), _arrays(np.float32, rng, 1e-3)
    opt = adam_c.Adam(params, lr=LR)

    def ours():
        opt.step(grads, grad_scale=SCALE, max_grad_norm=MAX_NORM)

    plain_params = [p.copy() for p in params]
    plain = adam_c.Adam(plain_params, lr=LR)
    out = [("adam_c: step(grad_scale=, max_grad_norm=)", 4 + 28, ours),
           ("  (for reference) adam_c: plain step", 28, lambda: plain.step(grads))]
    if torch is not None:
        tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
        for tp, g in zip(tparams, grads):
            tp.grad = torch.from_numpy(g.copy())
        topt = torch.optim.Adam(tparams, lr=LR, fused=True)
        scaler = torch.amp.GradScaler("cpu", init_scale=SCALE, growth_interval=10**9)
        scaler.scale(torch.ones(()))  # what a training loop's scaler.scale(loss) does first: creates the scale

        def theirs():
            scaler.unscale_(topt)
            torch.nn.utils.clip_grad_norm_(tparams, MAX_NORM)
            scaler.step(topt)
            scaler.update()

        # unscale_ reads+writes g (8) and checks it, the norm reads g (4), the clip multiply reads+writes (8)
        out.append(("torch: GradScaler.unscale_ + clip_grad_norm_ + fused step", 8 + 4 + 8 + 28, theirs))
        out.append(("  (for reference) torch: fused step alone", 28, topt.step))
    return out


def master_bf16(torch):
    """fp32 master weights, bf16 grads in, bf16 params out."""
    bf16 = _bf16()
    rng = np.random.default_rng(1)
    params, grads = _arrays(bf16, rng), _arrays(bf16, rng, 1e-3)
    opt = adam_c.Adam(params, lr=LR, master_weights=True)
    # reads master 4, grad 2, m 4, v 4; writes master 4, m 4, v 4, param 2
    out = [("adam_c: bf16 params + fp32 master, bf16 grads", 28, lambda: opt.step(grads))]
    if torch is not None:
        tparams = [torch.from_numpy(p.view(np.uint16).copy()).view(torch.bfloat16) for p in params]
        tgrads = [torch.from_numpy(g.view(np.uint16).copy()).view(torch.bfloat16) for g in grads]
        masters = [torch.nn.Parameter(p.float()) for p in tparams]
        for mp in masters:
            mp.grad = torch.zeros_like(mp)
        topt = torch.optim.Adam(masters, lr=LR, fused=True)
        master_grads = [mp.grad for mp in masters]

        def theirs():
            torch._foreach_copy_(master_grads, tgrads)   # bf16 grads -> fp32 master grads
            topt.step()
            torch._foreach_copy_(tparams, list(masters))  # fp32 master -> bf16 params (round to nearest even)

        out.append(("torch: grads to fp32 + fused step on master + copy back", (2 + 4) + 28 + (4 + 2), theirs))
    return out


def all_bf16(torch):
    """bf16 params, grads and state, no master: what torch's bf16 fused step keeps (its state follows the param)."""
    bf16 = _bf16()
    rng = np.random.default_rng(2)
    params, grads = _arrays(bf16, rng), _arrays(bf16, rng, 1e-3)
    opt = adam_c.Adam(params, lr=LR, state_dtype="bfloat16")
    fp32_state_params = [p.copy() for p in params]
    fp32_state = adam_c.Adam(fp32_state_params, lr=LR)
    # reads p 2, g 2, m 2, v 2; writes p 2, m 2, v 2 (bf16 state); with fp32 state m and v are 4 bytes
    out = [("adam_c: bf16 params+grads, bf16 state", 14, lambda: opt.step(grads)),
           ("  (for reference) adam_c: bf16 params+grads, fp32 state", 22, lambda: fp32_state.step(grads))]
    if torch is not None:
        tparams = [torch.nn.Parameter(torch.from_numpy(p.view(np.uint16).copy()).view(torch.bfloat16))
                   for p in params]
        for tp, g in zip(tparams, grads):
            tp.grad = torch.from_numpy(g.view(np.uint16).copy()).view(torch.bfloat16)
        topt = torch.optim.Adam(tparams, lr=LR, fused=True)
        out.append(("torch: bf16 fused step (bf16 state)", 14, topt.step))
    return out


VARIANTS = [("fp32: unscale + inf check + global-norm clip + step", fp32_fused_around),
            ("fp32 master, bf16 grads in, bf16 params out", master_bf16),
            ("all bf16, no master", all_bf16)]


PROBE = "memory probe (28 B/el)"


def probe_call():
    """The memory floor: adam_c's 4-read/3-write probe over an fp32 table of the same size (28 B/el). Timed in
    each variant's group, so a variant's % of floor compares two numbers taken at the same time (this host's
    memory bandwidth moves by tens of percent from one minute to the next)."""
    rng = np.random.default_rng(3)
    params, grads = _arrays(np.float32, rng), _arrays(np.float32, rng, 1e-3)
    opt = adam_c.Adam(params, lr=LR)
    opt.step(grads)
    plan, groups = opt._plan, opt.param_groups
    return lambda: plan.run(grads, groups, True)


def part_label(title):
    return f"mixed: {title}"


def parts(settings):
    """(label, estimated seconds) of each variant: its entries and the probe timed for one budget, the set-up."""
    return [(part_label(title), 1.4 * settings.budget_s + 3.0) for title, _ in VARIANTS]


def run_mixed(settings, skipped, threads, done=lambda label: None):
    """Measures every variant (adam_c and torch interleaved); prints a table; returns records."""
    torch = None if "torch fused" in skipped else optional_module("torch")
    n = N_TENSORS * TENSOR_ELEMENTS
    print(f"\nmixed precision | {N_TENSORS} tensors x {TENSOR_ELEMENTS:,} = {n:,} elements | {threads} threads"
          f"{'' if torch is not None else ' | torch skipped'}")
    if _bf16() is None:
        print("  ml_dtypes is not installed: only the fp32 variant runs")
    probe = probe_call()
    print("  a variant's floor = its bytes/el at the speed of the memory probe, timed in the same group")
    records = []
    for title, build in VARIANTS:
        if build is not fp32_fused_around and _bf16() is None:
            continue
        entries = build(torch)
        timed = [Timed(name, call) for name, _, call in entries] + [Timed(PROBE, probe)]
        stats = measure_interleaved(timed, settings.min_rounds, settings.max_rounds, settings.budget_s)
        ours = stats[entries[0][0]]["median_ns"]
        per_byte = stats[PROBE]["median_ns"] / (n * 28)
        print(f"  {title} (the probe: {per_byte * 28:.3f} ns/el = {1 / per_byte:.1f} GB/s)")
        print(f"    {'implementation':57s} {'ns/el':>6s} {'IQR/2':>6s} {'B/el':>4s} {'% floor':>7s} {'adam_c/this':>11s}")
        for name, nbytes, _ in entries:
            s = stats[name]
            t = s["median_ns"]
            floor = nbytes * per_byte * n
            rec = {"workload": "mixed", "variant": title, "implementation": name, "n_elements": n,
                   "bytes_per_element": nbytes, "ns_per_element": t / n, **s,
                   "percent_of_floor": 100.0 * floor / t, "adam_c_over_this": ours / t}
            records.append(rec)
            spread = (s["q3_ns"] - s["q1_ns"]) / 2 / t * 100
            print(f"    {name:57s} {fit(t / n, 6)} {fit(spread, 5, 1)}% {nbytes:4d} "
                  f"{fit(rec['percent_of_floor'], 6, 0)}% {fit(rec['adam_c_over_this'], 11, 2)}")
        del entries, timed
        gc.collect()
        done(part_label(title))
    return records
