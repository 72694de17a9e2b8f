"""Disk free-space floors, against a second real server whose state lives on a small
loop-mounted filesystem: below the floor, restores and checkpoint saves are refused with 507 and
E2B JSON, nothing half-written is left, the running sandbox keeps working, and everything works
again once space is freed."""

import os
import shutil
import subprocess
import tempfile

import httpx
import pytest
from e2b import Sandbox

from conftest import own_server

KEY = "disk-floor-key"
FLOOR_MB = 60


def free_mb(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize // (1 << 20)


@pytest.fixture(scope="module")
def small_store():
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4"):
        pytest.skip("needs root and mkfs.ext4")
    work = tempfile.mkdtemp(prefix="firkin-floor-")
    img, mnt = os.path.join(work, "fs.img"), os.path.join(work, "mnt")
    os.makedirs(mnt)
    subprocess.run(["truncate", "-s", "192M", img], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", img], check=True)
    subprocess.run(["mount", "-o", "loop", img, mnt], check=True)
    floors = f"restore={FLOOR_MB},snapshot={FLOOR_MB},warm={2 * FLOOR_MB}"
    try:
        # The ledger's disk capacity defaults to the store's free space (tiny here); this test
        # is about the floors, not the ledger.
        with own_server(os.path.join(mnt, "state"), "--subnet-base", "10.214.0.0", "--capacity",
                        "disk=100000", key=KEY, env={"FIRKIN_DISK_FLOORS": floors}) as url:
            yield url, mnt
    finally:
        subprocess.run(["umount", "-l", mnt])
        shutil.rmtree(work, ignore_errors=True)


def leftovers(mnt):
    out = []
    for d in ("templates", "snapshots/images", "snapshots/paused"):
        path = os.path.join(mnt, "state", d)
        if os.path.isdir(path):
            out += [f"{d}/{n}" for n in os.listdir(path) if n.startswith(".")]
    return out


def test_below_the_floor_restores_and_saves_are_refused_cleanly(small_store):
    url, mnt = small_store
    conn = dict(api_key=KEY, api_url=url, sandbox_url=url)
    sbx = Sandbox.create(timeout=120, **conn)
    filler = os.path.join(mnt, "filler")
    try:
        sbx.files.write("/home/user/keep.txt", "kept")
        # Leave less than the floor free.
        subprocess.run(["fallocate", "-l", f"{max(free_mb(mnt) - FLOOR_MB // 2, 1)}M", filler], check=True)
        assert free_mb(mnt) < FLOOR_MB
        api = httpx.Client(base_url=url, headers={"X-API-KEY": KEY}, timeout=30)
        r = api.post("/v2/sandboxes", json={"templateID": "base", "metadata": {}, "envVars": {}})
        assert r.status_code == 507, r.text
        assert r.json()["code"] == 507 and "restore refused" in r.json()["message"]
        r = api.post(f"/sandboxes/{sbx.sandbox_id}/pause")
        assert r.status_code == 507 and "snapshot save refused" in r.json()["message"], r.text
        r = api.post(f"/sandboxes/{sbx.sandbox_id}/snapshots", json={})
        assert r.status_code == 507, r.text
        assert leftovers(mnt) == [], "no half-written artifact"
        # The sandbox was never touched: still running, still serving.
        assert sbx.files.read("/home/user/keep.txt") == "kept"
        assert Sandbox.get_info(sbx.sandbox_id, **conn).state.value == "running"
        os.remove(filler)
        assert sbx.pause() is True
        again = Sandbox.connect(sbx.sandbox_id, **conn)
        assert again.files.read("/home/user/keep.txt") == "kept"
        fresh = Sandbox.create(timeout=30, **conn)
        fresh.kill()
    finally:
        if os.path.exists(filler):
            os.remove(filler)
        sbx.kill()
