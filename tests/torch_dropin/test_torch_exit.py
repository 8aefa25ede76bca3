"""A process that uses adam_c.torch with torch.distributed's gloo backend exits cleanly: no abort at interpreter exit."""
import os
import socket
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available in this torch build")

TIMEOUT_S = 120
# the end that aborts now and then without the exit handler (see adam_c/_torch_exit.py): async collectives on
# Python-visible tensors just before the script ends, with the process group still held (as DDP holds it)
RACE = """
import torch, torch.distributed as dist
{prelude}
dist.init_process_group("gloo")
pg = dist.group.WORLD
t = torch.ones(10)
for i in range(200):
    dist.broadcast(t, 0, async_op=True).wait()
{coda}
"""


def run_rank0(code, tmp_path, name):
    """Runs `code` as a fresh interpreter in a 1-rank gloo world (torchrun's environment) and returns the result."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / f"{name}.py"
    script.write_text(textwrap.dedent(code))
    env = dict(os.environ, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def test_exit_handler_waits_only_while_gloo_threads_run(tmp_path):
    """The handler is registered by importing adam_c.torch, sees gloo's threads, and gives up the GIL at exit."""
    code = RACE.format(prelude=textwrap.dedent("""
        import adam_c.torch, adam_c._torch_exit as te
        assert not te.gloo_threads_alive(), "no gloo threads before a process group"
        slept = []
        te.time = type("T", (), {"sleep": staticmethod(lambda s: (slept.append(s), print("slept", s, flush=True)))})
        """), coda="assert te.gloo_threads_alive(), 'gloo threads after init_process_group'")
    run = run_rank0(code, tmp_path, "handler")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("slept ") and float(run.stdout.split()[1]) > 0, run.stdout


def test_exit_handler_is_a_no_op_without_gloo(tmp_path):
    run = run_rank0(textwrap.dedent("""
        import adam_c.torch, adam_c._torch_exit as te
        te.time = None   # the handler would fail on it if it tried to wait
        assert not te.gloo_threads_alive()
        """), tmp_path, "nogloo")
    assert run.returncode == 0 and run.stderr == "", run.stderr


def test_repeated_exits_after_collectives_are_clean(tmp_path):
    """12 processes that end right after gloo collectives, with adam_c.torch imported: every one exits with 0."""
    code = RACE.format(prelude="import adam_c.torch", coda="")
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda i: run_rank0(code, tmp_path, f"race{i}"), range(12)))
    bad = [(r.returncode, r.stderr[-300:]) for r in runs if r.returncode != 0]
    assert not bad, bad
