"""Runs a worker script as N gloo ranks on localhost (fresh interpreters, bounded in time) for the distributed tests."""
import socket
import subprocess
import sys

import pytest


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(script, world, args, timeout_s, cwd):
    """`python script RANK WORLD PORT *args` for each rank; fails the test unless every rank exits with 0."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, script, str(r), str(world), str(port), *map(str, args)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd) for r in range(world)]
    try:
        logs = [p.communicate(timeout=timeout_s)[0].decode(errors="replace") for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"the {world} gloo ranks did not finish within {timeout_s} s")
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {r} of {world} exited with {p.returncode}:\n{log[-4000:]}"
