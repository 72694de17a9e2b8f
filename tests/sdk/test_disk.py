"""The sandbox disk: what a sandbox writes goes to its own disk on the host (not its memory),
within a hard size limit (ENOSPC inside, nothing else breaks), /tmp included, and the contents
come back intact after pause/resume, from a snapshot, in fork children and in a continuation."""

import uuid

import httpx
import pytest
from e2b import CommandExitException, Sandbox

from conftest import API_URL, auth_headers

GIB = 1 << 30


def sha(sbx, path):
    return sbx.commands.run(f"sha256sum {path} | cut -d' ' -f1", timeout=120).stdout.strip()


def test_writes_far_beyond_memory_land_on_disk(sandboxes):
    sbx = sandboxes(timeout=300)  # 512 MiB of memory
    sbx.commands.run("head -c 1500M /dev/urandom > /home/user/big", timeout=300)
    first = sha(sbx, "/home/user/big")
    assert sbx.is_running()
    assert sbx.commands.run("stat -c %s /home/user/big").stdout.strip() == str(1500 << 20)
    assert sha(sbx, "/home/user/big") == first
    m = sbx.get_metrics()[-1]
    assert m.disk_used >= 1500 << 20, m
    assert 9 * GIB < m.disk_total <= 10 * GIB, f"the default disk is 10 GiB: {m}"
    assert m.mem_used < 512 << 20, f"the data is not in sandbox memory: {m}"
    # /tmp is on the same disk (as in E2B), not a memory filesystem.
    before = m.disk_used
    sbx.commands.run("head -c 64M /dev/urandom > /tmp/t", timeout=60)
    assert sbx.get_metrics()[-1].disk_used >= before + (60 << 20)


def test_a_full_disk_gives_enospc_and_recovers(sandboxes):
    name = f"small-disk-{uuid.uuid4().hex[:6]}"
    r = httpx.post(f"{API_URL}/firkin/v1/templates", json={"name": name, "diskSizeMB": 300},
                   headers=auth_headers(), timeout=180)
    assert r.status_code == 201, r.text
    try:
        sbx = sandboxes(name, timeout=120)
        with pytest.raises(CommandExitException) as err:
            sbx.commands.run("head -c 400M /dev/zero > /home/user/fill", timeout=120)
        assert "No space left on device" in err.value.stderr
        # The sandbox, its agent and its other files are fine; deleting frees the space.
        assert sbx.commands.run("echo alive").stdout == "alive\n"
        assert sbx.get_metrics()[-1].disk_total < 300 << 20
        sbx.commands.run("rm /home/user/fill")
        sbx.commands.run("head -c 100M /dev/zero > /home/user/again", timeout=60)
        assert sbx.commands.run("stat -c %s /home/user/again").stdout.strip() == str(100 << 20)
    finally:
        httpx.delete(f"{API_URL}/templates/{name}", headers=auth_headers(), timeout=30)


def test_invalid_disk_size_is_refused():
    r = httpx.post(f"{API_URL}/firkin/v1/templates", json={"name": "tiny-disk", "diskSizeMB": 10},
                   headers=auth_headers(), timeout=30)
    assert r.status_code == 400, r.text
    assert "diskSizeMB" in r.text


def test_disk_contents_survive_pause_snapshot_fork_and_continuation(sandboxes):
    sbx = sandboxes(timeout=300, metadata={"firkin.continuation": "on"})
    sbx.commands.run("head -c 96M /dev/urandom > /home/user/data && head -c 8M /dev/urandom > /tmp/scratch",
                     timeout=120)
    want = (sha(sbx, "/home/user/data"), sha(sbx, "/tmp/scratch"))

    sbx.pause()
    sbx = sandboxes.track(Sandbox.connect(sbx.sandbox_id))
    assert (sha(sbx, "/home/user/data"), sha(sbx, "/tmp/scratch")) == want, "after pause/resume"

    snap = sbx.create_snapshot()
    child = sandboxes(snap.snapshot_id, timeout=120)
    assert (sha(child, "/home/user/data"), sha(child, "/tmp/scratch")) == want, "from a snapshot"
    # A copy's writes are its own.
    child.commands.run("rm /home/user/data")
    assert sha(sbx, "/home/user/data") == want[0]

    results = sbx.fork(count=2)
    kids = [sandboxes.track(k) for k in results if not isinstance(k, Exception)]
    assert len(kids) == 2, results
    for kid in kids:
        assert sha(kid, "/home/user/data") == want[0], "in a fork child"

    sbx.kill()  # captured as a continuation (reason: stopped)
    follow = sandboxes(f"continuation-{sbx.sandbox_id}", timeout=120)
    assert (sha(follow, "/home/user/data"), sha(follow, "/tmp/scratch")) == want, "in a continuation"
