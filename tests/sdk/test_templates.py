"""Template builds (firkin's build route) and create = restore of the built template, with the
real SDK: the setup's files, env, workdir and a server started by the start command are all
there the moment create returns."""

import base64
import os
import uuid

import httpx
import pytest
from e2b import Sandbox
from e2b.exceptions import SandboxException

from conftest import API_URL, auth_headers

BUILD = "/firkin/v1/templates"


def spec(name, **extra):
    s = {
        "name": name,
        "steps": [
            {"type": "env", "vars": {"GREETING": "hello", "MODE": "built"}},
            {"type": "workdir", "path": "/srv/app"},
            {"type": "copy", "dest": "/srv/app/index.html",
             "contentBase64": base64.b64encode(b"<h1>from the template</h1>\n").decode()},
            {"type": "run", "cmd": "echo \"$(whoami):$GREETING\" > built.txt"},
            {"type": "run", "cmd": "mkdir -p /opt/tool && echo root-step > /opt/tool/mark", "user": "root"},
        ],
        "start": {"cmd": "python3 -m http.server 8000"},
        "ready": {"type": "http", "port": 8000, "path": "/index.html"},
    }
    s.update(extra)
    return s


def build(api, body, timeout=180):
    return api.post(BUILD, json=body, headers=auth_headers(), timeout=timeout)


def test_build_and_create_restores_the_prepared_sandbox(api, sandboxes):
    name = f"tpl-{uuid.uuid4().hex[:8]}"
    r = build(api, spec(name))
    assert r.status_code == 201, r.text
    t = r.json()
    assert t["templateID"] == name and t["buildID"].startswith("tpl-")
    assert t["artifactBytes"] > 0
    listed = api.get("/templates", headers=auth_headers()).json()
    assert name in [x["templateID"] for x in listed]
    assert {"base"} <= {x["templateID"] for x in listed}
    sbx = sandboxes(name, timeout=60, envs={"EXTRA": "x"})
    assert sbx.get_info().template_id == name
    out = sbx.commands.run("pwd; cat built.txt; cat /opt/tool/mark; echo $GREETING-$MODE-$EXTRA")
    assert out.stdout.split("\n")[:4] == ["/srv/app", "user:hello", "root-step", "hello-built-x"]
    assert sbx.files.read("/srv/app/index.html") == "<h1>from the template</h1>\n"
    # The start command's server was checkpointed listening: it answers at once.
    page = sbx.commands.run("curl -fsS http://127.0.0.1:8000/index.html").stdout
    assert "from the template" in page
    # ... also from outside, through the proxy.
    via_proxy = httpx.get(f"{API_URL}/index.html",
                          headers={"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "8000"})
    assert via_proxy.status_code == 200 and "from the template" in via_proxy.text
    # Two sandboxes of one template are independent copies.
    other = sandboxes(name, timeout=60)
    sbx.files.write("/srv/app/built.txt", "changed")
    assert other.files.read("/srv/app/built.txt") == "user:hello\n"
    other.kill()
    sbx.kill()
    assert api.delete(f"/templates/{name}", headers=auth_headers()).status_code == 204
    assert api.get(f"/templates/{name}", headers=auth_headers()).status_code == 404
    with pytest.raises(SandboxException):
        Sandbox.create(name)


def test_failing_step_fails_the_build_with_its_output_and_leaves_nothing(api):
    name = f"tpl-bad-{uuid.uuid4().hex[:8]}"
    body = spec(name)
    body["steps"].append({"type": "run", "cmd": "echo about-to-fail; echo on-stderr >&2; exit 7"})
    r = build(api, body)
    assert r.status_code == 400, r.text
    msg = r.json()["message"]
    assert "exited with 7" in msg and "about-to-fail" in msg and "on-stderr" in msg
    assert api.get(f"/templates/{name}", headers=auth_headers()).status_code == 404
    assert name not in [x["templateID"] for x in api.get("/templates", headers=auth_headers()).json()]
    assert all(s.metadata.get("template") != name for s in Sandbox.list().next_items())


def test_ready_check_timeout_fails_the_build(api):
    name = f"tpl-slow-{uuid.uuid4().hex[:8]}"
    body = {"name": name, "ready": {"type": "port", "port": 9}, "readyTimeoutSecs": 2}
    r = build(api, body)
    assert r.status_code == 400, r.text
    assert "ready check" in r.json()["message"]
    assert api.get(f"/templates/{name}", headers=auth_headers()).status_code == 404


@pytest.mark.parametrize("body,needle", [
    ({"name": "Bad Name"}, "invalid"),
    ({"name": "base"}, "reserved"),
    ({"name": "x-ok", "from": "ubuntu"}, "ubuntu"),
    ({"name": "x-ok", "steps": [{"type": "copy", "dest": "../etc", "contentBase64": ""}]}, "absolute"),
    ({"name": "x-ok", "steps": [{"type": "teleport"}]}, "invalid request body"),
])
def test_bad_specs_are_rejected_before_anything_runs(api, body, needle):
    r = build(api, body)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == 400
    assert needle in r.json()["message"]


def test_build_progress_streams_as_ndjson(api):
    name = f"tpl-stream-{uuid.uuid4().hex[:8]}"
    body = {"name": name, "steps": [{"type": "run", "cmd": "true"}]}
    with api.stream("POST", BUILD, json=body, timeout=120,
                    headers={**auth_headers(), "Accept": "application/x-ndjson"}) as r:
        assert r.status_code == 200
        import json
        lines = [json.loads(l) for l in r.iter_lines() if l]
    assert [l["type"] for l in lines[:-1]] == ["progress"] * (len(lines) - 1)
    assert lines[-1]["type"] == "done" and lines[-1]["template"]["templateID"] == name
    assert lines[-1]["template"]["buildMs"] > 0
    assert api.delete(f"/templates/{name}", headers=auth_headers()).status_code == 204


@pytest.mark.skipif("FIRKIN_STATE_DIR" not in os.environ, reason="needs the server's state dir on this host")
def test_corrupted_template_is_refused_and_quarantined(api):
    name = f"tpl-corrupt-{uuid.uuid4().hex[:8]}"
    r = build(api, {"name": name})
    assert r.status_code == 201, r.text
    build_id = r.json()["buildID"]
    img = os.path.join(os.environ["FIRKIN_STATE_DIR"], "templates", build_id)
    biggest = max((f for f in os.listdir(img) if f != "manifest.json"),
                  key=lambda f: os.path.getsize(os.path.join(img, f)))
    path = os.path.join(img, biggest)
    with open(path, "r+b") as f:  # same size, one byte flipped: only the digest can tell
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(SandboxException) as e:
        Sandbox.create(name)
    assert "integrity" in str(e.value)
    quarantined = os.listdir(os.path.join(os.environ["FIRKIN_STATE_DIR"], "quarantine"))
    assert any(q.startswith(build_id) for q in quarantined)
    assert api.get(f"/templates/{name}", headers=auth_headers()).status_code == 404
