"""test_typing.py: the typed API: mypy --strict accepts a script using every public call and refuses misuse, and
stubtest finds the stubs (_core.pyi, optim.pyi, functional.pyi, torch.pyi) and annotations consistent with the
runtime."""
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import adam_c

pytest.importorskip("mypy", reason="mypy is not installed")

TYPING = Path(__file__).resolve().parents[1] / "typing"


@pytest.fixture(scope="module")
def mypy_env(tmp_path_factory):
    """Run mypy as a user would, against the adam_c this interpreter imports. An editable install keeps the .py
    and .pyi files in the checkout (found through an import hook mypy cannot follow): point MYPYPATH there."""
    env = dict(os.environ, MYPY_CACHE_DIR=str(tmp_path_factory.mktemp("mypy-cache")))
    env.pop("MYPYPATH", None)
    package_root = Path(adam_c.__file__).resolve().parent.parent
    site = {Path(p).resolve() for p in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])}
    if package_root not in site:
        env["MYPYPATH"] = str(package_root)
    return env


def run_mypy(env, *args):
    return subprocess.run([sys.executable, "-m", *args], env=env, cwd=env["MYPY_CACHE_DIR"], capture_output=True,
                          text=True, timeout=600)


def test_user_script_passes_mypy_strict(mypy_env):
    result = run_mypy(mypy_env, "mypy", "--strict", str(TYPING / "user_script.py"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def test_torch_user_script_passes_mypy_strict(mypy_env):
    """adam_c.torch.AdamW in a torch training loop type-checks as torch.optim.AdamW does (adam_c/torch.pyi), and
    float16 arrays are params of the NumPy API."""
    pytest.importorskip("torch", reason="torch is not installed")
    result = run_mypy(mypy_env, "mypy", "--strict", str(TYPING / "torch_user_script.py"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def test_misuse_is_refused_line_by_line(mypy_env):
    source = (TYPING / "misuse.py").read_text().splitlines()
    marked = {i for i, line in enumerate(source, start=1) if line.endswith("# error")}
    assert len(marked) >= 10
    result = run_mypy(mypy_env, "mypy", "--strict", str(TYPING / "misuse.py"))
    flagged = {int(m.group(1)) for m in re.finditer(r"misuse\.py:(\d+): error", result.stdout)}
    assert result.returncode == 1, result.stdout + result.stderr
    assert flagged == marked, f"missed {sorted(marked - flagged)}, unexpected {sorted(flagged - marked)}:\n" \
                              + result.stdout


def test_stubs_match_runtime(mypy_env):
    """stubtest imports adam_c and every submodule and compares each runtime object with its stub or annotation:
    a parameter added to optim.py (or _core.pyx) without its .pyi entry fails here."""
    # (mypy must resolve torch.pyi's `import torch` to check any module: a wheel's test step without torch skips)
    pytest.importorskip("torch", reason="stubtest checks adam_c/torch.pyi, whose types come from torch")
    result = run_mypy(mypy_env, "mypy.stubtest", "adam_c", "--allowlist", str(TYPING / "stubtest_allowlist.txt"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"no issues found in \d+ modules", result.stdout), result.stdout


def test_package_is_marked_typed():
    assert (Path(adam_c.__file__).parent / "py.typed").is_file()
