"""What a sandbox's processes cannot do to it or to the host: a fork bomb of its user is held at
the user's process limit and the sandbox stays usable and recovers; a flood of PID 1's output
does not grow the sandbox's host log without bound."""

import os
import time

import pytest
from e2b import CommandExitException, TimeoutException
from e2b.exceptions import SandboxException

BOMB = "bomb() { bomb | bomb & }; bomb"

# Kills every process of `user` from one that runs as `user` but was started by root, so it needs
# no slot of the user's exhausted process limit: kill(-1) signals all of them in one call, where
# `pkill` signals them one by one and a live bomb forks new ones in between.
KILL_EVERY_USER_PROCESS = r"""python3 - <<'PY'
import os, time
os.setgroups([]); os.setgid(1000); os.setuid(1000)
for _ in range(400):
    try:
        os.kill(-1, 9)
    except ProcessLookupError:
        break
    time.sleep(0.05)
PY
pgrep -c -u user || true"""

# firkin's cap on a sandbox's host log (runtime::heartbeat::logcap::LOG_CAP).
LOG_CAP = 8 * 1024 * 1024


def _until(what, check, timeout, every=0.5):
    """Calls `check` until it returns something true (and returns that) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except SandboxException as e:  # a slow or refused command while the bomb settles
            last = e
        time.sleep(every)
    raise AssertionError(f"{what} within {timeout} s; last: {last!r}")


def _user_command_fails_fast(sbx, attempts=3):
    """A command as `user` while the user is at its limit: the start is refused at once. The
    limit is full but a bomb process that gives up frees a slot now and then; a start that gets
    one runs a shell whose own forks are refused (bash retries those for 15 s), so such an
    attempt is cut short by its timeout and the next one tried."""
    outcomes = []
    for _ in range(attempts):
        started = time.monotonic()
        try:
            sbx.commands.run("echo unexpectedly-started", timeout=8, request_timeout=30)
            outcomes.append(("ran", time.monotonic() - started))
        except (TimeoutException, CommandExitException) as e:
            outcomes.append((type(e).__name__, time.monotonic() - started))
        except SandboxException as e:
            return e, time.monotonic() - started
    raise AssertionError(f"no start was refused: {outcomes}")


def test_fork_bomb_is_contained_and_the_sandbox_recovers(sandboxes):
    started = time.monotonic()
    sbx = sandboxes(timeout=180)
    limit = int(sbx.commands.run("ulimit -u").stdout)
    # The bomb's shell puts it in the background and exits: the command ends at once.
    try:
        sbx.commands.run(BOMB, timeout=30, request_timeout=60)
    except (TimeoutException, CommandExitException):
        pass  # also contained: cut off at its timeout, or its shell's own fork refused

    # Root still gets its commands run (slowly while the bomb grows), and sees the user near
    # its limit.
    count = _until(
        "the bomb filling most of the user's process limit, seen by root",
        lambda: (n := int(sbx.commands.run("pgrep -c -u user", user="root", timeout=30).stdout)) >= limit // 2
        and n,
        timeout=45,
    )
    assert count <= limit, (count, limit)

    # A command of the user fails at once, with an error that says why.
    err, took = _user_command_fails_fast(sbx)
    assert took < 5, f"refused only after {took:.1f} s: {err}"
    assert "process limit" in str(err), err

    # Root's pkill runs; the bomb is then ended for good.
    assert sbx.commands.run("pkill -9 -u user; echo pkill=$?", user="root", timeout=30).stdout.startswith("pkill=")
    left = sbx.commands.run(KILL_EVERY_USER_PROCESS, user="root", timeout=40, request_timeout=60).stdout
    assert left.split() == ["0"], left

    # The user's commands work again and the sandbox is healthy.
    out = _until("a user command working again", lambda: sbx.commands.run("echo back", timeout=10).stdout, 20)
    assert out == "back\n"
    assert sbx.is_running()
    sbx.files.write("/home/user/after-bomb.txt", "still here")
    assert sbx.files.read("/home/user/after-bomb.txt") == "still here"
    assert time.monotonic() - started < 90


@pytest.mark.skipif("FIRKIN_STATE_DIR" not in os.environ, reason="needs the server's state dir on this host")
def test_pid1_output_flood_does_not_grow_the_host_log_without_bound(sandboxes):
    sbx = sandboxes(timeout=120)
    log = os.path.join(os.environ["FIRKIN_STATE_DIR"], "run", "sandboxes", sbx.sandbox_id, "sandbox.log")
    if not os.path.exists(log):
        pytest.skip(f"{log} does not exist: FIRKIN_STATE_DIR is not this server's state dir")

    sbx.commands.run("yes firkin-log-flood | head -c 64M >> /proc/1/fd/2", user="root", timeout=60)

    def within_cap():
        st = os.stat(log)
        return st.st_size <= LOG_CAP and st.st_blocks * 512 <= LOG_CAP and st

    st = _until("the host log cut back under its cap", within_cap, timeout=10, every=0.25)
    with open(log, errors="replace") as f:
        text = f.read()
    assert "bytes of this log dropped" in text, text[:300]
    assert "firkin-log-flood" in text, "the last lines are kept"

    # Writers carry on at the new end of the log (no hole up to an old offset) ...
    sbx.commands.run("echo firkin-after-the-cut >> /proc/1/fd/1", user="root")
    _until("a later write in the log", lambda: "firkin-after-the-cut" in open(log, errors="replace").read(), 10)
    after = os.stat(log)
    assert after.st_size <= st.st_size + 4096 and after.st_blocks * 512 <= LOG_CAP, (st, after)
    # ... and the sandbox works on.
    assert sbx.commands.run("echo ok").stdout == "ok\n"
