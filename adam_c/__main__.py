"""python -m adam_c: trains a small NumPy MLP classifier on generated spirals with adam_c.Adam (no downloads)."""
import argparse
import os
import sys
import textwrap
import time

import numpy as np

import adam_c


def make_spirals(n_per_class, n_classes, rng):
    """Interleaved noisy spirals: not linearly separable, so the hidden layer has to learn."""
    xs, ys = [], []
    for c in range(n_classes):
        r = np.linspace(0.05, 1.0, n_per_class)
        theta = np.linspace(c * 2.5, (c + 1) * 2.5, n_per_class) + rng.normal(0, 0.35, n_per_class)
        xs.append(np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1))
        ys.append(np.full(n_per_class, c))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m adam_c", description=__doc__,
                                     epilog="Exits with status 1 if the final test accuracy is not above 0.8.")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="param dtype (bfloat16 needs ml_dtypes); the forward/backward math stays float32")
    parser.add_argument("--master-weights", action="store_true",
                        help="keep float32 master weights for bfloat16/float16 params (mixed precision)")
    parser.add_argument("--state-dtype", choices=("float32", "bfloat16", "int8"), default="float32",
                        help="how the optimizer stores exp_avg/exp_avg_sq (compressed optimizer state)")
    args = parser.parse_args(argv)
    for name, low in (("epochs", 1), ("hidden", 1), ("seed", 0)):
        if getattr(args, name) < low:
            parser.error(f"--{name} must be >= {low}, got {getattr(args, name)}")
    if not (args.lr > 0 and np.isfinite(args.lr)):
        parser.error(f"--lr must be a finite number > 0, got {args.lr}")
    if args.dtype == "bfloat16":
        try:
            import ml_dtypes  # noqa: F401
        except ImportError:
            parser.error("--dtype bfloat16 needs the ml_dtypes package (pip install 'adam_c[bfloat16]')")
    test_acc = train(args)
    if test_acc > 0.8:
        return 0
    print(f"exit status 1: test accuracy {test_acc:.3f} is not above 0.8, the demo's pass mark (more --epochs?)")
    return 1


# Environment variables through which a user sets BLAS's threads (OpenBLAS also reads OMP_NUM_THREADS): when any is
# set, the demo leaves BLAS as the user configured it.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                         "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
LIMITED_BY_DEMO = "_ADAM_C_DEMO_BLAS_LIMITED"  # marks the re-executed demo process (and stops a second re-exec)


def relaunch_with_one_blas_thread():
    """The demo's matrices are tiny: BLAS threads cost more than they give (on a busy machine, seconds more), so the
    demo runs BLAS on one thread: in-process where it can (threadpoolctl, or OpenBLAS's own call, see
    limit_blas_threads). Otherwise numpy has already loaded BLAS, which reads its thread count once at load, so
    the demo process re-executes itself with OPENBLAS_NUM_THREADS=1 (and MKL's, BLIS's) set, in that process
    only. Nothing happens when the user set any BLAS thread variable, on a single-CPU machine, or where the
    process cannot be re-executed (not POSIX)."""
    if os.name != "posix" or (os.cpu_count() or 1) < 2 or LIMITED_BY_DEMO in os.environ:
        return
    if any(name in os.environ for name in BLAS_THREAD_VARIABLES):
        return
    try:
        import threadpoolctl  # type: ignore[import-untyped,import-not-found,unused-ignore]  # noqa: F401
        return  # train() limits BLAS with it
    except ImportError:
        pass
    if set_openblas_threads(1):
        return
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", BLIS_NUM_THREADS="1",
               **{LIMITED_BY_DEMO: "1"})
    argv = list(getattr(sys, "orig_argv", [])) or [sys.executable, "-m", "adam_c", *sys.argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


def set_openblas_threads(n):
    """numpy's wheels carry OpenBLAS (as scipy-openblas): find the copy this process has loaded (Linux:
    /proc/self/maps) and set its thread count through its own C function. True if it now reports n threads."""
    import ctypes
    try:
        with open("/proc/self/maps") as f:
            paths = dict.fromkeys(line.split()[-1] for line in f
                                  if "openblas" in line.rsplit("/", 1)[-1].lower() and "/" in line)
    except OSError:
        return False
    for path in paths:
        try:  # RTLD_NOLOAD: the library already in the process, never a second copy
            lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | getattr(os, "RTLD_LAZY", 1))
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", "_64_", ""):
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if setter is None or getter is None:
                    continue
                setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                setter(n)
                if getter() == n:
                    return True
    return False


def limit_blas_threads():
    """What train() does about BLAS threads, and the note saying it."""
    if os.environ.get(LIMITED_BY_DEMO):
        return "BLAS on 1 thread (OPENBLAS_NUM_THREADS=1 for this demo)"
    if any(name in os.environ for name in BLAS_THREAD_VARIABLES):
        return "BLAS threads as your environment sets them"
    try:  # this model's matrices are tiny: BLAS threads cost more than they give, on a busy machine a lot more
        import threadpoolctl  # type: ignore[import-untyped,import-not-found,unused-ignore]  # optional
    except ImportError:
        if set_openblas_threads(1):
            return "BLAS on 1 thread (OpenBLAS)"
        return "BLAS threads as configured"
    threadpoolctl.threadpool_limits(1, user_api="blas")
    return "BLAS on 1 thread (threadpoolctl)"


def train(args):
    """Trains the demo model as the command line says, printing progress; returns the final test accuracy."""
    blas_note = limit_blas_threads()
    state_dtype = getattr(args, "state_dtype", "float32")  # callers may pass a Namespace without it
    result = train_mlp(epochs=args.epochs, hidden=args.hidden, lr=args.lr, seed=args.seed, dtype=args.dtype,
                       master_weights=args.master_weights,
                       optimizer_options={"state_dtype": state_dtype} if state_dtype != "float32" else None,
                       header_note=f"; {blas_note}")
    print(f"done: test accuracy {result['test_acc']:.3f} after {args.epochs} epochs, {result['elapsed']:.1f} s")
    for line in explain_optimizer(result["opt"], result["steps"], result["step_seconds"]):
        print(textwrap.fill(line, 100, subsequent_indent="  "))
    return result["test_acc"]


def explain_optimizer(opt, steps, step_seconds):
    """The demo's last lines: what was measured and what adam_c decided about threads, and why, in words."""
    n_params = sum(p.size for group in opt.param_groups for p in group["params"])
    mean_us = 1e6 * step_seconds / max(steps, 1)
    lines = [f"optimizer: {steps} calls of opt.step took {step_seconds:.3f} s in all, {mean_us:.1f} us per step on "
             f"average, for {n_params:,} parameters."]
    info = opt.threading_info()
    threshold = adam_c.cpu_info()["parallel_threshold"]
    if not info["steps"] or (info["serial_us"] is None and info["threads_us"] is None):
        lines.append(f"threads: none. Steps of fewer than {threshold:,} elements always run on one thread: at that "
                     "size starting threads costs more than it saves.")
        return lines
    serial, threaded, n_threads = info["serial_us"], info["threads_us"], adam_c.get_num_threads()
    timed = []
    if serial is not None:
        timed.append(f"a step on 1 thread took {serial:,.1f} us")
    if threaded is not None:
        timed.append(f"a step on {n_threads} threads {threaded:,.1f} us")
    measured = " and ".join(timed) + " (medians of the steps it timed)"
    if info["threads"] == 1:
        lines.append(f"threads: adam_c timed some steps both ways and chose 1 thread: {measured}. Threads lose "
                     f"here: waking a second thread costs more than a step of {n_params:,} parameters can save, "
                     "and on a busy machine a woken thread may also wait for a free core. Larger models gain from "
                     "threads.")
        if serial is not None and mean_us > 1.5 * serial:
            lines.append(f"The average ({mean_us:.1f} us) is above the 1-thread time because it includes those "
                         "trial steps on threads and the Python call's own cost.")
    elif info["threads"] > 1:
        lines.append(f"threads: adam_c timed some steps both ways and chose {info['threads']} threads: {measured}.")
    else:
        lines.append(f"threads: adam_c was still timing steps both ways when training ended: {measured}.")
    return lines


def train_mlp(epochs=30, hidden=128, lr=1e-2, seed=0, dtype="float32", master_weights=False, optimizer_options=None,
              after_step=None, log=print, header_note=""):
    """Trains the demo MLP; returns {"epoch_losses", "test_acc", "opt", "steps", "step_seconds", "elapsed"}.
    optimizer_options: more keyword arguments for adam_c.Adam (state_dtype=...); after_step(opt, step): called
    after every step (the quality harness uses it); log: where progress lines go (None: nowhere)."""
    log = log or (lambda *args, **kwargs: None)
    rng = np.random.default_rng(seed)
    n_classes = 5
    X, y = make_spirals(800, n_classes, rng)
    order = rng.permutation(len(X))
    X, y = X[order], y[order]
    split = int(0.8 * len(X))
    X_train, y_train, X_test, y_test = X[:split], y[:split], X[split:], y[split:]

    H = hidden
    W1 = (rng.standard_normal((2, H)) * np.sqrt(2 / 2)).astype(np.float32)
    b1 = np.zeros(H, np.float32)
    W2 = (rng.standard_normal((H, H)) * np.sqrt(2 / H)).astype(np.float32)
    b2 = np.zeros(H, np.float32)
    W3 = (rng.standard_normal((H, n_classes)) * np.sqrt(1 / H)).astype(np.float32)
    b3 = np.zeros(n_classes, np.float32)
    params = [W1, b1, W2, b2, W3, b3]
    low_precision = dtype != "float32"
    if low_precision:  # mixed precision: the params are stored in `dtype`, forward/backward run in float32
        storage = np.float16 if dtype == "float16" else __import__("ml_dtypes").bfloat16
        stored = [p.astype(storage) for p in params]
        W1, b1, W2, b2, W3, b3 = stored
    opt = adam_c.Adam([{"params": [W1, W2, W3], "weight_decay": 1e-4}, {"params": [b1, b2, b3]}], lr=lr,
                      master_weights=master_weights, **(optimizer_options or {}))
    # optimizer-owned gradient buffers, aligned with the params in group order, written with out=; float32
    # params use opt.grads, low-precision ones float32 buffers that the kernel converts (grads may be float32)
    grads = [np.zeros(p.shape, np.float32) for p in opt._params] if low_precision else opt.grads
    gW1, gW2, gW3, gb1, gb2, gb3 = grads
    if low_precision:
        stored = (W1, b1, W2, b2, W3, b3)
    state_note = f", {opt.state_dtype} optimizer state" if opt.state_dtype != "float32" else ""
    log(f"adam_c {adam_c.__version__}: {adam_c.cpu_info()['target']} kernels, "
        f"{adam_c.get_num_threads()} threads; {sum(p.size for p in params)} {dtype} parameters"
        f"{' with float32 master weights' if master_weights and low_precision else ''}{state_note}{header_note}")

    def compute_view():
        """The params the math uses: themselves, or float32 copies of the low-precision ones."""
        if not low_precision:
            return W1, b1, W2, b2, W3, b3
        return tuple(p.astype(np.float32) for p in stored)

    def forward(xb):
        W1, b1, W2, b2, W3, b3 = compute_view()
        h1 = np.maximum(xb @ W1 + b1, 0)
        h2 = np.maximum(h1 @ W2 + b2, 0)
        logits = h2 @ W3 + b3
        return h1, h2, logits

    def accuracy(xb, yb):
        return float(np.mean(forward(xb)[2].argmax(1) == yb))

    start = time.perf_counter()
    step_seconds, steps = 0.0, 0
    batch = 128
    epoch_losses = []
    for epoch in range(1, epochs + 1):
        perm = rng.permutation(len(X_train))
        total_loss = 0.0
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            xb, yb = X_train[idx], y_train[idx]
            _, _, W2c, _, W3c, _ = compute_view()
            h1, h2, logits = forward(xb)
            logits -= logits.max(1, keepdims=True)
            probs = np.exp(logits)
            probs /= probs.sum(1, keepdims=True)
            total_loss += float(-np.log(probs[np.arange(len(yb)), yb] + 1e-12).sum())
            dlogits = probs
            dlogits[np.arange(len(yb)), yb] -= 1
            dlogits /= len(yb)
            np.matmul(h2.T, dlogits, out=gW3)
            np.sum(dlogits, axis=0, out=gb3)
            dh2 = (dlogits @ W3c.T) * (h2 > 0)
            np.matmul(h1.T, dh2, out=gW2)
            np.sum(dh2, axis=0, out=gb2)
            dh1 = (dh2 @ W2c.T) * (h1 > 0)
            np.matmul(xb.T, dh1, out=gW1)
            np.sum(dh1, axis=0, out=gb1)
            t0 = time.perf_counter()
            opt.step(grads)
            step_seconds += time.perf_counter() - t0
            steps += 1
            if after_step is not None:
                after_step(opt, steps)
        epoch_losses.append(total_loss / len(X_train))
        if epoch == 1 or epoch % 5 == 0 or epoch == epochs:
            log(f"epoch {epoch:3d}  loss {total_loss / len(X_train):.4f}  "
                f"train acc {accuracy(X_train, y_train):.3f}  test acc {accuracy(X_test, y_test):.3f}  "
                f"({time.perf_counter() - start:.1f} s)")
        if epoch == int(epochs * 0.75):
            for group in opt.param_groups:  # a learning-rate schedule: decay by 10x for the last quarter
                group["lr"] *= 0.1
    return {"epoch_losses": epoch_losses, "test_acc": accuracy(X_test, y_test), "opt": opt, "steps": steps,
            "step_seconds": step_seconds, "elapsed": time.perf_counter() - start}


if __name__ == "__main__":
    relaunch_with_one_blas_thread()
    raise SystemExit(main())
