"""PTY sessions: create, input, resize, kill."""

import threading
import time

from e2b import PtySize


def _wait_for(buf, needle, seconds=10):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if needle in b"".join(buf).decode(errors="replace"):
            return True
        time.sleep(0.1)
    return False


def test_pty_create_send_resize_kill(sandbox):
    out = []
    pty = sandbox.pty.create(PtySize(rows=24, cols=80), timeout=60)

    def pump():
        try:
            pty.wait(on_pty=out.append)
        except Exception:
            pass  # killed below: a non-zero end is expected

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    sandbox.pty.send_stdin(pty.pid, b"echo hello-$((40+2))\n")
    assert _wait_for(out, "hello-42"), b"".join(out)
    sandbox.pty.send_stdin(pty.pid, b"stty size\n")
    assert _wait_for(out, "24 80"), b"".join(out)
    sandbox.pty.resize(pty.pid, PtySize(rows=40, cols=100))
    sandbox.pty.send_stdin(pty.pid, b"stty size\n")
    assert _wait_for(out, "40 100"), b"".join(out)
    assert sandbox.pty.kill(pty.pid) is True
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert pty.pid not in [p.pid for p in sandbox.commands.list()]
