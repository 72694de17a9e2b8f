"""Options firkin does not implement yet are refused with an error naming them, never silently
ignored or replaced by something else (the sandbox involved keeps running as it was)."""

import httpx
import pytest
from e2b import Sandbox
from e2b.exceptions import SandboxException

from conftest import API_URL, auth_headers


def refused(call, *words):
    with pytest.raises(SandboxException) as err:
        call()
    text = str(err.value)
    assert "not supported" in text, text
    for w in words:
        assert w in text, text


def test_filesystem_only_pause_and_reboot_resume_are_refused(sandboxes):
    sbx = sandboxes(timeout=120)
    sbx.files.write("/home/user/kept.txt", "still here")
    refused(lambda: sbx.pause(mode="filesystem"), "filesystem-only pause")
    assert sbx.is_running(), "a refused pause leaves the sandbox running"
    assert sbx.files.read("/home/user/kept.txt") == "still here"
    sbx.pause()
    refused(lambda: Sandbox.connect(sbx.sandbox_id, on_resume="reboot"), "reboot")
    again = sandboxes.track(Sandbox.connect(sbx.sandbox_id))
    assert again.files.read("/home/user/kept.txt") == "still here", "a normal resume still works"


def test_create_options_firkin_cannot_honour_are_refused(sandboxes):
    for network, field in [
        ({"egress_proxy": {"address": "proxy.example.test:1080"}}, "egressProxy"),
        ({"dns_servers": ["198.18.0.53"]}, "dnsServers"),
        ({"mask_request_host": "${PORT}-box.example.test"}, "maskRequestHost"),
        ({"https_ports": [3000]}, "httpsPorts"),
        ({"allow_out": ["api.example.test"], "rules": {"api.example.test": [{"transform": {"headers": {"X": "1"}}}]}},
         "rules"),
    ]:
        refused(lambda: sandboxes(timeout=60, network=network), field)
    refused(lambda: sandboxes(timeout=60, lifecycle={"on_timeout": {"action": "pause", "mode": "filesystem"}}),
            "autoPauseMemory")
    # Egress rules and private traffic are implemented (tests/sdk/test_network.py): accepted.
    ok = sandboxes(timeout=60, network={"deny_out": ["0.0.0.0/0"], "allow_public_traffic": False})
    assert ok.commands.run("echo ok").stdout == "ok\n"


def test_raw_bodies_name_the_field():
    body = {"templateID": "base", "volumeMounts": [{"name": "data", "path": "/data"}]}
    r = httpx.post(f"{API_URL}/v2/sandboxes", json=body, headers=auth_headers(), timeout=30)
    assert r.status_code == 501 and "volumeMounts" in r.json()["message"], r.text
    body = {"templateID": "base", "mcp": {"github": {}}}
    r = httpx.post(f"{API_URL}/v2/sandboxes", json=body, headers=auth_headers(), timeout=30)
    assert r.status_code == 501 and "mcp" in r.json()["message"], r.text
