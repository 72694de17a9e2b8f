"""User ports through the proxy: a server in the sandbox is reachable from outside at
`E2b-Sandbox-Port: P`, also when it listens only on loopback (127.0.0.1 or ::1), which the
agent forwards as E2B's envd does, and again after pause/resume gives the sandbox a new
address; and the SDK's `get_host(port)` names a Host this server routes."""

import time

import httpx
import pytest
from e2b import Sandbox

from conftest import API_URL


def get(sbx, port, path="/"):
    return httpx.get(f"{API_URL}{path}", timeout=5,
                     headers={"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": str(port)})


def wait_for(sbx, port, path="/", within=10):
    deadline = time.time() + within
    while True:
        r = get(sbx, port, path)
        if r.status_code == 200:
            return r
        assert time.time() < deadline, f"port {port}: {r.status_code} {r.text[:200]}"
        time.sleep(0.25)


def serve(sbx, port, bind):
    sbx.files.write(f"/home/user/www{port}/hello.txt", f"hello from {bind}:{port}")
    return sbx.commands.run(f"cd /home/user/www{port} && python3 -m http.server {port} --bind {bind}",
                            background=True, timeout=0)


@pytest.mark.parametrize("bind", ["0.0.0.0", "127.0.0.1", "::1"])
def test_server_is_reachable_through_the_proxy(sandbox, bind):
    serve(sandbox, 8300, bind)
    assert wait_for(sandbox, 8300, "/hello.txt").text == f"hello from {bind}:8300"


def test_loopback_server_is_forwarded_again_after_resume_and_stops_with_it(sandboxes):
    sbx = sandboxes(timeout=120)
    h = serve(sbx, 8301, "127.0.0.1")
    assert wait_for(sbx, 8301, "/hello.txt").text == "hello from 127.0.0.1:8301"
    assert sbx.pause()
    sbx = Sandbox.connect(sbx.sandbox_id)
    assert wait_for(sbx, 8301, "/hello.txt").text == "hello from 127.0.0.1:8301"
    h.kill()
    deadline = time.time() + 10
    while get(sbx, 8301, "/hello.txt").status_code == 200:
        assert time.time() < deadline, "the forwarder outlived its server"
        time.sleep(0.25)
    # Another server on the same port is picked up.
    serve(sbx, 8301, "127.0.0.1")
    assert wait_for(sbx, 8301, "/hello.txt").status_code == 200


def test_get_host_names_a_host_this_server_routes(sandbox):
    # The create response carries the server's domain (default `localhost:<port>`), so the SDK's
    # get_host(port) is `{port}-{id}.localhost:<port>`; a request with that Host reaches the port.
    host = sandbox.get_host(8302)
    server_port = API_URL.rsplit(":", 1)[1]
    assert host == f"8302-{sandbox.sandbox_id}.localhost:{server_port}"
    serve(sandbox, 8302, "0.0.0.0")
    deadline = time.time() + 10
    while True:
        r = httpx.get(f"{API_URL}/hello.txt", headers={"Host": host}, timeout=5)
        if r.status_code == 200:
            break
        assert time.time() < deadline, f"{host}: {r.status_code} {r.text[:200]}"
        time.sleep(0.25)
    assert r.text == "hello from 0.0.0.0:8302"
