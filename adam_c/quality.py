"""quality.py: training quality with compressed optimizer state: fp32 vs bfloat16 vs int8 state on two models.

python -m adam_c.quality [--plot out.png]: trains (a) the demo MLP (NumPy) and (b) a small character-level
transformer language model (torch, on Python's own pydoc_data topics text: no downloads) with the same seeds and
each state format, and reports the final losses against fp32's (targets: bf16 within 1%, int8 within 2%).
When the installed adam_c has no state_dtype option, the compressed formats are emulated exactly by rounding the
fp32 state after every step with adam_c._codec (what the kernel stores is what the next step loads).
"""
import argparse
import sys
import time

import numpy as np

import adam_c
from adam_c import _codec

STATE_DTYPES = ("float32", "bfloat16", "int8")
TARGETS = {"bfloat16": 0.01, "int8": 0.02}   # allowed relative excess of the final loss over fp32's
STATE_KEYS_SIGNED = {"exp_avg": True, "exp_avg_sq": False, "max_exp_avg_sq": False}


def native_state_dtypes():
    """The state formats adam_c.Adam accepts natively (state_dtype=...); the others get emulated."""
    probe = np.zeros(1, np.float32)
    ok = ["float32"]
    for dtype in STATE_DTYPES[1:]:
        try:
            adam_c.Adam([probe], state_dtype=dtype)
            ok.append(dtype)
        except TypeError:
            pass
    return ok


def round_state(state, dtype):
    """Emulation: replace fp32 state arrays in place by what `dtype` state would store (and load back), with
    the kernel's rules (exp_avg_sq and max_exp_avg_sq never round a nonzero value to 0)."""
    for entry in state.values():
        for key, signed in STATE_KEYS_SIGNED.items():
            arr = entry.get(key)
            if arr is None or arr.dtype != np.float32:
                continue
            flat = arr.reshape(-1)
            if dtype == "bfloat16":
                flat[...] = _codec.bf16_bits_to_f32(_codec.bf16_round_bits(flat))
            elif dtype == "int8" and flat.size >= _codec.MIN_QUANTIZED_SIZE:
                codes, absmax = _codec.quantize_blockwise(flat, signed, keep_nonzero=not signed)
                flat[...] = _codec.dequantize(codes, absmax, signed)


def state_setup(dtype, native):
    """(optimizer keyword arguments, after-step hook) that give `dtype` state, natively or emulated."""
    if dtype == "float32":
        return {}, None
    if dtype in native:
        return {"state_dtype": dtype}, None
    return {}, lambda opt, step: round_state(opt.state, dtype)


# ---------------------------------------------------------------- model (a): the demo MLP

def run_mlp(dtype, native, epochs=30, seed=0, after_step=None):
    from .__main__ import train_mlp
    options, hook = state_setup(dtype, native)

    def hooks(opt, step):
        for h in (hook, after_step):
            if h:
                h(opt, step)
    result = train_mlp(epochs=epochs, seed=seed, optimizer_options=options, after_step=hooks, log=None)
    return {"curve": result["epoch_losses"], "final": result["epoch_losses"][-1], "test_acc": result["test_acc"],
            "x_label": "epoch"}


# ---------------------------------------------------------------- model (b): a character-level transformer

def load_text():
    from pydoc_data import topics
    return "".join(topics.topics[k] for k in sorted(topics.topics))


def build_charlm(vocab, d_model=64, n_layers=2, n_heads=4, context=64):
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(d_model)
            self.attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
            self.ln2 = nn.LayerNorm(d_model)
            self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

        def forward(self, x, mask):
            h = self.ln1(x)
            x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
            return x + self.mlp(self.ln2(x))

    class CharLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(vocab, d_model)
            self.pos = nn.Embedding(context, d_model)
            self.blocks = nn.ModuleList(Block() for _ in range(n_layers))
            self.ln = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, vocab)
            self.register_buffer("mask", torch.triu(torch.full((context, context), float("-inf")), 1))

        def forward(self, idx):
            t = idx.shape[1]
            x = self.tok(idx) + self.pos(torch.arange(t))
            for block in self.blocks:
                x = block(x, self.mask[:t, :t])
            return self.head(self.ln(x))

    return CharLM()


def run_charlm(dtype, native, steps=600, seed=0, batch=32, context=64, lr=3e-3, after_step=None):
    import torch
    import torch.nn.functional as F
    text = load_text()
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    split = int(0.9 * len(data))
    train, held = data[:split], data[split:]
    torch.manual_seed(seed)
    model = build_charlm(len(chars), context=context)
    params = [p for p in model.parameters()]
    options, hook = state_setup(dtype, native)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = adam_c.AdamW([{"params": [p.detach().numpy() for p in decay]},
                        {"params": [p.detach().numpy() for p in no_decay], "weight_decay": 0.0}],
                       lr=lr, weight_decay=0.01, **options)
    order = decay + no_decay
    gen = torch.Generator().manual_seed(seed + 1)

    def batch_from(source, g):
        starts = torch.randint(0, len(source) - context - 1, (batch,), generator=g)
        x = torch.stack([source[s:s + context] for s in starts])
        y = torch.stack([source[s + 1:s + context + 1] for s in starts])
        return x, y

    eval_gen = torch.Generator().manual_seed(12345)
    eval_batches = [batch_from(held, eval_gen) for _ in range(8)]

    def held_loss():
        with torch.no_grad():
            return float(np.mean([F.cross_entropy(model(x).reshape(-1, len(chars)), y.reshape(-1)).item()
                                  for x, y in eval_batches]))

    curve = []
    running = None
    for step in range(1, steps + 1):
        if step == int(0.75 * steps):
            for group in opt.param_groups:
                group["lr"] *= 0.1
        x, y = batch_from(train, gen)
        loss = F.cross_entropy(model(x).reshape(-1, len(chars)), y.reshape(-1))
        for p in params:
            p.grad = None
        loss.backward()
        opt.step([p.grad.numpy() for p in order])
        if hook:
            hook(opt, step)
        if after_step:
            after_step(opt, step)
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 25 == 0:
            curve.append(running)
    return {"curve": curve, "final": held_loss(), "x_label": "step / 25"}


# ---------------------------------------------------------------- report

def run_all(models=("mlp", "charlm"), quick=False, log=print):
    """{model: {state dtype: result}} with the same seeds for every state format."""
    native = native_state_dtypes()
    out = {}
    for model in models:
        out[model] = {}
        for dtype in STATE_DTYPES:
            start = time.perf_counter()
            if model == "mlp":
                r = run_mlp(dtype, native, epochs=10 if quick else 30)
            else:
                r = run_charlm(dtype, native, steps=300 if quick else 600)
            r["seconds"] = time.perf_counter() - start
            r["how"] = "native" if dtype in native else "emulated"
            out[model][dtype] = r
            log(f"  {model:7s} {dtype:9s} final loss {r['final']:.4f}  ({r['how']}, {r['seconds']:.0f} s)")
    return out


def summarize(results, log=print):
    """Prints the table; returns True if every compressed format met its target."""
    ok = True
    log(f"{'model':8s} {'state':9s} {'final loss':>10s} {'vs fp32':>8s} {'target':>7s}")
    for model, by_dtype in results.items():
        base = by_dtype["float32"]["final"]
        for dtype, r in by_dtype.items():
            rel = r["final"] / base - 1
            target = TARGETS.get(dtype)
            verdict = "" if target is None else ("ok" if rel <= target else "MISSED")
            ok &= target is None or rel <= target
            log(f"{model:8s} {dtype:9s} {r['final']:10.4f} {100 * rel:+7.2f}% "
                f"{'' if target is None else f'{100 * target:.0f}%':>7s} {verdict} ({r['how']})")
    return ok


def plot(results, path):
    import matplotlib  # type: ignore[import-not-found,unused-ignore]  # optional: the bench extra
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4))
    axes = np.atleast_1d(axes)
    for ax, (model, by_dtype) in zip(axes, results.items()):
        for dtype, r in by_dtype.items():
            ax.plot(r["curve"], label=f"{dtype} state ({r['final']:.4f})")
        ax.set_title(model)
        ax.set_xlabel(next(iter(by_dtype.values()))["x_label"])
        ax.set_ylabel("training loss")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m adam_c.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--plot", metavar="OUT.png")
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--models", nargs="+", choices=("mlp", "charlm"), default=["mlp", "charlm"])
    args = parser.parse_args(argv)
    import importlib.util  # say what is missing before minutes of training, not after
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib, which is not installed (pip install matplotlib)")
    if "charlm" in args.models and importlib.util.find_spec("torch") is None:
        parser.error("the charlm model needs torch (pip install torch), or run --models mlp")
    if "charlm" in args.models:  # one thread: the model is small, the machine may be shared; same for every format
        import torch
        torch.set_num_threads(1)
    try:
        import threadpoolctl  # type: ignore[import-untyped,import-not-found,unused-ignore]  # optional
        threadpoolctl.threadpool_limits(1, user_api="blas")
    except ImportError:
        pass
    print(f"adam_c {adam_c.__version__}, {adam_c.cpu_info()['target']} kernels")
    results = run_all(args.models, args.quick)
    ok = summarize(results)
    if args.plot:
        plot(results, args.plot)
        print(f"plot written to {args.plot}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
