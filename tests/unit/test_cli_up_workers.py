"""``sirocco up``'s workers die with it, even when it is killed with SIGKILL
(a test harness's last resort, the OOM killer, ``kill -9``): before, they
lived on as orphans holding the broker, the store and memory."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PARENT = """
import subprocess, sys, time
from cli.serve import _die_with_parent
hook = _die_with_parent() if sys.argv[1] == "hook" else None
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], preexec_fn=hook)
print(child.pid, flush=True)
time.sleep(60)
"""


def _child_state_after_parent_sigkill(mode: str) -> str:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, mode], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    state = "?"
    for _ in range(50):
        try:
            state = Path(f"/proc/{child}/stat").read_text().split()[2]
        except FileNotFoundError:
            state = "gone"
        if state in ("gone", "Z"):
            break
        time.sleep(0.1)
    if state not in ("gone", "Z"):
        subprocess.run(["kill", "-9", str(child)], check=False)
    return state


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_dies_when_sirocco_up_is_killed() -> None:
    assert _child_state_after_parent_sigkill("hook") in ("gone", "Z")
    # The control: without the hook the child outlives its killed parent.
    assert _child_state_after_parent_sigkill("none") not in ("gone", "Z")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_parse_worker_yields_the_cpu_and_the_others_do_not() -> None:
    import os

    from cli.serve import _die_with_parent
    from sirocco.settings import Settings

    def niceness(hook) -> int:
        out = subprocess.run([sys.executable, "-c", "import os; print(os.nice(0))"],
                             preexec_fn=hook, capture_output=True, text=True, check=True)
        return int(out.stdout)

    mine = os.nice(0)
    assert Settings().celery.parse_nice == 10
    assert niceness(_die_with_parent(nice=10)) == min(19, mine + 10)
    assert niceness(_die_with_parent()) == mine
