"""Hygiene: a sandbox whose agent stops answering (here: its gVisor processes stopped from
outside with SIGSTOP) is found by the heartbeat and killed, releasing what it held; the
heartbeat marker of a healthy sandbox keeps being refreshed."""

import os
import re
import subprocess
import tempfile
import time

import httpx
from e2b import Sandbox, SandboxQuery

from conftest import own_server

KEY = "hygiene-key"


def test_stuck_sandbox_is_killed_and_its_capacity_released():
    state = os.path.join(tempfile.mkdtemp(prefix="firkin-hygiene-"), "state")
    with own_server(state, "--subnet-base", "10.215.0.0", "--stuck-after-secs", "4", key=KEY) as url:
        conn = dict(api_key=KEY, api_url=url, sandbox_url=url)
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
        while not re.search(r'^firkin_reservations\{class="active"\} 1$', httpx.get(f"{url}/metrics").text, re.M):
            assert time.time() < deadline, "the stuck sandbox's capacity was not released"
            time.sleep(0.5)
        healthy.kill()
