"""Freshness sync: a sandbox restored from a template whose git checkout is behind its remote
is brought up to date right after create; reads work at once, writes wait for the sync."""

import time
import uuid

import pytest
from e2b.exceptions import SandboxException

from conftest import auth_headers

SETUP = " && ".join([
    "git init -q -b main /home/user/origin",
    "cd /home/user/origin",
    "git -c user.email=t@t -c user.name=t commit -q --allow-empty -m one",
    "git -c user.email=t@t -c user.name=t commit -q --allow-empty -m two",
    "git clone -q /home/user/origin /home/user/repo",
    "cd /home/user/repo",
    "git reset -q --hard HEAD~1",  # the template's checkout is one commit behind
    # A slow remote: fetches take ~3 s, so a write right after create meets a running sync.
    "printf '#!/bin/sh\\nsleep 3\\nexec git-upload-pack \"$@\"\\n' > /home/user/slow-upload-pack",
    "chmod +x /home/user/slow-upload-pack",
    "git config remote.origin.uploadpack /home/user/slow-upload-pack",
])


@pytest.fixture(scope="module")
def template(api_module):
    name = f"sync-{uuid.uuid4().hex[:8]}"
    r = api_module.post("/firkin/v1/templates", headers=auth_headers(), timeout=180,
                        json={"name": name, "steps": [{"type": "run", "cmd": SETUP}]})
    assert r.status_code == 201, r.text
    yield name
    api_module.delete(f"/templates/{name}", headers=auth_headers())


@pytest.fixture(scope="module")
def api_module():
    import httpx
    from conftest import API_URL
    with httpx.Client(base_url=API_URL, timeout=30) as c:
        yield c


def head(sbx):
    return sbx.commands.run("git -C /home/user/repo log -1 --format=%s").stdout.strip()


def wait_status(sbx, want, timeout=60):
    deadline = time.time() + timeout
    while (status := sbx.get_info().metadata.get("firkin.sync.status")) != want:
        assert time.time() < deadline, f"sync status {status!r}, wanted {want!r}"
        time.sleep(0.2)


def test_sync_brings_the_checkout_up_to_date_and_gates_writes(template, sandboxes):
    sbx = sandboxes(template, timeout=60, metadata={
        "firkin.sync.checkout": "/home/user/repo", "firkin.sync.branch": "main"})
    assert sbx.get_info().metadata["firkin.sync.status"] == "running"
    # Reads are served at once ...
    assert sbx.files.read("/home/user/repo/.git/HEAD").startswith("ref: refs/heads/main")
    # ... writes are refused, clearly, until the sync is done.
    with pytest.raises(SandboxException) as e:
        sbx.files.write("/home/user/repo/new.txt", "too early")
    assert "freshness sync" in str(e.value) and "still running" in str(e.value)
    wait_status(sbx, "done")
    assert head(sbx) == "two", "reset to origin/main"
    sbx.files.write("/home/user/repo/new.txt", "after the sync")
    assert sbx.files.read("/home/user/repo/new.txt") == "after the sync"


def test_without_sync_metadata_the_checkout_stays_as_built(template, sandboxes):
    sbx = sandboxes(template, timeout=60)
    assert head(sbx) == "one"
    assert "firkin.sync.status" not in sbx.get_info().metadata
    sbx.files.write("/home/user/x.txt", "writes are fine")


def test_a_failed_sync_is_reported_and_writes_fail_with_its_error(template, sandboxes):
    sbx = sandboxes(template, timeout=60, metadata={
        "firkin.sync.checkout": "/home/user/repo", "firkin.sync.target": "origin/no-such-branch"})
    wait_status(sbx, "failed")
    meta = sbx.get_info().metadata
    assert "no-such-branch" in meta["firkin.sync.error"], meta
    with pytest.raises(SandboxException) as e:
        sbx.files.write("/home/user/repo/new.txt", "x")
    assert "freshness sync" in str(e.value) and "failed" in str(e.value), str(e.value)
    assert head(sbx) == "one", "a failed sync leaves the checkout as it was"
