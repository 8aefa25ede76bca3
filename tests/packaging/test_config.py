"""test_config.py: python -m adam_c.config / adam_c-config print what each option asks, agree with pkg-config and
the package's directories; the pkg_config entry point leads to adam_c.pc and adam_c_static.pc."""
import importlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import adam_c
from adam_c import config


def run_config(*args, script=False):
    """The command as a user runs it (python -m adam_c.config, or the console script), from a neutral directory
    (not the package's own: there `python -m` would put adam_c/typing.py before the standard library's typing)."""
    if script:
        command = [os.path.join(os.path.dirname(sys.executable), "adam_c-config")]
        if not os.path.exists(command[0]):
            pytest.skip(f"adam_c-config is not installed beside {sys.executable} (pip --target installs no scripts)")
    else:
        command = [sys.executable, "-m", "adam_c.config"]
    with tempfile.TemporaryDirectory() as neutral:
        return subprocess.run(command + list(args), capture_output=True, text=True, timeout=60, cwd=neutral)


def test_each_option_prints_its_answer():
    lib = adam_c.get_library_dir()
    want = {
        "--cflags": f"-I{adam_c.get_include()}",
        "--libs": f"-L{lib} -ladam_c",
        "--rpath": f"-Wl,-rpath,{lib}",
        "--cmake-dir": adam_c.get_cmake_dir(),
        "--pkgconfig-dir": adam_c.get_pkgconfig_dir(),
        "--includedir": adam_c.get_include(),
        "--libdir": lib,
        "--version": adam_c.__version__,
    }
    for option, expected in want.items():
        proc = run_config(option)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == expected + "\n", (option, proc.stdout)
    assert os.path.isfile(os.path.join(adam_c.get_include(), "adam_c.h"))
    assert os.path.isfile(os.path.join(adam_c.get_cmake_dir(), "adam_cConfig.cmake"))


def test_libs_static_names_the_archive_and_what_it_needs():
    proc = run_config("--libs-static")
    assert proc.returncode == 0, proc.stderr
    first, *rest = proc.stdout.split()
    # by path: -ladam_c would pick libadam_c.so, which sits beside the archive
    assert first == os.path.join(adam_c.get_library_dir(), "libadam_c.a") and os.path.isfile(first)
    assert "-ladam_c" not in rest and "-lm" in rest and "-pthread" in rest
    if adam_c.cpu_info()["openmp"]:
        assert any("openmp" in flag or "gomp" in flag or "omp" in flag for flag in rest), rest


def test_options_print_in_the_order_given_one_line_each():
    proc = run_config("--libdir", "--version", "--cflags")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [adam_c.get_library_dir(), adam_c.__version__, f"-I{adam_c.get_include()}"]


def test_no_option_prints_help_and_a_bad_one_is_a_usage_error():
    proc = run_config()  # numpy-config and pybind11-config print their help
    assert proc.returncode == 0 and "--libs-static" in proc.stdout and "usage: adam_c-config" in proc.stdout
    proc = run_config("--clfags")
    assert proc.returncode == 2 and "unrecognized arguments: --clfags" in proc.stderr


def test_console_script_is_installed_and_matches_the_module():
    proc = run_config("--cflags", "--libs", "--libs-static", "--cmake-dir", script=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == run_config("--cflags", "--libs", "--libs-static", "--cmake-dir").stdout


@pytest.mark.skipif(shutil.which("pkg-config") is None, reason="needs pkg-config")
@pytest.mark.parametrize("package, option, static", [("adam_c", "--cflags", False), ("adam_c", "--libs", False),
                                                     ("adam_c_static", "--libs-static", False),
                                                     ("adam_c", "--version", False)])
def test_agrees_with_pkg_config(package, option, static):
    """The flags come from the package's own .pc files: pkg-config gives the same (paths normalised)."""
    env = dict(os.environ, PKG_CONFIG_PATH=adam_c.get_pkgconfig_dir())
    pc_option = {"--libs-static": "--libs", "--version": "--modversion"}.get(option, option)
    pc = subprocess.run(["pkg-config", pc_option, package], capture_output=True, text=True, env=env, timeout=60)
    assert pc.returncode == 0, pc.stderr
    ours = run_config(option).stdout.split()
    theirs = [config._normalized(flag) for flag in pc.stdout.split()]
    assert ours == theirs


def test_pkg_config_entry_point_leads_to_the_pc_files():
    """pkgconf-pypi and meson look for the 'pkg_config' entry-point group (numpy declares one the same way): its
    value is a module whose directory holds the .pc files."""
    eps = importlib.metadata.entry_points()
    group = eps.select(group="pkg_config") if hasattr(eps, "select") else eps.get("pkg_config", [])
    ours = [ep for ep in group if ep.name == "adam_c"]
    assert len(ours) == 1, list(group)
    module = importlib.import_module(ours[0].value)
    folders = list(module.__path__)
    assert any(os.path.isfile(os.path.join(folder, "adam_c.pc")) and
               os.path.isfile(os.path.join(folder, "adam_c_static.pc")) for folder in folders), folders
    assert os.path.realpath(adam_c.get_pkgconfig_dir()) in {os.path.realpath(f) for f in folders}


def test_read_pc_expands_variables_as_pkg_config_does(tmp_path):
    (tmp_path / "x.pc").write_text("# a comment\nprefix=${pcfiledir}/..\nlibdir=${prefix}/lib\n\nName: x\n"
                                   "Libs: -L${libdir} -lx # trailing\nCflags: -I${prefix}/include\n")
    fields = config.read_pc(str(tmp_path / "x.pc"))
    assert fields["Libs"] == f"-L{tmp_path}/../lib -lx"
    assert config._normalized(fields["Cflags"]) == f"-I{tmp_path.parent}/include"


def test_pkgconf_pypi_finds_adam_c_through_the_entry_point():
    """pkgconf from PyPI (what meson-python uses) searches the 'pkg_config' entry points: no PKG_CONFIG_PATH."""
    pytest.importorskip("pkgconf", reason="pkgconf (PyPI) is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("PKG_CONFIG_PATH", "PKG_CONFIG_LIBDIR")}
    proc = subprocess.run([sys.executable, "-m", "pkgconf", "--cflags", "--libs", "adam_c"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [config._normalized(flag) for flag in proc.stdout.split()] == run_config("--cflags", "--libs").stdout.split()
