"""Pause/resume with E2B semantics: checkpoint + restore in gVisor, nothing lost."""

import time

import pytest
from e2b import Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import NotFoundException

LOOP = "exec 3>>/tmp/held.txt; cd /tmp; i=0; while true; do i=$((i+1)); echo tick $i $PWD >&3; echo tick $i; sleep 0.2; done"


def _state(sbx_id):
    return Sandbox.get_info(sbx_id).state


def test_pause_resume_cycles_keep_processes_files_env_and_cwd(tag, sandboxes):
    sbx = sandboxes(timeout=300, envs={"KEEP": "env-kept"}, metadata={"suite": tag})
    h = sbx.commands.run(LOOP, background=True)
    pid = h.pid
    sbx.files.write("/home/user/state.txt", "before pause")
    last_tick = 0
    for cycle in range(10):
        assert sbx.pause() is True
        assert sbx.pause() is False, "pausing a paused sandbox reports False"
        assert _state(sbx.sandbox_id) == SandboxState.PAUSED
        paused = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}, state=[SandboxState.PAUSED])).next_items()
        assert [s.sandbox_id for s in paused] == [sbx.sandbox_id]
        assert sbx.is_running() is False
        resumed = Sandbox.connect(sbx.sandbox_id)
        assert _state(sbx.sandbox_id) == SandboxState.RUNNING
        out = resumed.commands.run(
            f"ps -o pid= -p {pid} | tr -d ' '; ls -l /proc/{pid}/fd/3 | sed 's/.*-> //'; "
            "sleep 0.5; tail -1 /tmp/held.txt; echo $KEEP; cat /home/user/state.txt"
        ).stdout.splitlines()
        assert out[0] == str(pid), "the same process, same pid"
        assert out[1] == "/tmp/held.txt", "its open file"
        _, tick, cwd = out[2].split()
        assert int(tick) > last_tick, "it kept running (and writing through its open fd) after resume"
        assert cwd == "/tmp", "its cwd"
        last_tick = int(tick)
        assert out[3] == "env-kept"
        assert out[4] == "before pause"
    # the process' output can be re-attached after resume
    got = []
    for stdout, _, _ in resumed.commands.connect(pid):
        if stdout:
            got.append(stdout)
        if "tick" in "".join(got):
            break
    assert "tick" in "".join(got)


def test_auto_pause_at_timeout_then_connect_resumes(sandboxes):
    sbx = sandboxes(timeout=4, lifecycle={"on_timeout": "pause"})
    sbx.files.write("/home/user/kept.txt", "survives auto-pause")
    deadline = time.time() + 30
    while time.time() < deadline and _state(sbx.sandbox_id) != SandboxState.PAUSED:
        time.sleep(0.5)
    assert _state(sbx.sandbox_id) == SandboxState.PAUSED
    resumed = Sandbox.connect(sbx.sandbox_id, timeout=60)
    assert resumed.files.read("/home/user/kept.txt") == "survives auto-pause"
    assert resumed.commands.run("echo back").stdout == "back\n"


def test_auto_resume_on_the_next_request(sandboxes):
    sbx = sandboxes(timeout=4, lifecycle={"on_timeout": "pause", "auto_resume": True})
    h = sbx.commands.run("sleep 100000", background=True)
    sbx.files.write("/home/user/kept.txt", "auto")
    deadline = time.time() + 30
    while time.time() < deadline and _state(sbx.sandbox_id) != SandboxState.PAUSED:
        time.sleep(0.5)
    assert _state(sbx.sandbox_id) == SandboxState.PAUSED
    # No connect: the next sandbox request resumes it.
    assert sbx.files.read("/home/user/kept.txt") == "auto"
    assert _state(sbx.sandbox_id) == SandboxState.RUNNING
    assert sbx.commands.run(f"ps -o pid= -p {h.pid} | tr -d ' '").stdout.strip() == str(h.pid)


def test_kill_a_paused_sandbox():
    sbx = Sandbox.create(timeout=60)
    assert sbx.pause() is True
    assert Sandbox.kill(sbx.sandbox_id) is True
    with pytest.raises(NotFoundException):
        Sandbox.get_info(sbx.sandbox_id)
    assert Sandbox.kill(sbx.sandbox_id) is False


@pytest.mark.skipif("FIRKIN_STATE_DIR" not in __import__("os").environ, reason="needs the server's state dir on this host")
def test_corrupted_pause_image_is_refused_and_quarantined():
    import os

    from e2b.exceptions import SandboxException

    state = os.environ["FIRKIN_STATE_DIR"]
    sbx = Sandbox.create(timeout=60)
    assert sbx.pause() is True
    image = os.path.join(state, "snapshots", "paused", sbx.sandbox_id)
    with open(os.path.join(image, "pages.img"), "r+b") as f:
        f.seek(0)
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))  # same size, different content
    with pytest.raises(SandboxException) as e:
        Sandbox.connect(sbx.sandbox_id)
    assert "integrity" in str(e.value)
    assert not os.path.exists(image)
    assert any(q.startswith(f"paused-{sbx.sandbox_id}") for q in os.listdir(os.path.join(state, "quarantine")))
    with pytest.raises(NotFoundException):
        Sandbox.get_info(sbx.sandbox_id)
