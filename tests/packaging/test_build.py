"""test_build.py: what the distribution carries and what a source build says: the LICENSE in the installed
package's metadata, and one line naming the missing C compiler when there is none."""
import importlib.metadata
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_installed_distribution_carries_the_license():
    dist = importlib.metadata.distribution("adam_c")
    assert dist.metadata["License-Expression"] == "BSD-3-Clause"
    licenses = [f for f in (dist.files or []) if f.name == "LICENSE"]
    assert licenses, f"no LICENSE among {dist.files}"
    text = Path(str(licenses[0].locate())).read_text()
    assert text.startswith("BSD 3-Clause License") and "the adam_c developers" in text
    if (ROOT / "LICENSE").is_file():
        assert text == (ROOT / "LICENSE").read_text()


def _real_cmake(tmp_path):
    """The cmake binary itself (PATH may hold a wrapper script that needs more of PATH than the test leaves)."""
    cmake = shutil.which("cmake")
    if cmake is None or not (ROOT / "CMakeLists.txt").is_file():
        return None
    script = tmp_path / "where.cmake"
    script.write_text('message("${CMAKE_COMMAND}")\n')
    proc = subprocess.run([cmake, "-P", str(script)], capture_output=True, text=True, timeout=60)
    path = proc.stderr.strip()
    return path if proc.returncode == 0 and os.path.isfile(path) else None


@pytest.mark.parametrize("cc", ["no-such-cc", "", None])
def test_configure_without_a_c_compiler_says_so_in_one_line(cc, tmp_path):
    cmake = _real_cmake(tmp_path)
    if cmake is None:
        pytest.skip("needs cmake and the source tree's CMakeLists.txt")
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "CMAKE_C_COMPILER")}
    bin_dir = tmp_path / "bin"  # a PATH with cmake and no compiler
    bin_dir.mkdir()
    (bin_dir / "cmake").symlink_to(cmake)
    env["PATH"] = str(bin_dir)
    if cc is not None:
        env["CC"] = cc
    proc = subprocess.run([cmake, "-S", str(ROOT), "-B", str(tmp_path / "build"), "-DADAM_C_PYTHON=OFF"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "C compiler" in line]
    assert len(lines) == 1, proc.stderr
    assert "adam_c needs a C compiler" in lines[0] and "install gcc or clang" in lines[0]
    assert ("CC=no-such-cc" in lines[0]) if cc else ("no cc, gcc or clang on PATH" in lines[0])
    assert "CMAKE_C_COMPILER" not in proc.stderr, "project()'s own page about the compiler did not come first"
