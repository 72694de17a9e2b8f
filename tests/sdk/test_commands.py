"""envd process.Process through the SDK: foreground, streaming, background, stdin, kill, list,
connect, users, cwd, env, timeouts."""

import time

import pytest
from e2b import CommandExitException, TimeoutException


def test_foreground_echo(sandbox):
    r = sandbox.commands.run("echo hi")
    assert r.stdout == "hi\n"
    assert r.stderr == ""
    assert r.exit_code == 0


def test_non_zero_exit_raises_with_output(sandbox):
    with pytest.raises(CommandExitException) as e:
        sandbox.commands.run("echo out; echo err >&2; exit 3")
    assert e.value.exit_code == 3
    assert e.value.stdout == "out\n"
    assert e.value.stderr == "err\n"


def test_streaming_callbacks_are_incremental(sandbox):
    seen = []
    errs = []
    r = sandbox.commands.run(
        "for i in 1 2 3; do echo $i; echo e$i >&2; sleep 0.4; done",
        on_stdout=lambda d: seen.append((time.monotonic(), d)),
        on_stderr=lambda d: errs.append(d),
    )
    assert r.stdout == "1\n2\n3\n"
    assert "".join(seen_d for _, seen_d in seen) == "1\n2\n3\n"
    assert "".join(errs) == "e1\ne2\ne3\n"
    assert len(seen) >= 2
    assert seen[-1][0] - seen[0][0] > 0.5, "output must arrive while the command runs, not at the end"


def test_background_and_wait(sandbox):
    h = sandbox.commands.run("sleep 0.5; echo done", background=True)
    assert h.pid > 0
    r = h.wait()
    assert r.stdout == "done\n"
    assert r.exit_code == 0


def test_stdin_send_and_close(sandbox):
    h = sandbox.commands.run("cat", background=True, stdin=True)
    sandbox.commands.send_stdin(h.pid, "hello\n")
    sandbox.commands.send_stdin(h.pid, "world\n")
    sandbox.commands.close_stdin(h.pid)
    r = h.wait()
    assert r.stdout == "hello\nworld\n"


def test_kill_list_and_connect(sandbox):
    h = sandbox.commands.run("for i in $(seq 1 100); do echo tick $i; sleep 0.2; done", background=True)
    procs = sandbox.commands.list()
    assert h.pid in [p.pid for p in procs]
    attached = sandbox.commands.connect(h.pid)
    got = []
    deadline = time.time() + 10
    for stdout, _, _ in attached:
        if stdout:
            got.append(stdout)
        if "tick" in "".join(got) or time.time() > deadline:
            break
    assert "tick" in "".join(got)
    assert sandbox.commands.kill(h.pid) is True
    with pytest.raises(CommandExitException):
        h.wait()
    assert h.pid not in [p.pid for p in sandbox.commands.list()]
    assert sandbox.commands.kill(h.pid) is False


def test_process_survives_client_disconnect(sandbox):
    h = sandbox.commands.run("sleep 1; echo survived > /tmp/survivor", background=True)
    h.disconnect()
    time.sleep(2)
    assert sandbox.commands.run("cat /tmp/survivor").stdout == "survived\n"


def test_users_cwd_and_envs(sandbox):
    assert sandbox.commands.run("whoami").stdout == "user\n"
    assert sandbox.commands.run("pwd").stdout == "/home/user\n"
    assert sandbox.commands.run("whoami", user="root").stdout == "root\n"
    assert sandbox.commands.run("echo $HOME", user="root").stdout == "/root\n"
    assert sandbox.commands.run("pwd", cwd="/tmp").stdout == "/tmp\n"
    assert sandbox.commands.run("echo $X-$Y", envs={"X": "1", "Y": "2"}).stdout == "1-2\n"
    with pytest.raises(Exception):
        sandbox.commands.run("pwd", cwd="/does/not/exist")


def test_command_timeout_kills_it(sandbox):
    start = time.time()
    with pytest.raises(TimeoutException):
        sandbox.commands.run("sleep 30", timeout=2)
    assert time.time() - start < 15
    time.sleep(0.5)
    assert "sleep 30" not in sandbox.commands.run("ps -eo args").stdout


def test_large_output(sandbox):
    r = sandbox.commands.run("head -c 300000 /dev/zero | tr '\\0' 'x'")
    assert len(r.stdout) == 300000


def test_list_shows_a_running_sleep_with_its_command(sandbox):
    h = sandbox.commands.run("sleep 60", background=True, envs={"MARK": "listed"})
    try:
        procs = {p.pid: p for p in sandbox.commands.list()}
        assert h.pid in procs
        p = procs[h.pid]
        # the SDK starts `/bin/bash -l -c <cmd>`
        assert "sleep 60" in " ".join([p.cmd, *p.args])
        assert p.envs.get("MARK") == "listed"
    finally:
        assert sandbox.commands.kill(h.pid) is True


def test_async_sdk_commands_stream_and_background():
    import asyncio

    from e2b import AsyncSandbox

    async def main():
        sbx = await AsyncSandbox.create(timeout=60, envs={"WHO": "async"})
        try:
            chunks = []
            r = await sbx.commands.run(
                "for i in 1 2; do echo $WHO-$i; sleep 0.3; done", on_stdout=lambda d: chunks.append((time.monotonic(), d))
            )
            assert r.stdout == "async-1\nasync-2\n"
            assert "".join(d for _, d in chunks) == r.stdout
            assert chunks[-1][0] - chunks[0][0] > 0.2
            h = await sbx.commands.run("sleep 30", background=True)
            assert h.pid in [p.pid for p in await sbx.commands.list()]
            assert await sbx.commands.kill(h.pid) is True
            with pytest.raises(CommandExitException):
                await h.wait()
            await sbx.files.write("/home/user/a.txt", "from async")
            assert await sbx.files.read("/home/user/a.txt") == "from async"
            assert await sbx.is_running() is True
        finally:
            assert await sbx.kill() is True
        assert await sbx.is_running() is False

    asyncio.run(main())
