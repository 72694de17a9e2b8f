"""Hygiene, on a server of its own (stuck threshold 4 s, JSON logs, and a `runsc` wrapper that
can be told to fail restores):

- a sandbox whose agent stops answering (its gVisor processes stopped from outside with
  SIGSTOP) is found by the heartbeat and killed, releasing what it held; the heartbeat marker
  of a healthy sandbox keeps being refreshed;
- a restore that fails (runsc reports failure after really starting the sandbox) fails the
  create cleanly and releases everything: capacity, network namespace, runsc processes;
- a sandbox opted into continuations whose template start command exits is captured with
  reason `exited` and its exit code;
- log lines are JSON objects with the fields of the event."""

import json
import os
import subprocess
import tempfile
import time
import uuid

import httpx
import pytest
from e2b import Sandbox, SandboxQuery
from e2b.exceptions import SandboxException

from conftest import auth_headers, host_consistent, own_server, reservations

KEY = "hygiene-key"

# Passes everything through to the real runsc, except that while FAIL_FLAG exists a restore
# is run for real and then reported as failed.
WRAPPER = """#!/bin/sh
for a in "$@"; do
  if [ "$a" = restore ] && [ -e "{flag}" ]; then
    runsc "$@"
    echo "injected restore failure" >&2
    exit 1
  fi
done
exec runsc "$@"
"""


@pytest.fixture(scope="module")
def server():
    top = tempfile.mkdtemp(prefix="firkin-hygiene-")
    state = os.path.join(top, "state")
    flag = os.path.join(top, "fail-restore")
    wrapper = os.path.join(top, "runsc-wrapper")
    with open(wrapper, "w") as f:
        f.write(WRAPPER.format(flag=flag))
    os.chmod(wrapper, 0o755)
    args = ("--subnet-base", "10.215.0.0", "--stuck-after-secs", "4", "--log-format", "json",
            "--runsc", wrapper)
    with own_server(state, *args, key=KEY, cleanup=False) as url:
        yield dict(url=url, state=state, flag=flag, log=os.path.join(top, f"server-{url.rsplit(':', 1)[1]}.log"),
                   conn=dict(api_key=KEY, api_url=url, sandbox_url=url))
    import shutil
    shutil.rmtree(top, ignore_errors=True)


def active_reservations(url):
    return reservations(url).get("active", 0)


def test_stuck_sandbox_is_killed_and_its_capacity_released(server):
    url, state, conn = server["url"], server["state"], server["conn"]
    healthy = Sandbox.create(timeout=120, **conn)
    stuck = Sandbox.create(timeout=120, **conn)
    marker = os.path.join(state, "run", "sandboxes", healthy.sandbox_id, "heartbeat")
    deadline = time.time() + 15
    while not os.path.exists(marker):
        assert time.time() < deadline, "no heartbeat marker"
        time.sleep(0.2)
    pids = subprocess.run(["pgrep", "-f", stuck.sandbox_id], capture_output=True, text=True).stdout.split()
    assert pids, "the stuck sandbox's runsc processes"
    subprocess.run(["kill", "-STOP", *pids], check=True)
    try:
        deadline = time.time() + 30
        while True:
            ids = [s.sandbox_id for s in Sandbox.list(query=SandboxQuery(), **conn).next_items()]
            if stuck.sandbox_id not in ids:
                break
            assert time.time() < deadline, "the stuck sandbox was not cleaned up"
            time.sleep(0.5)
    finally:
        subprocess.run(["kill", "-CONT", *pids])
    assert healthy.sandbox_id in ids, "the healthy one is left alone"
    assert healthy.commands.run("echo fine").stdout == "fine\n"
    first = open(marker).read()
    time.sleep(2.5)
    assert int(open(marker).read()) >= int(first)
    # The stuck one's teardown finishes in the background; then only the healthy one holds
    # capacity.
    deadline = time.time() + 30
    while active_reservations(url) != 1:
        assert time.time() < deadline, "the stuck sandbox's capacity was not released"
        time.sleep(0.5)
    healthy.kill()


def test_failed_restore_releases_capacity_and_host_resources(server):
    url, state, conn = server["url"], server["state"], server["conn"]
    keep = Sandbox.create(timeout=120, **conn)
    open(server["flag"], "w").close()
    try:
        for _ in range(2):
            with pytest.raises(SandboxException) as err:
                Sandbox.create(timeout=60, **conn)
            assert "injected restore failure" in str(err.value)
    finally:
        os.unlink(server["flag"])
    # Only `keep` holds anything: no namespace, runsc process or reservation of the failures.
    listed = host_consistent(url, state, KEY)
    assert [s.sandbox_id for s in listed] == [keep.sandbox_id]
    assert active_reservations(url) == 1
    after = Sandbox.create(timeout=60, **conn)  # and the next create works
    assert after.commands.run("echo ok").stdout == "ok\n"
    after.kill()
    keep.kill()
    host_consistent(url, state, KEY)
    assert active_reservations(url) == 0


def test_exited_start_command_is_captured_as_an_exited_continuation(server, sandboxes):
    url, conn = server["url"], server["conn"]
    name = f"exits-{uuid.uuid4().hex[:6]}"
    body = {"name": name, "start": {"cmd": "while [ ! -e /tmp/finish ]; do sleep 0.2; done; exit 7"}}
    r = httpx.post(f"{url}/firkin/v1/templates", json=body, headers=auth_headers(KEY), timeout=180)
    assert r.status_code == 201, r.text

    # Without the opt-in an exited start command leaves the sandbox running (as in E2B).
    plain = sandboxes(name, timeout=120, **conn)
    plain.files.write("/tmp/finish", "")
    # Opted in: the exit captures the sandbox and ends it.
    sbx = Sandbox.create(name, timeout=120, metadata={"firkin.continuation": "on"}, **conn)
    sbx.files.write("/home/user/result.txt", "42")
    sbx.files.write("/tmp/finish", "")
    deadline = time.time() + 30
    while sbx.is_running():
        assert time.time() < deadline, "the exited sandbox was not ended"
        time.sleep(0.5)
    while True:  # the capture completes a moment after the sandbox stops answering
        try:
            follow = sandboxes(f"continuation-{sbx.sandbox_id}", timeout=60, **conn)
            break
        except SandboxException:
            assert time.time() < deadline, "no continuation snapshot appeared"
            time.sleep(0.25)
    meta = follow.get_info().metadata
    assert meta["firkin.continuation.reason"] == "exited"
    assert meta["firkin.continuation.exitCode"] == "7"
    assert meta["firkin.continuation.from"] == sbx.sandbox_id
    assert follow.files.read("/home/user/result.txt") == "42"
    # The follow-up has no main workload left; it is not ended again.
    time.sleep(3)
    assert follow.is_running()
    assert plain.is_running()
    assert plain.commands.run("echo still here").stdout == "still here\n"
    follow.kill()
    plain.kill()
    assert Sandbox.delete_snapshot(f"continuation-{sbx.sandbox_id}", **conn) is True
    assert httpx.delete(f"{url}/templates/{name}", headers=auth_headers(KEY)).status_code == 204

    # A start command that had already ended when the template was checkpointed (a one-shot)
    # is not the sandbox exiting.
    body = {"name": f"{name}-once", "start": {"cmd": "echo started once"}}
    r = httpx.post(f"{url}/firkin/v1/templates", json=body, headers=auth_headers(KEY), timeout=180)
    assert r.status_code == 201, r.text
    once = Sandbox.create(f"{name}-once", timeout=60, metadata={"firkin.continuation": "on"}, **conn)
    time.sleep(3)
    assert once.is_running()
    once.kill()
    assert httpx.delete(f"{url}/templates/{name}-once", headers=auth_headers(KEY)).status_code == 204


def test_logs_are_json_lines_with_event_fields(server):
    conn = server["conn"]
    sbx = Sandbox.create(timeout=60, **conn)
    sbx.kill()
    # The server keeps writing: leave out a last line that is not complete yet.
    lines = open(server["log"]).read().split("\n")[:-1]
    # Every log line is one JSON object (stdout carries only the startup banner).
    banner = ("firkin is serving", "export E2B_")
    events = [json.loads(line) for line in lines if line.strip() and not line.startswith(banner)]
    assert all({"timestamp", "level", "message"} <= e.keys() for e in events)
    api = [e for e in events if e["message"] == "api request" and e.get("path") == "/v2/sandboxes"]
    assert api and api[-1]["method"] == "POST" and api[-1]["status"] == 201
    assert any(e.get("sandbox") == sbx.sandbox_id for e in events), "events name their sandbox"
