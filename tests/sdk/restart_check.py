"""Durability across a server restart, driven by scripts/test.sh (not collected by pytest):

    restart_check.py prepare   -> creates and pauses a sandbox, prints its id
    restart_check.py verify ID -> after the server restarted: still paused, resumes intact
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


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare()
    else:
        verify(sys.argv[2], sys.argv[3])
