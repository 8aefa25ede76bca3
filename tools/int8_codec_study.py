"""int8_codec_study.py: measures 8-bit state codecs on real Adam states (demo MLP, char-level transformer LM).

python tools/int8_codec_study.py [--quick]: collects (m, v, step) snapshots of tensors >= 4096 elements during
short training runs with fp32 state, quantizes/dequantizes them with each candidate (256-element blocks, fp32
absmax per block), and prints relative errors of m, v and of the Adam update m/(sqrt(v)/sqrt(bc2)+eps).
"""
import argparse

import numpy as np

from adam_c import _codec, quality

EPS = 1e-8
BETA2 = 0.999


def dyn(signed, search=False, keep_nonzero=False):
    def q(x):
        codes, absmax = _codec.quantize_blockwise(x, signed, keep_nonzero=keep_nonzero)
        if search:  # the slow exact-nearest search over the map, for comparison with the arithmetic encoder
            inv = np.repeat(np.where(absmax > 0, 1 / np.where(absmax > 0, absmax, 1), 0), _codec.BLOCK)[:x.size]
            codes = _codec.nearest_code_search((x * inv.astype(np.float32)).astype(np.float32), signed)
        return _codec.dequantize(codes, absmax, signed)
    return q


def minifloat(exp_bits, man_bits, signed, keep_nonzero=False):
    """An fp8-like code per block: values scaled so the absmax is 1.0, then rounded to nearest with exp_bits of
    exponent (binades 2^0 .. 2^-(2^exp_bits - 2), then subnormals) and man_bits of mantissa."""
    emin = -(2 ** exp_bits - 2)

    def q(x):
        absmax = np.repeat(_codec.absmax_blocks(x), _codec.BLOCK)[:x.size].astype(np.float64)
        a = np.abs(x) / np.where(absmax > 0, absmax, 1)
        e = np.floor(np.log2(np.where(a > 0, a, 1.0)))
        ulp = 2.0 ** (np.maximum(e, emin) - man_bits)
        r = np.round(a / ulp) * ulp
        if keep_nonzero:
            r = np.where((a > 0) & (r == 0), 2.0 ** (emin - man_bits), r)
        out = np.minimum(r, 1.0) * absmax
        return (np.sign(x) * out if signed else out).astype(np.float32)
    return q


def sqrt_dyn(keep_nonzero=False):
    """v stored as sqrt(v) with the unsigned dynamic map (half the decades for the same range)."""
    inner = dyn(False, keep_nonzero=keep_nonzero)
    return lambda v: (inner(np.sqrt(v).astype(np.float32)).astype(np.float64) ** 2).astype(np.float32)


CANDIDATES = {
    "dynamic map, nearest by search (published)": (dyn(True, search=True), dyn(False, search=True)),
    "dynamic map, arithmetic encoder": (dyn(True), dyn(False)),
    "dynamic map, arithmetic, v never 0": (dyn(True), dyn(False, keep_nonzero=True)),
    "E4M3 m / unsigned E4M4 v": (minifloat(4, 3, True), minifloat(4, 4, False)),
    "E4M3 m / unsigned E5M3 v": (minifloat(4, 3, True), minifloat(5, 3, False)),
    "dynamic m / dynamic sqrt(v), never 0": (dyn(True), sqrt_dyn(keep_nonzero=True)),
}


def collect(quick):
    snaps = []
    at_mlp = {100, 400, 750}
    at_lm = {50, 200, 600} if not quick else {50, 200}

    def grab(source, at):
        def hook(opt, step):
            if step in at:
                for entry in opt.state.values():
                    if entry["exp_avg"].size >= _codec.MIN_QUANTIZED_SIZE:
                        snaps.append((source, step, entry["exp_avg"].reshape(-1).copy(),
                                      entry["exp_avg_sq"].reshape(-1).copy()))
        return hook
    quality.run_mlp("float32", ["float32"], epochs=30, after_step=grab("mlp", at_mlp))
    quality.run_charlm("float32", ["float32"], steps=max(at_lm), after_step=grab("charlm", at_lm))
    return snaps


def update(m, v, step):
    bc2 = np.sqrt(1 - BETA2 ** step)
    return m.astype(np.float64) / (np.sqrt(v.astype(np.float64)) / bc2 + EPS)


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    snaps = collect(args.quick)
    n_el = sum(s[2].size for s in snaps)
    print(f"{len(snaps)} snapshots, {n_el} elements; v==0 exactly in fp32: "
          f"{sum(int((s[3] == 0).sum()) for s in snaps)}")
    hdr = (f"{'codec':42s} {'m rel':>7s} {'v rel':>7s} {'upd rel':>8s} {'upd med':>8s} {'upd p99':>8s} "
           f"{'v->0':>7s} {'max|u| x':>8s}")
    print(hdr)
    rows = {}
    for name, (qm, qv) in CANDIDATES.items():
        em, ev, eu, med, p99, zeroed, blow = [], [], [], [], [], 0, 0.0
        for source, step, m, v in snaps:
            mq, vq = qm(m), qv(v)
            u, uq = update(m, v, step), update(mq, vq, step)
            em.append(rel(mq, m))
            ev.append(rel(vq, v))
            eu.append(rel(uq, u))
            e = np.abs(uq - u) / np.maximum(np.abs(u), 1e-30)
            e = e[np.abs(u) > 0]
            med.append(np.median(e))
            p99.append(np.quantile(e, 0.99))
            zeroed += int(((v > 0) & (vq == 0)).sum())
            blow = max(blow, float(np.abs(uq).max() / np.abs(u).max()))
        rows[name] = dict(m=np.mean(em), v=np.mean(ev), u=np.mean(eu), med=np.mean(med), p99=np.mean(p99),
                          zeroed=zeroed, blow=blow)
        print(f"{name:42s} {np.mean(em):7.4f} {np.mean(ev):7.4f} {np.mean(eu):8.4f} {np.mean(med):8.4f} "
              f"{np.mean(p99):8.3f} {zeroed:7d} {blow:8.2f}")
    return rows


if __name__ == "__main__":
    main()
