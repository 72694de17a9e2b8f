"""Snapshots, create-from-snapshot and fork: restored copies are independent sandboxes."""

import os
import uuid

import pytest
from e2b import Sandbox
from e2b.exceptions import SandboxException

LOOP = "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.2; done"


def test_snapshot_keeps_source_running_and_restores_as_new_sandbox(sandboxes):
    src = sandboxes(timeout=120, envs={"ORIGIN": "source"})
    src.files.write("/home/user/data.txt", "from the source")
    h = src.commands.run(LOOP, background=True)
    name = f"snap-test-{uuid.uuid4().hex[:8]}"
    snap = src.create_snapshot(name=name)
    assert snap.snapshot_id
    assert name in snap.names
    # the source keeps running, same process
    assert src.commands.run(f"ps -o pid= -p {h.pid} | tr -d ' '").stdout.strip() == str(h.pid)
    assert src.commands.run("echo still-here").stdout == "still-here\n"
    listed = [s.snapshot_id for s in src.list_snapshots().next_items()]
    assert snap.snapshot_id in listed

    child = sandboxes(snap.snapshot_id, timeout=60)
    assert child.sandbox_id != src.sandbox_id
    assert child.files.read("/home/user/data.txt") == "from the source"
    assert child.commands.run("echo $ORIGIN").stdout == "source\n"
    # the snapshot carried the running process: it keeps counting in the child
    first = int(child.commands.run("cat /tmp/counter").stdout)
    second = int(child.commands.run("sleep 0.6; cat /tmp/counter").stdout)
    assert second > first
    # independent from then on
    child.files.write("/home/user/data.txt", "changed in the child")
    assert src.files.read("/home/user/data.txt") == "from the source"

    # by name, too
    by_name = sandboxes(name, timeout=30)
    assert by_name.files.read("/home/user/data.txt") == "from the source"
    by_name.kill()

    assert Sandbox.delete_snapshot(snap.snapshot_id) is True
    assert Sandbox.delete_snapshot(snap.snapshot_id) is False
    with pytest.raises(SandboxException):
        Sandbox.create(snap.snapshot_id)


def test_fork_gives_independent_children(sandboxes):
    parent = sandboxes(timeout=120)
    parent.files.write("/home/user/shared.txt", "parent")
    results = parent.fork(count=2)
    kids = [sandboxes.track(k) for k in results if not isinstance(k, Exception)]
    assert len(kids) == 2, results
    assert len({parent.sandbox_id, kids[0].sandbox_id, kids[1].sandbox_id}) == 3
    for i, k in enumerate(kids):
        assert k.files.read("/home/user/shared.txt") == "parent"
        k.files.write("/home/user/shared.txt", f"kid {i}")
    assert kids[0].files.read("/home/user/shared.txt") == "kid 0"
    assert kids[1].files.read("/home/user/shared.txt") == "kid 1"
    assert parent.files.read("/home/user/shared.txt") == "parent"
    parent.files.write("/home/user/after.txt", "x")
    assert not kids[0].files.exists("/home/user/after.txt")


@pytest.mark.skipif("FIRKIN_STATE_DIR" not in os.environ, reason="needs the server's state dir on this host")
def test_corrupted_snapshot_is_refused_and_quarantined(sandboxes):
    src = sandboxes(timeout=60)
    snap = src.create_snapshot()
    img = os.path.join(os.environ["FIRKIN_STATE_DIR"], "snapshots", "images", snap.snapshot_id)
    pages = os.path.join(img, "pages.img")
    size = os.path.getsize(pages)
    with open(pages, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(SandboxException) as e:
        Sandbox.create(snap.snapshot_id)
    assert "integrity" in str(e.value)
    assert snap.snapshot_id not in [s.snapshot_id for s in Sandbox.list_snapshots().next_items()]
    assert not os.path.exists(img)
    quarantined = os.listdir(os.path.join(os.environ["FIRKIN_STATE_DIR"], "quarantine"))
    assert any(q.startswith(snap.snapshot_id) for q in quarantined)


def test_continuation_of_a_stopped_and_an_idle_sandbox(sandboxes):
    """`firkin.continuation=on`: a kill (stopped) or a timeout (idle) captures the sandbox; a
    follow-up create of `continuation-<id>` restores it and reports the reason."""
    stopped = Sandbox.create(timeout=120, metadata={"firkin.continuation": "on", "task": "t1"})
    h = stopped.commands.run("sleep 100000", background=True)
    stopped.files.write("/home/user/progress.txt", "half done")
    stopped.kill()
    follow = sandboxes(f"continuation-{stopped.sandbox_id}", timeout=60, metadata={"task": "t1-next"})
    info = follow.get_info()
    assert info.metadata["firkin.continuation.reason"] == "stopped"
    assert info.metadata["firkin.continuation.from"] == stopped.sandbox_id
    assert info.metadata["task"] == "t1-next"
    assert follow.files.read("/home/user/progress.txt") == "half done"
    assert follow.commands.run(f"ps -o pid= -p {h.pid} | tr -d ' '").stdout.strip() == str(h.pid)
    follow.kill()

    idle = Sandbox.create(timeout=3, metadata={"firkin.continuation": "on"})
    idle.files.write("/home/user/idle.txt", "was idle")
    name = f"continuation-{idle.sandbox_id}"
    import time
    deadline = time.time() + 30
    while time.time() < deadline and idle.is_running():
        time.sleep(0.5)
    assert not idle.is_running()
    # The capture finishes a moment after the sandbox stops answering.
    while True:
        try:
            again = sandboxes(name, timeout=60)
            break
        except SandboxException:
            assert time.time() < deadline, "no continuation snapshot appeared"
            time.sleep(0.25)
    assert again.get_info().metadata["firkin.continuation.reason"] == "idle"
    assert again.files.read("/home/user/idle.txt") == "was idle"
    again.kill()
    for n in (f"continuation-{stopped.sandbox_id}", name):
        assert Sandbox.delete_snapshot(n) is True

    plain = Sandbox.create(timeout=30)
    plain.kill()
    with pytest.raises(SandboxException):
        Sandbox.create(f"continuation-{plain.sandbox_id}")
