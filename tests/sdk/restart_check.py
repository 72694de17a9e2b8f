"""Durability across a server restart, driven by scripts/test.sh (not collected by pytest):

    restart_check.py prepare           -> creates and pauses a sandbox, prints its id and a pid
    restart_check.py verify ID PID     -> after the server restarted: still paused, resumes intact
    restart_check.py prepare-running   -> creates a running sandbox, prints its id and a pid
    restart_check.py verify-running ID PID -> after a kill -9 of the server and a restart: still
                                          running (re-adopted), same process, files intact
"""

import sys

from e2b import Sandbox, SandboxState


def prepare():
    sbx = Sandbox.create(timeout=300, envs={"KEPT": "yes"})
    sbx.files.write("/home/user/durable.txt", "written before the restart")
    h = sbx.commands.run("sleep 100000", background=True)
    h.disconnect()
    assert sbx.pause() is True
    print(sbx.sandbox_id, h.pid)


def verify(sandbox_id, pid):
    info = Sandbox.get_info(sandbox_id)
    assert info.state == SandboxState.PAUSED, info.state
    sbx = Sandbox.connect(sandbox_id)
    assert sbx.files.read("/home/user/durable.txt") == "written before the restart"
    assert sbx.commands.run("echo $KEPT").stdout == "yes\n"
    assert sbx.commands.run(f"ps -o comm= -p {pid}").stdout.strip() == "sleep"
    assert sbx.kill() is True
    print("restart check: paused sandbox survived the restart and resumed intact")


def prepare_running():
    sbx = Sandbox.create(timeout=300, envs={"KEPT": "running"})
    sbx.files.write("/home/user/alive.txt", "written before the crash")
    h = sbx.commands.run("sleep 100000", background=True)
    h.disconnect()
    print(sbx.sandbox_id, h.pid)


def verify_running(sandbox_id, pid):
    info = Sandbox.get_info(sandbox_id)
    assert info.state == SandboxState.RUNNING, info.state
    sbx = Sandbox.connect(sandbox_id)
    assert sbx.files.read("/home/user/alive.txt") == "written before the crash"
    assert sbx.commands.run("echo $KEPT").stdout == "running\n"
    assert sbx.commands.run(f"ps -o comm= -p {pid}").stdout.strip() == "sleep"
    assert sbx.kill() is True
    print("crash check: the running sandbox was re-adopted after kill -9 of the server")


if __name__ == "__main__":
    {"prepare": lambda: prepare(), "verify": lambda: verify(sys.argv[2], sys.argv[3]),
     "prepare-running": lambda: prepare_running(),
     "verify-running": lambda: verify_running(sys.argv[2], sys.argv[3])}[sys.argv[1]]()
