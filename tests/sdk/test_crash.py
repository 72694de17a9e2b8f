"""Crash safety: `kill -9` of the server in the middle of a create, a pause and a snapshot save,
then a new server on the same state: whatever it reports is real and consistent — no runsc
process, network namespace or staging directory beyond the sandboxes it lists as running, the
ledger holds exactly what runs, and nothing half-written is served."""

import os
import signal
import subprocess
import tempfile
import threading
import time

import pytest
from e2b import Sandbox, SandboxState

from conftest import host_consistent, own_server

KEY = "crash-key"
SUBNET = "10.216.0.0"


def server_pid(url):
    port = url.rsplit(":", 1)[1]
    out = subprocess.run(["pgrep", "-f", f"firkin serve --listen 127.0.0.1:{port}"], capture_output=True, text=True)
    return int(out.stdout.split()[0])


@pytest.mark.parametrize("when", ["create", "pause", "snapshot"])
def test_kill_9_mid_operation_then_restart_is_consistent(when):
    state = os.path.join(tempfile.mkdtemp(prefix=f"firkin-crash-{when}-"), "state")
    args = ("--subnet-base", SUBNET)
    with own_server(state, *args, key=KEY, cleanup=False) as url:
        conn = dict(api_key=KEY, api_url=url, sandbox_url=url)
        keep = Sandbox.create(timeout=300, **conn)  # running across the crash
        keep.files.write("/home/user/keep.txt", "kept")
        target = Sandbox.create(timeout=300, **conn) if when != "create" else None
        if target:
            target.commands.run("sleep 100000", background=True).disconnect()

        def operation():
            try:
                if when == "create":
                    Sandbox.create(timeout=300, request_timeout=30, **conn)
                elif when == "pause":
                    target.pause()
                else:
                    target.create_snapshot(name="crash-snap")
            except Exception:
                pass  # the server dies under it

        t = threading.Thread(target=operation)
        t.start()
        time.sleep(0.15)  # inside the operation (each takes 0.3-1 s here)
        os.kill(server_pid(url), signal.SIGKILL)
        t.join(timeout=60)
    # own_server's SIGTERM hit a dead process; start a new server on the same state.
    with own_server(state, *args, key=KEY) as url:
        conn = dict(api_key=KEY, api_url=url, sandbox_url=url)
        listed = host_consistent(url, state, KEY)
        ids = {s.sandbox_id: s.state for s in listed}
        assert ids.get(keep.sandbox_id) == SandboxState.RUNNING, "the untouched sandbox was re-adopted"
        assert Sandbox.connect(keep.sandbox_id, **conn).files.read("/home/user/keep.txt") == "kept"
        if target and target.sandbox_id in ids:
            # Paused only with a complete image, running only if it answers: either way usable.
            again = Sandbox.connect(target.sandbox_id, **conn)
            assert again.commands.run("echo up").stdout == "up\n"
        for s in Sandbox.list(**conn).next_items():
            Sandbox.kill(s.sandbox_id, **conn)
        host_consistent(url, state, KEY)
