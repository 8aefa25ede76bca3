"""Invariants of the C core: the recorded result fingerprint per SIMD target, and libadam_c.so's exported symbols."""
import importlib.util
import json
import os
import shutil
import subprocess

import pytest

import adam_c
from adam_c import _core

_HERE = os.path.dirname(os.path.abspath(__file__))
_TOOL = os.path.join(_HERE, os.pardir, os.pardir, "tools", "fingerprint.py")


def _tool():
    spec = importlib.util.spec_from_file_location("adam_c_fingerprint_tool", _TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


with open(os.path.join(_HERE, "fingerprint.json")) as _f:
    RECORDED = json.load(_f)


@pytest.mark.parametrize("target", _core.target_names())
def test_results_match_recorded_fingerprint(target, restore_target):
    """A fixed set of steps (every dtype, state format and option; odd lengths; multi-tensor, threaded) gives the
    recorded bits on this target for 1, 2 and 3 threads. A change here is a change of numerics: find out why
    before re-recording with `python tools/fingerprint.py --write`."""
    if not _core.target_supported(target):
        pytest.skip(f"SIMD target {target!r} is compiled in but not supported by this CPU")
    assert target in RECORDED, f"no fingerprint recorded for target {target!r} in tests/kernels/fingerprint.json"
    got = _tool().fingerprint([target])[target]
    assert got == RECORDED[target], f"target {target}: results differ from the recorded fingerprint"
    assert adam_c.cpu_info()["target"] == restore_target  # the tool put the target back


def test_exported_symbols_unchanged():
    """libadam_c.so exports exactly the recorded adamc_* functions (the ABI; internal helpers stay hidden)."""
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    lib = os.path.join(adam_c.get_library_dir(), "libadam_c.so")
    out = subprocess.run([nm, "-D", "--defined-only", lib], check=True, capture_output=True, text=True).stdout
    exported = sorted(line.split()[-1] for line in out.splitlines() if line.strip() and not line.endswith(":"))
    with open(os.path.join(_HERE, "exported_symbols.txt")) as f:
        recorded = [line.strip() for line in f if line.strip()]
    assert exported == recorded
