"""The command lines (python -m adam_c, adam_c.bench, adam_c.quality, adam_c.bench_compressed) refuse bad options up
front with a usage error naming the option (exit status 2), never a traceback after minutes of work."""
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

import adam_c
from adam_c import __main__ as demo
from adam_c import bench, bench_compressed, quality


@pytest.mark.parametrize("main, argv, words", [
    (demo.main, ["--hidden", "0"], "--hidden must be >= 1"),
    (demo.main, ["--epochs", "-1"], "--epochs must be >= 1"),
    (demo.main, ["--seed", "-1"], "--seed must be >= 0"),
    (demo.main, ["--lr", "-1"], "--lr must be a finite number > 0"),
    (demo.main, ["--lr", "nan"], "--lr must be a finite number > 0"),
    (bench.main, ["--threads", "300"], "--threads must be in 1..256"),
    (bench.main, ["--threads", "0"], "--threads must be in 1..256"),
    (bench.main, ["--json", "/nonexistent-dir/x.json"], "--json /nonexistent-dir/x.json: cannot write"),
    (bench.main, ["--torch-dropin", "--no-torch"], "it does not take --no-torch"),
    (bench.main, ["--torch-dropin", "--workloads", "call"], "it does not take --workloads"),
    (bench.main, ["--sweep-threshold", "--quality"], "it does not take --quality"),
    (bench_compressed.main, ["--elements", "-5"], "--elements must be >= 1"),
])
def test_bad_options_are_usage_errors(main, argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert words in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is not None, reason="matplotlib is installed")
def test_quality_plot_without_matplotlib_is_refused_before_training(capsys):
    with pytest.raises(SystemExit) as exc:
        quality.main(["--plot", "out.png", "--models", "mlp"])
    assert exc.value.code == 2 and "--plot needs matplotlib" in capsys.readouterr().err


def test_demo_exit_status_1_says_why(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "adam_c", "--epochs", "1"], capture_output=True, text=True,
                          cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 1 and "not above 0.8" in proc.stdout, proc.stdout + proc.stderr


def test_bfloat16_grad_of_a_float32_param_names_the_mismatch():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    p = np.zeros(4, np.float32)
    opt = adam_c.Adam([p])
    with pytest.raises(TypeError, match=r"grads\[0\] has dtype bfloat16, but its param has dtype float32"):
        opt.step([np.zeros(4, ml_dtypes.bfloat16)])
    assert not opt.state
