"""envd parity details the E2B SDKs (and their own test suites) rely on: how streams end when a
sandbox is killed or a command's deadline passes, what `EntryInfo` says about directories and
symlinks, how an expired signed URL is refused, and which watch events an upload raises.

Where the SDK hides the wire (it maps codes to exceptions), the wire itself is checked with a
plain HTTP client as well."""

import json
import struct
import threading
import time

import httpx
import pytest
from e2b import FileType, FilesystemEventType, SandboxNotRunningException, TimeoutException
from e2b_code_interpreter import Sandbox as CodeInterpreter

from conftest import API_URL, auth_headers, sandbox_headers

SANDBOX_URL = API_URL  # the suite's server serves both (E2B_SANDBOX_URL == E2B_API_URL)


def envelope(message):
    payload = json.dumps(message).encode()
    return struct.pack(">BI", 0, len(payload)) + payload


class ConnectStream:
    """A server-streaming Connect call read frame by frame: `(flags, json)` pairs."""

    def __init__(self, sbx, method, message, timeout_ms=None):
        headers = {**sandbox_headers(sbx), "Content-Type": "application/connect+json", "Connect-Protocol-Version": "1"}
        if timeout_ms is not None:
            headers["Connect-Timeout-Ms"] = str(timeout_ms)
        self.client = httpx.Client(base_url=SANDBOX_URL, timeout=30)
        self.cm = self.client.stream("POST", method, headers=headers, content=envelope(message))
        self.response = self.cm.__enter__()
        assert self.response.status_code == 200, self.response.read()
        assert self.response.headers["content-type"] == "application/connect+json"
        self.bytes = self.response.iter_bytes()
        self.buf = b""

    def _fill(self, n):
        while len(self.buf) < n:
            self.buf += next(self.bytes)  # StopIteration: the body ended

    def frame(self):
        self._fill(5)
        flags, length = struct.unpack(">BI", self.buf[:5])
        self._fill(5 + length)
        payload, self.buf = self.buf[5 : 5 + length], self.buf[5 + length :]
        return flags, json.loads(payload)

    def close(self):
        self.cm.__exit__(None, None, None)
        self.client.close()


def start_sleep(sbx, timeout_ms=None):
    req = {"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "sleep 60"]}, "stdin": False}
    stream = ConnectStream(sbx, "/process.Process/Start", req, timeout_ms)
    flags, first = stream.frame()
    assert flags == 0 and "start" in first["event"], first
    return stream


def kill_via_api(sbx):
    r = httpx.delete(f"{API_URL}/sandboxes/{sbx.sandbox_id}", headers=auth_headers(), timeout=30)
    assert r.status_code == 204, r.text


def test_kill_ends_a_running_command_stream_with_unavailable(sandboxes):
    sbx = sandboxes(timeout=120)
    stream = start_sleep(sbx)
    try:
        kill_via_api(sbx)
        flags, last = stream.frame()
        assert flags == 2, f"a cut stream must end with an end-of-stream frame, got {last}"
        assert last["error"]["code"] == "unavailable", last
        with pytest.raises(StopIteration):
            stream.frame()
    finally:
        stream.close()


def test_kill_makes_the_sdks_wait_raise_that_the_sandbox_is_gone(sandboxes):
    sbx = sandboxes(timeout=120)
    handle = sbx.commands.run("sleep 60", background=True)
    sbx.kill()
    started = time.time()
    with pytest.raises(SandboxNotRunningException) as e:
        handle.wait()
    assert "killed" in str(e.value)
    assert time.time() - started < 20


def test_pause_ends_a_running_command_stream_as_canceled(sandboxes):
    sbx = sandboxes(timeout=120)
    handle = sbx.commands.run("sleep 60", background=True)
    assert sbx.pause() is True
    # The SDK's mapping of `canceled`: the request was ended by the server while in flight.
    with pytest.raises(TimeoutException) as e:
        handle.wait()
    assert not isinstance(e.value, SandboxNotRunningException)
    assert "paused" in str(e.value)


def test_kill_during_run_code_raises_instead_of_returning_a_partial_result(sandboxes):
    ci = sandboxes(timeout=120, sandbox_class=CodeInterpreter)
    outcome = {}

    def run():
        try:
            outcome["result"] = ci.run_code("import time\nprint('begun', flush=True)\ntime.sleep(60)", timeout=90)
        except Exception as e:  # noqa: BLE001 - the exception is what is checked
            outcome["error"] = e

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(3)  # the execution is under way
    kill_via_api(ci)
    worker.join(30)
    assert not worker.is_alive(), "run_code still waits after the kill"
    assert "result" not in outcome, f"run_code returned {outcome.get('result')!r} after a kill"
    assert isinstance(outcome["error"], TimeoutException), repr(outcome["error"])
    assert "killed" in str(outcome["error"])


def test_a_commands_deadline_ends_its_stream_with_deadline_exceeded(sandbox):
    stream = start_sleep(sandbox, timeout_ms=2000)
    try:
        started = time.time()
        while True:
            flags, msg = stream.frame()
            if flags == 2:
                break
            assert "end" not in msg.get("event", {}), f"the deadline ended the stream with an end event: {msg}"
        assert msg["error"]["code"] == "deadline_exceeded", msg
        assert 1.5 < time.time() - started < 10
    finally:
        stream.close()
    time.sleep(0.5)
    assert "sleep 60" not in sandbox.commands.run("ps -eo args").stdout, "the process outlived its deadline"
    with pytest.raises(TimeoutException):
        sandbox.commands.run("sleep 30", timeout=2)


def test_directory_mode_is_permission_bits_only(sandbox):
    sandbox.files.make_dir("/home/user/modes/inner")
    info = sandbox.files.get_info("/home/user/modes")
    assert (info.type, info.mode, info.permissions) == (FileType.DIR, 0o755, "drwxr-xr-x")
    listed = {e.name: e for e in sandbox.files.list("/home/user/modes")}
    assert listed["inner"].mode == 0o755
    sandbox.commands.run("mkdir /tmp/sticky && chmod 1777 /tmp/sticky", user="root")
    sticky = sandbox.files.get_info("/tmp/sticky")
    assert (sticky.mode, sticky.permissions) == (0o777, "dtrwxrwxrwx")


def test_symlinks_report_their_target(sandbox):
    sandbox.files.write("/home/user/links/data.txt", "0123456789")
    sandbox.commands.run(
        "cd /home/user/links && chmod 600 data.txt && ln -s data.txt rel && ln -s /home/user/links/rel chain"
        " && ln -s /home/user/links up && ln -s nowhere dangling"
    )
    for name in ("rel", "chain"):
        info = sandbox.files.get_info(f"/home/user/links/{name}")
        assert info.type == FileType.FILE, name
        assert info.mode == 0o600, name
        assert info.symlink_target == "/home/user/links/data.txt", name
        assert info.path == f"/home/user/links/{name}"
    assert sandbox.files.get_info("/home/user/links/up").type == FileType.DIR
    # A dangling link has no type (so list() leaves it out) and names itself as its target.
    dangling = sandbox.files.get_info("/home/user/links/dangling")
    assert dangling.type is None
    assert dangling.symlink_target == "/home/user/links/dangling"
    names = {e.name for e in sandbox.files.list("/home/user/links")}
    assert names == {"data.txt", "rel", "chain", "up"}


def test_an_expired_signed_url_is_refused_as_expired(sandbox):
    sandbox.files.write("/home/user/shared.txt", "x")
    url = sandbox.download_url("/home/user/shared.txt", use_signature_expiration=1)
    time.sleep(2.5)
    want = {"code": 401, "message": "signature is already expired"}
    plain = httpx.get(url)  # no routing headers: the server finds the sandbox by signature
    assert (plain.status_code, plain.json()) == (401, want)
    routed = httpx.get(url, headers=sandbox_headers(sandbox, token=False))  # envd checks it
    assert (routed.status_code, routed.json()) == (401, want)
    wrong = httpx.get(url.replace("shared.txt", "other.txt"), headers=sandbox_headers(sandbox, token=False))
    assert (wrong.status_code, wrong.json()["message"]) == (401, "invalid signature")


def test_an_upload_raises_create_chmod_write_like_an_in_place_write(sandbox):
    sandbox.files.make_dir("/home/user/watched")
    handle = sandbox.files.watch_dir("/home/user/watched")
    try:
        sandbox.files.write("/home/user/watched/new.txt", "fresh content")
        deadline = time.time() + 5
        events = []
        while time.time() < deadline and len(events) < 3:
            events += handle.get_new_events()
            time.sleep(0.2)
        time.sleep(0.5)
        events += handle.get_new_events()
        assert [(e.name, e.type) for e in events] == [
            ("new.txt", FilesystemEventType.CREATE),
            ("new.txt", FilesystemEventType.CHMOD),
            ("new.txt", FilesystemEventType.WRITE),
        ]
    finally:
        handle.stop()
