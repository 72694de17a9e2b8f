"""Durability across a server restart, driven by scripts/test.sh (not collected by pytest):

    restart_check.py prepare           -> creates and pauses a sandbox, prints its id and a pid
    restart_check.py verify ID PID     -> after the server restarted: still paused, resumes intact
    restart_check.py prepare-running   -> creates a running sandbox, prints its id and a pid
    restart_check.py verify-running ID PID -> after a kill -9 of the server and a restart: still
                                          running (re-adopted), same process, files intact
"""

import sys

from e2b import Sandbox, SandboxState


def _prepare(kept, path, text):
    """A sandbox with env KEPT, a file and a background process; prints its id and the pid."""
    sbx = Sandbox.create(timeout=300, envs={"KEPT": kept})
    sbx.files.write(path, text)
    h = sbx.commands.run("sleep 100000", background=True)
    h.disconnect()
    return sbx, h.pid


def _verify(sandbox_id, pid, state, kept, path, text):
    """The sandbox is listed in `state`, and after connect its file, env and process are intact."""
    info = Sandbox.get_info(sandbox_id)
    assert info.state == state, info.state
    sbx = Sandbox.connect(sandbox_id)
    assert sbx.files.read(path) == text
    assert sbx.commands.run("echo $KEPT").stdout == kept + "\n"
    assert sbx.commands.run(f"ps -o comm= -p {pid}").stdout.strip() == "sleep"
    assert sbx.kill() is True


def prepare():
    sbx, pid = _prepare("yes", "/home/user/durable.txt", "written before the restart")
    assert sbx.pause() is True
    print(sbx.sandbox_id, pid)


def verify(sandbox_id, pid):
    _verify(sandbox_id, pid, SandboxState.PAUSED, "yes", "/home/user/durable.txt", "written before the restart")
    print("restart check: paused sandbox survived the restart and resumed intact")


def prepare_running():
    sbx, pid = _prepare("running", "/home/user/alive.txt", "written before the crash")
    print(sbx.sandbox_id, pid)


def verify_running(sandbox_id, pid):
    _verify(sandbox_id, pid, SandboxState.RUNNING, "running", "/home/user/alive.txt", "written before the crash")
    print("crash check: the running sandbox was re-adopted after kill -9 of the server")


if __name__ == "__main__":
    {"prepare": lambda: prepare(), "verify": lambda: verify(sys.argv[2], sys.argv[3]),
     "prepare-running": lambda: prepare_running(),
     "verify-running": lambda: verify_running(sys.argv[2], sys.argv[3])}[sys.argv[1]]()
