"""The warm pool: creates of a built-in template check out a pre-restored sandbox (the server
starts with `base=2,code-interpreter-v1=1`), which then behaves like any other sandbox."""

import re
import time

import httpx

from conftest import API_URL


def metric(name, **labels):
    text = httpx.get(f"{API_URL}/metrics", timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{re.escape(name)}{{{re.escape(want)}}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def wait_for_pool(template, timeout=60):
    deadline = time.time() + timeout
    while metric("firkin_warm_pool_ready", template=template) < 1:
        assert time.time() < deadline, f"the {template} warm pool did not fill"
        time.sleep(0.25)


def test_create_checks_out_a_warm_sandbox_and_the_pool_refills(sandboxes):
    wait_for_pool("base")
    before = metric("firkin_lifecycle_seconds_count", sample="warm_pool_checkout")
    sbx = sandboxes(timeout=60, envs={"WHO": "warm"}, metadata={"pool": "yes"})
    assert metric("firkin_lifecycle_seconds_count", sample="warm_pool_checkout") == before + 1
    # A checked-out sandbox is initialised for this create: its env, metadata, token.
    assert sbx.commands.run("echo $WHO").stdout == "warm\n"
    assert sbx.get_info().metadata == {"pool": "yes"}
    sbx.files.write("/home/user/mine.txt", "only here")
    wait_for_pool("base")
    other = sandboxes(timeout=60)
    assert other.sandbox_id != sbx.sandbox_id
    assert other._envd_access_token != sbx._envd_access_token
    assert not other.files.exists("/home/user/mine.txt")
    assert other.commands.run("echo ${WHO:-unset}").stdout == "unset\n"
    other.kill()
    sbx.kill()
    wait_for_pool("base")  # refilled in the background
