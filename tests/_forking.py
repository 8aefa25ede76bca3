"""_forking.py: test helper: reap a fork() child within a deadline, so a hung child fails the test, not the suite."""
import os
import signal
import time


def wait_for_child(pid, timeout, what):
    """The child's exit code; kills it and raises AssertionError(f"{what} hung") after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"{what} hung")
        time.sleep(0.005)
