"""Shared fixtures: every compiled SIMD target (unsupported ones skipped with a reason), thread and threshold control."""
import os
import sys

import pytest

# the oracle and helpers (tests/reference.py) importable under any --import-mode
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import adam_c  # noqa: E402
from adam_c import _core  # noqa: E402

ALL_TARGETS = _core.target_names()


def supported_targets():
    return [name for name in ALL_TARGETS if _core.target_supported(name)]


@pytest.fixture
def restore_target():
    """Puts back the SIMD target in use when the test started."""
    original = adam_c.cpu_info()["target"]
    yield original
    adam_c.set_target(original)
    assert adam_c.cpu_info()["target"] == original


@pytest.fixture(params=ALL_TARGETS)
def simd_target(request, restore_target):
    """Runs the test once per compiled SIMD target with that target active; a target this CPU lacks is an
    explicit skip, never a silent omission."""
    name = request.param
    if not _core.target_supported(name):
        pytest.skip(f"SIMD target {name!r} is compiled in but not supported by this CPU "
                    f"(supported: {supported_targets()})")
    adam_c.set_target(name)
    assert adam_c.cpu_info()["target"] == name
    return name


@pytest.fixture
def parallel_threshold():
    """A setter for the parallel threshold (in float32 elements); the original is restored afterwards."""
    original = _core.get_parallel_threshold()

    def set_threshold(n):
        _core.set_parallel_threshold(n)
        assert _core.get_parallel_threshold() == n

    yield set_threshold
    _core.set_parallel_threshold(original)


@pytest.fixture
def low_parallel_threshold(parallel_threshold):
    """Every step of more than a few elements runs in a parallel region."""
    parallel_threshold(8)
    return 8


@pytest.fixture
def num_threads():
    """A setter for adam_c's thread count; afterwards adam_c follows its default again (set_num_threads(None))."""

    def set_threads(n):
        adam_c.set_num_threads(n)
        assert adam_c.get_num_threads() == n

    yield set_threads
    adam_c.set_num_threads(None)
