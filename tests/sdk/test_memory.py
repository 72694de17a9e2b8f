"""Memory: a process that outgrows the sandbox's memory is killed inside the sandbox (as a VM's
OOM killer would: the largest process, SIGKILL), while the sandbox, its agent, its files and its
other processes live on. gVisor has no OOM killer of its own; the agent's watchdog is it, the
host memory cgroup only a backstop with headroom (docs/design.md, "Memory")."""

import time

import pytest
from e2b import CommandExitException, Sandbox
from e2b_code_interpreter import Sandbox as CodeSandbox

# Touches every page of 1.5 GiB: three times a default (512 MiB) sandbox's memory.
HOG = "python3 -c \"b = bytearray(1500 * 2**20); b[::4096] = b'x' * (len(b) // 4096)\""
# A small process that keeps working: rewrites a counter ten times a second.
TICKER = ("python3 -c \"import time\ni = 0\nwhile True:\n    i += 1\n"
          "    open('/home/user/counter.tmp', 'w').write(str(i))\n"
          "    __import__('os').replace('/home/user/counter.tmp', '/home/user/counter')\n"
          "    time.sleep(0.1)\"")


def counter(sbx):
    return int(sbx.files.read("/home/user/counter"))


def wait_for_counter(sbx, deadline=10):
    end = time.time() + deadline
    while True:
        try:
            return counter(sbx)
        except Exception:
            if time.time() > end:
                raise
            time.sleep(0.1)


def assert_killed(err):
    """The killed command ends as any SIGKILLed command does (Go's `signal: killed`, -1)."""
    assert err.exit_code == -1, err
    assert err.error == "signal: killed", err


def assert_lives_on(sbx, *pids):
    """The sandbox answers, runs commands, keeps its files and the processes `pids`."""
    assert sbx.is_running()
    assert sbx.commands.run("echo alive", timeout=30).stdout == "alive\n"
    assert sbx.files.read("/home/user/keep.txt") == "kept"
    alive = {p.pid for p in sbx.commands.list()}
    assert set(pids) <= alive, f"{pids} should still run: {alive}"


def test_a_memory_hog_dies_alone(sandboxes):
    sbx = sandboxes(timeout=180)  # 512 MiB
    sleeper = sbx.commands.run("sleep 1000", background=True)
    ticker = sbx.commands.run(TICKER, background=True)
    sbx.files.write("/home/user/keep.txt", "kept")
    wait_for_counter(sbx)

    started = time.time()
    with pytest.raises(CommandExitException) as err:
        sbx.commands.run(HOG, timeout=120)
    assert_killed(err.value)
    assert time.time() - started < 30, "killed promptly, not after a stuck-sandbox timeout"

    assert_lives_on(sbx, sleeper.pid, ticker.pid)
    before = counter(sbx)
    time.sleep(1)
    assert counter(sbx) > before, "the small background process kept running"
    # The hog's memory is free again: the same sandbox can use most of its memory.
    out = sbx.commands.run("python3 -c \"b = bytearray(300 * 2**20); print(len(b) >> 20)\"", timeout=60)
    assert out.stdout == "300\n"


def test_a_background_hog_dies_and_the_sandbox_answers(sandboxes):
    sbx = sandboxes(timeout=180)
    sleeper = sbx.commands.run("sleep 1000", background=True)
    sbx.files.write("/home/user/keep.txt", "kept")
    hog = sbx.commands.run(HOG, background=True)
    with pytest.raises(CommandExitException) as err:
        hog.wait()
    assert_killed(err.value)
    assert_lives_on(sbx, sleeper.pid)
    assert hog.pid not in {p.pid for p in sbx.commands.list()}


def test_a_process_with_oom_score_adj_minus_1000_is_spared(sandboxes):
    """As in Linux: the largest process dies, unless it opted out with oom_score_adj -1000."""
    sbx = sandboxes(timeout=180)
    sbx.files.write("/home/user/keep.txt", "kept")
    held = sbx.commands.run(
        "python3 -c \"open('/proc/self/oom_score_adj', 'w').write('-1000')\n"
        "b = bytearray(300 * 2**20)\nopen('/home/user/holding', 'w').close()\nimport time\ntime.sleep(1000)\"",
        background=True)
    deadline = time.time() + 30
    while not sbx.files.exists("/home/user/holding"):
        assert time.time() < deadline, "the holder did not start"
        time.sleep(0.2)
    # 300 MiB held + 300 MiB more is over 512 MiB: the newcomer is the smaller, yet it dies.
    with pytest.raises(CommandExitException) as err:
        sbx.commands.run("python3 -c \"b = bytearray(300 * 2**20); b[::4096] = b'x' * (len(b) // 4096)\"",
                         timeout=120)
    assert_killed(err.value)
    assert_lives_on(sbx, held.pid)


def test_the_watchdog_survives_pause_and_resume(sandboxes):
    sbx = sandboxes(timeout=180)
    sleeper = sbx.commands.run("sleep 1000", background=True)
    sbx.files.write("/home/user/keep.txt", "kept")
    sbx.pause()
    sbx = sandboxes.track(Sandbox.connect(sbx.sandbox_id))
    with pytest.raises(CommandExitException) as err:
        sbx.commands.run(HOG, timeout=120)
    assert_killed(err.value)
    assert_lives_on(sbx, sleeper.pid)


def test_run_code_that_outgrows_memory_restarts_the_kernel(sandboxes):
    """The kernel running the cell is the largest process and dies; the code-interpreter server
    (the template's start command) restarts it and reports the cell as ended unexpectedly, as
    for any kernel death; the sandbox lives on. The cell's state is lost with the kernel."""
    sbx = sandboxes(timeout=180, sandbox_class=CodeSandbox)  # code-interpreter-v1: 1024 MiB
    sbx.files.write("/home/user/keep.txt", "kept")
    assert sbx.run_code("x = 41; x + 1").text == "42"

    ex = sbx.run_code("b = bytearray(2500 * 2**20); b[::4096] = b'x' * (len(b) // 4096); len(b)")
    assert ex.error is not None, ex
    assert ex.error.name == "UnexpectedEndOfExecution", ex.error
    assert "restarted" in ex.error.value

    assert sbx.run_code("1 + 1").text == "2"
    assert sbx.run_code("x").error.name == "NameError", "a new kernel: the old state is gone"
    assert sbx.commands.run("echo alive", timeout=30).stdout == "alive\n"
    assert sbx.files.read("/home/user/keep.txt") == "kept"
