"""check_demo.py: compares a consumer's output (demo.c's, docs/examples/c/quickstart.c's, or the Cython extension's)
bit for bit with adam_c.Adam.

Usage: python check_demo.py STEPS OUTPUT_FILE       (demo.c's stdout: "version X" then "p<k> <%a values>")
       python check_demo.py STEPS --cython MODULE_DIR (imports demo_ext from MODULE_DIR and runs it)
       python check_demo.py --quickstart OUTPUT_FILE  (quickstart.c's stdout: a header, "p[i] = %.9g" lines)
Exits 1 with the first difference. Run it with the python whose adam_c the consumer was built against.
"""
import sys

import numpy as np

import adam_c

SIZES = (37, 11, 5)
DTYPES = (np.float32, np.float64, np.float32)


def initial_params():
    return [((np.arange(n) % 5 - 2.0) * 0.25 + k * 0.125).astype(dt) for k, (n, dt) in enumerate(zip(SIZES, DTYPES))]


def grads(t):
    """demo.c's grad_value: small integers / 8, exactly representable in both dtypes."""
    return [(((np.arange(n) * 7 + k * 3) % 17 + t * 13 % 17 - 16) / 8.0).astype(dt)
            for k, (n, dt) in enumerate(zip(SIZES, DTYPES))]


def expected(steps):
    params = initial_params()
    opt = adam_c.Adam([{"params": params[:2], "lr": 1e-2, "weight_decay": 0.01, "amsgrad": True},
                       {"params": params[2:], "lr": 3e-3, "betas": (0.8, 0.999), "weight_decay": 0.1,
                        "decoupled_weight_decay": True, "maximize": True}])
    for t in range(1, steps + 1):
        opt.step(grads(t))
    return params


def parse_demo_output(text):
    lines = text.strip().splitlines()
    if not lines or not lines[0].startswith("version "):
        sys.exit(f"check_demo: no 'version' line in the consumer's output: {text[:200]!r}")
    version = lines[0].split()[1]
    if version != adam_c.__version__:
        sys.exit(f"check_demo: the consumer ran C library {version}, adam_c is {adam_c.__version__}")
    params = []
    for k, (line, dt) in enumerate(zip(lines[1:], DTYPES)):
        name, *values = line.split()
        if name != f"p{k}":
            sys.exit(f"check_demo: expected line p{k}, got {name!r}")
        params.append(np.array([float.fromhex(v) for v in values]).astype(dt))
    return params


def compare(got, want, what, start=None):
    if len(got) != len(want):
        sys.exit(f"check_demo: {what}: {len(got)} params, expected {len(want)}")
    for k, (g, w) in enumerate(zip(got, want)):
        if g.dtype != w.dtype or g.shape != w.shape:
            sys.exit(f"check_demo: {what}: p{k} is {g.dtype}{g.shape}, expected {w.dtype}{w.shape}")
        same = g.view(np.uint8) == w.view(np.uint8)
        if not same.all():
            i = int(np.flatnonzero(~same.reshape(g.size, -1).all(axis=1))[0])
            sys.exit(f"check_demo: {what}: p{k}[{i}] = {g[i]!r}, adam_c.Adam gives {w[i]!r}")
    # not vacuous: the steps moved every param away from its start
    for k, (w, first) in enumerate(zip(want, start if start is not None else initial_params())):
        if np.any(w == first):
            sys.exit(f"check_demo: p{k} did not move in {what}: the comparison would prove nothing")
    print(f"check_demo: {what}: {sum(w.size for w in want)} values bit-identical to adam_c.Adam "
          f"(C library {adam_c.__version__})")


def quickstart_expected():
    """quickstart.c's problem: 100 steps of Adam(lr=0.1) on sum((p - 3)^2) / 2 from p = (0, 1, -2, 5), float32."""
    p = np.array([0.0, 1.0, -2.0, 5.0], np.float32)
    opt = adam_c.Adam([p], lr=0.1)
    for _ in range(100):
        opt.step([p - np.float32(3.0)])
    return p


def check_quickstart(path):
    with open(path) as f:
        lines = f.read().strip().splitlines()
    if not lines or not lines[0].startswith(f"adam_c {adam_c.__version__} ("):
        sys.exit(f"check_demo: {path}: no 'adam_c {adam_c.__version__} (...' header line: {lines[:1]!r}")
    want = quickstart_expected()
    values = [line.split(" = ") for line in lines[1:] if line.startswith("p[")]
    got = np.array([float(v) for _, v in values], np.float32)  # %.9g: each float32 exactly
    compare([got], [want], f"quickstart {path}", [np.array([0.0, 1.0, -2.0, 5.0], np.float32)])
    if lines[-1] != "all params reached 3":
        sys.exit(f"check_demo: {path}: last line {lines[-1]!r}")


def main(argv):
    if argv[1] == "--quickstart":
        check_quickstart(argv[2])
        return
    steps = int(argv[1])
    want = expected(steps)
    if argv[2] == "--cython":
        sys.path.insert(0, argv[3])
        import demo_ext
        got = [p.copy() for p in initial_params()]
        demo_ext.run(got, [grads(t) for t in range(1, steps + 1)])
        compare(got, want, "Cython extension (cimport adam_c.capi)")
    else:
        with open(argv[2]) as f:
            compare(parse_demo_output(f.read()), want, f"C program {argv[2]}")


if __name__ == "__main__":
    main(sys.argv)
