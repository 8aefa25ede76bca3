"""bfloat16 state under torch.set_flush_denormal(True): the same bits on every SIMD target."""
import pytest

pytest.importorskip("torch")  # the test's fresh interpreter imports torch


def test_bfloat16_state_same_bits_on_every_target_under_flush_denormal(tmp_path):
    """After torch.set_flush_denormal(True) (FTZ + DAZ), a bfloat16 denormal carried through AMSGrad's max has the
    same bits on every target (the AVX512-BF16 store tested for denormals with vfpclassps, which follows DAZ, and
    flushed them). A fresh interpreter: the floating-point mode would leak into other tests."""
    import subprocess
    import sys
    import textwrap
    code = textwrap.dedent("""
        import numpy as np, torch, adam_c
        torch.set_flush_denormal(True)
        out = {}
        for target in adam_c.cpu_info()["supported_targets"]:
            adam_c.set_target(target)
            p = np.ones(64, np.float32)
            opt = adam_c.Adam([p], amsgrad=True, state_dtype="bfloat16")
            opt.step([np.full(64, 1e-3, np.float32)])
            opt.state[0]["exp_avg_sq"][...] = 0
            opt.state[0]["max_exp_avg_sq"][...] = 0x0001  # a bfloat16 denormal, e.g. from a checkpoint
            opt.step([np.zeros(64, np.float32)])  # v < max: the max passes through unchanged
            out[target] = (p.view(np.uint32).copy(), opt.state[0]["max_exp_avg_sq"].copy())
        ref = out["baseline"]
        print("DIFFER", [t for t in out if not (np.array_equal(out[t][0], ref[0]) and np.array_equal(out[t][1], ref[1]))],
              "MAX", hex(int(ref[1][0])), "TARGETS", sorted(out))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "DIFFER []" in r.stdout and "MAX 0x1 " in r.stdout, r.stdout
