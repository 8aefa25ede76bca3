"""README.md's Python examples run as printed (a newcomer copies them first), given the names a fragment assumes."""
import contextlib
import io
import math
import pathlib
import re

import numpy as np
import pytest

import adam_c

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def python_blocks():
    text = README.read_text(encoding="utf-8")
    return [m.group(1) for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M)]


def torch_context():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 784, generator=gen), torch.randint(0, 10, (16,), generator=gen)) for _ in range(3)]
    return {"loader": batches}


def mixed_context():
    rng = np.random.default_rng(0)
    evaluated = []
    return {"gW": (rng.standard_normal((1024, 1024)) * 1e-3).astype(np.float32), "evaluate": evaluated.append,
            "_evaluated": evaluated}


# Each example, recognised by a line it contains: the names it takes from its surroundings in the README, and what
# shows that it did its job. An example without an entry fails the test below, so a new one cannot go unchecked.
EXAMPLES = {
    "opt.step([gW, gb])": (dict, lambda ns: math.isfinite(float((ns["err"] ** 2).mean())) and ns["opt"].state),
    "cosine_with_warmup(": (lambda: {"adam_c": adam_c, "params": [np.zeros(5, np.float32)]},
                            lambda ns: type(ns["opt"]).__name__ == "AdamW"),
    "opt = adam_c.torch.AdamW(model.parameters()": (torch_context, lambda ns: len(ns["opt"].state) == 4),
    "opt.ema_weights()": (mixed_context, lambda ns: ns["opt"].last_grad_norm > 0 and len(ns["_evaluated"]) == 1),
}
# Needs several processes under torchrun: tests/torch_dropin/test_torch_dropin_distributed.py runs the same calls.
NOT_RUN_HERE = ("ZeroRedundancyOptimizer",)


def test_every_example_is_checked():
    blocks = python_blocks()
    assert len(blocks) >= 4
    for block in blocks:
        matches = [key for key in EXAMPLES if key in block] + [key for key in NOT_RUN_HERE if key in block]
        assert len(matches) == 1, f"README example without exactly one entry in EXAMPLES/NOT_RUN_HERE:\n{block}"


@pytest.mark.parametrize("marker", list(EXAMPLES))
def test_readme_example_runs(marker):
    blocks = [b for b in python_blocks() if marker in b]
    assert len(blocks) == 1, f"no README example contains {marker!r} any more"
    make_context, did_its_job = EXAMPLES[marker]
    namespace = make_context()
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(blocks[0], f"README.md example ({marker})", "exec"), namespace)
    assert did_its_job(namespace)
