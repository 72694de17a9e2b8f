"""Bad input gets the documented error and loses nothing; the server keeps serving."""

import os
import uuid

import pytest
from e2b import Sandbox
from e2b.exceptions import FileNotFoundException, InvalidArgumentException, SandboxException

from conftest import auth_headers, sandbox_headers


def _assert_e2b_error(resp, status):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["code"] == status and isinstance(body["message"], str), body


def test_malformed_json_and_unknown_template(api):
    before = api.get("/v2/sandboxes", headers=auth_headers()).json()
    _assert_e2b_error(api.post("/v2/sandboxes", headers=auth_headers(), content=b"{not json"), 400)
    _assert_e2b_error(api.post("/v2/sandboxes", headers=auth_headers(), json={"metadata": {}}), 400)
    r = api.post("/v2/sandboxes", headers=auth_headers(), json={"templateID": "no-such-template", "metadata": {}, "envVars": {}})
    _assert_e2b_error(r, 404)
    assert "no-such-template" in r.json()["message"]
    _assert_e2b_error(api.post("/v2/sandboxes", headers=auth_headers(), json={"templateID": "base", "timeout": "soon"}), 400)
    after = api.get("/v2/sandboxes", headers=auth_headers()).json()
    assert {s["sandboxID"] for s in after} == {s["sandboxID"] for s in before}
    with pytest.raises(SandboxException):
        Sandbox.create(template="no-such-template")


def test_missing_and_wrong_api_key(api):
    _assert_e2b_error(api.get("/v2/sandboxes"), 401)
    _assert_e2b_error(api.get("/v2/sandboxes", headers=auth_headers("wrong-key")), 401)
    _assert_e2b_error(api.post("/v2/sandboxes", headers=auth_headers("wrong-key"), json={"templateID": "base"}), 401)
    from e2b.exceptions import AuthenticationException

    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="wrong-key")


def test_missing_and_wrong_access_token(api, sandbox):
    h = sandbox_headers(sandbox, token=False)
    rpc = {"Content-Type": "application/json", "Connect-Protocol-Version": "1"}
    r = api.post("/filesystem.Filesystem/Stat", headers={**h, **rpc}, json={"path": "/home/user"})
    assert r.status_code == 401, r.text
    r = api.post("/filesystem.Filesystem/Stat", headers={**h, **rpc, "X-Access-Token": "wrong"}, json={"path": "/home/user"})
    assert r.status_code == 401, r.text
    r = api.get("/files", params={"path": "/etc/hostname"}, headers=h)
    assert r.status_code == 401, r.text
    r = api.post("/filesystem.Filesystem/Stat", headers={**sandbox_headers(sandbox), **rpc}, json={"path": "/home/user"})
    assert r.status_code == 200, r.text


def test_paths_cannot_escape_the_sandbox(api, sandbox, tmp_path):
    marker = f"host-secret-{uuid.uuid4().hex}"
    host_dir = f"/tmp/firkin-escape-{uuid.uuid4().hex[:8]}"
    os.makedirs(host_dir)
    host_file = os.path.join(host_dir, "secret.txt")
    with open(host_file, "w") as f:
        f.write(marker)
    try:
        # `..` traversal resolves inside the sandbox's own root
        with pytest.raises(FileNotFoundException):
            sandbox.files.read("/home/user/../../.." + host_file)
        # a symlink inside the sandbox pointing at the host path points at the sandbox's path
        sandbox.commands.run(f"ln -s {host_file} /home/user/link-file && ln -s {host_dir} /home/user/link-dir && ln -s / /home/user/link-root")
        # a dangling link to a host directory is refused, not followed onto the host
        with pytest.raises(SandboxException):
            sandbox.files.write("/home/user/link-dir/planted.txt", "planted")
        # the same path existing inside the sandbox: the write lands there, never on the host
        sandbox.commands.run(f"mkdir -p {host_dir}", user="root")
        with pytest.raises(FileNotFoundException):
            sandbox.files.read("/home/user/link-file")
        sandbox.files.write("/home/user/link-dir/planted.txt", "planted")
        assert not os.path.exists(os.path.join(host_dir, "planted.txt"))
        assert sandbox.commands.run(f"cat {host_dir}/planted.txt").stdout == "planted"
        # the root the sandbox sees is its own (it has the agent mount), never the host's
        names = {e.name for e in sandbox.files.list("/home/user/link-root/opt/firkin")}
        assert "firkin-agent" in names
        r = api.get("/files", params={"path": "/home/user/../../etc/hostname"}, headers=sandbox_headers(sandbox))
        assert r.status_code == 200 and r.text.strip() == "firkin"
    finally:
        with open(host_file) as f:
            assert f.read() == marker
        for name in os.listdir(host_dir):
            os.remove(os.path.join(host_dir, name))
        os.rmdir(host_dir)


def test_symlink_to_etc_hostname_reads_the_sandboxs_file(sandbox):
    inside = sandbox.commands.run("cat /etc/hostname").stdout
    sandbox.commands.run("ln -s /etc/hostname /home/user/hn && ln -s ../../.. /home/user/up")
    assert sandbox.files.read("/home/user/hn") == inside
    assert sandbox.files.read("/home/user/up/etc/hostname") == inside
    assert sandbox.files.read("/home/user/up/../../../../etc/hostname") == inside
    with open("/etc/hostname") as f:
        host = f.read()
    if host != inside:
        assert sandbox.files.read("/home/user/hn") != host
    # a write through a symlink to / lands in the sandbox, not on the host
    marker = f"/opt/firkin-marker-{uuid.uuid4().hex[:8]}"
    sandbox.commands.run("ln -s / /home/user/root-link")
    sandbox.files.write(f"/home/user/root-link{marker}", "inside", user="root")
    assert sandbox.commands.run(f"cat {marker}").stdout == "inside"
    assert not os.path.exists(marker)


def test_directory_where_a_file_is_expected(sandbox):
    with pytest.raises(InvalidArgumentException):
        sandbox.files.read("/home/user")
    with pytest.raises(SandboxException):
        sandbox.files.write("/home/user", "cannot replace a directory")
    assert sandbox.files.get_info("/home/user").type.value == "dir"


def test_killed_sandbox_traffic_gets_502_not_found(api):
    sbx = Sandbox.create(timeout=60)
    sbx.kill()
    for port in (49983, 49999, 8080):
        r = api.get("/health", headers={"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": str(port)})
        assert r.status_code == 502
        body = r.json()
        assert body["message"] == "The sandbox was not found" and body["code"] == 502
        assert body["sandboxId"] == sbx.sandbox_id
    r = api.get("/health", headers={"E2b-Sandbox-Id": "unknownsandbox0000", "E2b-Sandbox-Port": "49983"})
    assert r.status_code == 502


def test_unsupported_features_say_so(api, sandbox):
    r = api.post(f"/sandboxes/{sandbox.sandbox_id}/snapshots", headers=auth_headers(), json={"memory": False})
    assert r.status_code == 501 and "filesystem-only" in r.json()["message"]
    proxy = {"egressProxy": {"address": "proxy.example.test:1080"}}
    body = {"templateID": "base", "network": proxy, "metadata": {}, "envVars": {}}
    r = api.post("/v2/sandboxes", headers=auth_headers(), json=body)
    assert r.status_code == 501 and "egressProxy" in r.json()["message"]
    r = api.put(f"/sandboxes/{sandbox.sandbox_id}/network", headers=auth_headers(), json=proxy)
    assert r.status_code == 501 and "egressProxy" in r.json()["message"]
    # A domain in denyOut is bad input, named.
    r = api.put(f"/sandboxes/{sandbox.sandbox_id}/network", headers=auth_headers(), json={"denyOut": ["example.test"]})
    assert r.status_code == 400 and "denyOut" in r.json()["message"]
    # autoResume is supported, but only together with autoPause (E2B's rule).
    body = {"templateID": "base", "autoResume": {"enabled": True}, "metadata": {}, "envVars": {}}
    r = api.post("/v2/sandboxes", headers=auth_headers(), json=body)
    assert r.status_code == 400 and "autoResume" in r.json()["message"]


def test_server_keeps_serving_after_bad_input(sandbox, sandboxes):
    assert sandbox.commands.run("echo still-alive").stdout == "still-alive\n"
    fresh = sandboxes(timeout=30)
    assert fresh.commands.run("echo fresh").stdout == "fresh\n"
