"""Host-side tests of the code-interpreter server (firkin_interpreter) over real HTTP.

The server runs as a subprocess of this interpreter on a free loopback port, with its kernel
directory, env file, access-token file (empty, i.e. no token, except in the token tests) and
default cwd in a temporary directory. Skipped when jupyter_client or
ipykernel (or httpx) is not importable. JavaScript tests need `node`, which they skip without.
Everything shares one server, so the whole file stays well under a minute.
"""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

# The interpreter that runs the server (e.g. Debian's /usr/bin/python3); this one by default.
SERVER_PYTHON = os.environ.get("FIRKIN_TEST_PYTHON") or sys.executable


def _server_has(*modules):
    if SERVER_PYTHON == sys.executable:
        return all(importlib.util.find_spec(m) is not None for m in modules)
    probe = "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in %r))"
    return subprocess.run([SERVER_PYTHON, "-c", probe % (modules,)]).returncode == 0


if importlib.util.find_spec("httpx") is None:
    pytest.skip("httpx is not importable", allow_module_level=True)
if not _server_has("jupyter_client", "ipykernel"):
    pytest.skip("jupyter_client/ipykernel are not importable", allow_module_level=True)

import httpx  # noqa: E402

PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_NODE = shutil.which("node") is not None
HAS_SCIENCE = _server_has("numpy", "pandas", "matplotlib")
HAS_NUMPY = _server_has("numpy")
HAS_CHARTS = _server_has("e2b_charts", "matplotlib")

pytestmark = pytest.mark.timeout(60)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("interp")
    port = _free_port()
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": PKG_PARENT,
        "FIRKIN_KERNEL_DIR": str(tmp / "kernels"),
        "FIRKIN_ENVS_FILE": str(tmp / "envs.json"),
        "FIRKIN_TOKEN_FILE": str(tmp / "access-token"),
    })
    (tmp / "access-token").write_text("")
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen(
        [SERVER_PYTHON, "-m", "firkin_interpreter", "--port", str(port), "--host", "127.0.0.1",
         "--cwd", str(tmp)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = "http://127.0.0.1:%d" % port
    deadline = time.monotonic() + 45
    status = None
    while time.monotonic() < deadline:
        try:
            status = httpx.get(base + "/health", timeout=2).status_code
            if status == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    if status != 200:
        proc.kill()
        log.close()
        pytest.fail("server not healthy: %s" % (tmp / "server.log").read_text()[-3000:])
    yield {"url": base, "tmp": tmp, "envs": tmp / "envs.json", "token": tmp / "access-token"}
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def execute(server, code, context_id=None, language=None, env_vars=None, timeout=20.0,
            timed=False, headers=None):
    """Runs a cell; returns its NDJSON objects (or (seconds, object) pairs when timed)."""
    body = {"code": code, "context_id": context_id, "language": language, "env_vars": env_vars}
    start = time.monotonic()
    out = []
    with httpx.stream("POST", server["url"] + "/execute", json=body, headers=headers,
                      timeout=httpx.Timeout(timeout, connect=5)) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, r.text
        assert r.headers["content-type"].startswith("application/json")
        for raw in r.iter_lines():
            assert raw.strip(), "blank NDJSON line"
            obj = json.loads(raw)
            assert "type" in obj and None not in obj.values()
            out.append((time.monotonic() - start, obj) if timed else obj)
    last = out[-1][1] if timed else out[-1]
    assert last == {"type": "end_of_execution"}
    return out


def main_text(lines):
    texts = [l["text"] for l in lines if l["type"] == "result" and l.get("is_main_result")]
    return texts[0] if texts else None


def stdout(lines):
    return "".join(l["text"] for l in lines if l["type"] == "stdout")


def errors(lines):
    return [l for l in lines if l["type"] == "error"]


def abandon(server, code, after, **kw):
    """Starts a cell and drops the connection after `after` seconds (the SDK's timeout)."""
    with pytest.raises(httpx.ReadTimeout):
        execute(server, code, timeout=after, **kw)


# -- Python ---------------------------------------------------------------------------------------


def test_health_and_state(server):
    r = httpx.get(server["url"] + "/health")
    assert r.status_code == 200 and r.json() == "OK"
    first = execute(server, "x = 41")
    assert first[0]["type"] == "number_of_executions" and not errors(first)
    lines = execute(server, "x + 1")
    assert main_text(lines) == "42"
    assert lines[0]["type"] == "number_of_executions"
    assert lines[0]["execution_count"] == first[0]["execution_count"] + 1


def test_live_objects_survive_between_cells(server):
    path = server["tmp"] / "data.txt"
    path.write_text("one\ntwo\nthree\n")
    execute(server, "gen = (i * i for i in range(10))\nfh = open(%r)" % str(path))
    assert main_text(execute(server, "next(gen), next(gen), next(gen)")) == "(0, 1, 4)"
    assert main_text(execute(server, "fh.readline()")) == "one\\n"
    assert main_text(execute(server, "fh.readline().strip()")) == "two"
    assert main_text(execute(server, "'quoted'")) == "quoted"


@pytest.mark.skipif(not HAS_SCIENCE, reason="numpy/pandas/matplotlib missing")
def test_rich_results(server):
    lines = execute(server, "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()")
    pngs = [l for l in lines if l["type"] == "result" and "png" in l]
    assert pngs and pngs[0]["is_main_result"] is False and len(pngs[0]["png"]) > 100
    lines = execute(server, "import pandas as pd\npd.DataFrame({'a': [1, 2]})")
    result = [l for l in lines if l["type"] == "result"][0]
    assert result["is_main_result"] is True and "<table" in result["html"] and "text" in result
    lines = execute(server, "from IPython.display import display, Markdown\n"
                            "display(Markdown('**hi**'), {'x': 1}, raw=False)")
    assert any(l.get("markdown") == "**hi**" for l in lines)


def test_dataframes_and_dicts_have_data_and_json(server):
    if not HAS_SCIENCE:
        pytest.skip("numpy/pandas/matplotlib missing")
    lines = execute(server, "import pandas as pd, numpy as np\n"
                            "pd.DataFrame({'n': [1, 2, np.nan], 'when': pd.to_datetime("
                            "['2024-01-02', '2024-01-03', '2024-01-04']), 3: ['a', 'b', 'c']})")
    (result,) = [l for l in lines if l["type"] == "result"]
    assert result["data"] == {"n": [1.0, 2.0, None], "3": ["a", "b", "c"],
                              "when": ["2024-01-02T00:00:00", "2024-01-03T00:00:00",
                                       "2024-01-04T00:00:00"]}
    assert "<table" in result["html"]
    (result,) = [l for l in execute(server, "{'k': np.int64(3), 1: [np.float32(0.5)]}")
                 if l["type"] == "result"]
    assert result["json"] == {"k": 3, "1": [0.5]} and result["text"].startswith("{")
    # No pandas/matplotlib import is paid for by outputs that cannot be theirs.
    lines = execute(server, "import sys; [m for m in ('pandas', 'matplotlib') "
                            "if m in sys.modules and m not in globals()]",
                    context_id=_fresh_context(server))
    assert main_text(lines) == "[]"


def _fresh_context(server):
    r = httpx.post(server["url"] + "/contexts", json={}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["id"]


@pytest.mark.skipif(not HAS_CHARTS, reason="e2b_charts (or matplotlib) is not importable")
def test_figures_have_charts(server):
    code = ("import matplotlib.pyplot as plt\n"
            "fig, ax = plt.subplots()\nax.bar(['a', 'b'], [3, 5])\nax.set_title('Bars')\n"
            "plt.show()")
    results = [l for l in execute(server, code) if l["type"] == "result"]
    (chart,) = [r["chart"] for r in results if "chart" in r]
    assert chart["type"] == "bar" and chart["title"] == "Bars"
    assert [(e["label"], e["value"]) for e in chart["elements"]] == [("a", 3), ("b", 5)]
    assert any("png" in r for r in results)
    blank = [l for l in execute(server, "plt.figure(); plt.show()") if l["type"] == "result"]
    assert all("chart" not in r for r in blank)


def test_error(server):
    lines = execute(server, "1/0")
    (err,) = errors(lines)
    assert err["name"] == "ZeroDivisionError" and err["value"] == "division by zero"
    assert isinstance(err["traceback"], str) and "ZeroDivisionError" in err["traceback"]


def test_cells_right_after_an_error_run(server):
    # ipykernel aborts requests that reach it while it is still aborting after an error; the
    # server sends such a cell again instead of returning nothing.
    for i in range(15):
        assert errors(execute(server, "raise ValueError(%d)" % i))[0]["value"] == str(i)
        assert main_text(execute(server, "%d * 2" % i)) == str(i * 2)


def test_stdout_is_streamed(server):
    lines = execute(server, "import sys, time\nprint('first')\ntime.sleep(1.2)\n"
                            "print('second')\nprint('oops', file=sys.stderr)", timed=True)
    at = {obj["text"].strip(): t for t, obj in lines if obj["type"] in ("stdout", "stderr")}
    assert at["second"] - at["first"] > 0.8
    assert [o["timestamp"] for _, o in lines if o["type"] == "stdout"][0].startswith("20")
    assert any(o["type"] == "stderr" for _, o in lines)


def test_keepalive_while_silent(server):
    lines = execute(server, "import time; time.sleep(6); 'done'")
    assert {"type": "keepalive"} in lines and main_text(lines) == "done"


def test_env_vars_apply_to_one_execution(server):
    code = "import os; print(os.environ.get('FK_ONE'), os.environ.get('HOME') is not None)"
    lines = execute(server, code, env_vars={"FK_ONE": "v1"})
    assert stdout(lines).split() == ["v1", "True"]
    assert stdout(execute(server, code)).split() == ["None", "True"]


def test_sandbox_env_file(server):
    envs = server["envs"]
    code = "import os; print(os.environ.get('FK_SANDBOX'), os.environ.get('FK_GONE'))"
    envs.write_text(json.dumps({"FK_SANDBOX": "a", "FK_GONE": "x"}))
    assert stdout(execute(server, code)).split() == ["a", "x"]
    time.sleep(0.05)  # a new mtime
    envs.write_text(json.dumps({"FK_SANDBOX": "b"}))
    os.utime(envs, ns=(time.time_ns(), time.time_ns() + 10**6))
    assert stdout(execute(server, code)).split() == ["b", "None"]
    # A per-execution value wins for that execution, then the sandbox-wide one is back.
    assert stdout(execute(server, code, env_vars={"FK_SANDBOX": "c"})).split()[0] == "c"
    assert stdout(execute(server, code)).split()[0] == "b"
    envs.unlink()


def test_interrupt_on_disconnect_keeps_state(server):
    execute(server, "survivor = 'still here'")
    start = time.monotonic()
    abandon(server, "while True: pass", after=2)
    lines = execute(server, "1 + 1")
    assert main_text(lines) == "2" and time.monotonic() - start < 8
    assert main_text(execute(server, "survivor")) == "still here"
    abandon(server, "import time; time.sleep(60)", after=1)
    assert main_text(execute(server, "survivor")) == "still here"


def test_routing_and_refusals(server):
    assert execute(server, "1", context_id="abc", language="python")[0] == 400
    status, text = execute(server, "1", context_id="nope")
    assert status == 404 and "nope" in text
    status, text = execute(server, "1", language="java")
    assert status == 400 and "'java'" in text and "not supported" in text
    assert "typescript" in text and "r," in text  # the message lists what is supported
    execute(server, "routed = 'default'")
    assert main_text(execute(server, "routed", language=" Python ")) == "default"
    r = httpx.post(server["url"] + "/execute", content=b"{nope")
    assert r.status_code == 400 and "JSON" in r.text
    r = httpx.post(server["url"] + "/execute", json={"code": 1})
    assert r.status_code == 400
    r = httpx.post(server["url"] + "/execute", json={"code": "1", "env_vars": "x"})
    assert r.status_code == 400
    assert httpx.get(server["url"] + "/nowhere").status_code == 404


def test_contexts_lifecycle(server):
    sub = server["tmp"] / "work"
    sub.mkdir()
    r = httpx.post(server["url"] + "/contexts", json={"cwd": str(sub)}, timeout=30)
    assert r.status_code == 200
    ctx = r.json()
    assert ctx["language"] == "python" and ctx["cwd"] == str(sub) and ctx["id"]
    listed = httpx.get(server["url"] + "/contexts").json()
    ids = [c["id"] for c in listed]
    assert ctx["id"] in ids and len(ids) >= 2
    assert all(set(c) == {"id", "language", "cwd"} for c in listed)
    assert main_text(execute(server, "import os; os.getcwd()", context_id=ctx["id"])) == str(sub)
    execute(server, "mine = 5", context_id=ctx["id"])
    assert errors(execute(server, "mine"))[0]["name"] == "NameError"  # default ctx unaffected

    # Two contexts run concurrently.
    results = {}

    def sleeper(cid):
        results[cid] = execute(server, "import time; time.sleep(1.5); 'ok'", context_id=cid)

    start = time.monotonic()
    threads = [threading.Thread(target=sleeper, args=(c,)) for c in (ctx["id"], None)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - start < 2.9
    assert all(main_text(v) == "ok" for v in results.values())

    r = httpx.post(server["url"] + "/contexts/%s/restart" % ctx["id"], timeout=30)
    assert r.status_code == 200 and r.json() is None
    assert errors(execute(server, "mine", context_id=ctx["id"]))[0]["name"] == "NameError"
    assert main_text(execute(server, "import os; os.getcwd()", context_id=ctx["id"])) == str(sub)

    # A kernel that dies is reported and replaced.
    lines = execute(server, "import os; os._exit(1)", context_id=ctx["id"])
    assert errors(lines)[0]["name"] == "UnexpectedEndOfExecution"
    assert main_text(execute(server, "6 * 7", context_id=ctx["id"])) == "42"

    r = httpx.delete(server["url"] + "/contexts/" + ctx["id"], timeout=30)
    assert r.status_code == 200
    assert execute(server, "1", context_id=ctx["id"])[0] == 404
    assert httpx.delete(server["url"] + "/contexts/" + ctx["id"]).status_code == 404
    assert httpx.post(server["url"] + "/contexts/nope/restart").status_code == 404
    r = httpx.post(server["url"] + "/contexts", json={"language": "cobol"})
    assert r.status_code == 400


# -- The access token and reseeding -----------------------------------------------------------


def publish_token(server, token):
    """Replaces the token file as the agent does at /init: temp file + rename (a new inode)."""
    path = server["token"]
    tmp = path.with_name(".access-token.tmp")
    tmp.write_text(token)
    os.replace(tmp, path)


@pytest.fixture
def token(server):
    """Sets a token for one test (`token(value)`); the sandbox is token-less again after it."""
    yield lambda value: publish_token(server, value)
    publish_token(server, "")


def test_token_is_required(server, token, tmp_path):
    marker = tmp_path / "ran"
    code = "open(%r, 'w').write('x'); 'ran'" % str(marker)
    token("s3cret-1")
    url = server["url"]
    assert httpx.get(url + "/health").status_code == 200  # open: the build's ready check
    for headers in (None, {"X-Access-Token": "wrong"}, {"X-Access-Token": "s3cret-12"}):
        status, text = execute(server, code, headers=headers)
        assert status == 401 and json.loads(text) == {
            "code": 401, "message": "unauthorized access, invalid or missing access token"}
    assert not marker.exists(), "a refused request ran its code"
    assert main_text(execute(server, code, headers={"x-access-token": "s3cret-1"})) == "ran"
    # The pinned SDK lists, creates, restarts and removes contexts without the token: allowed
    # in the default mode; a wrong token is refused everywhere.
    assert httpx.get(url + "/contexts").status_code == 200
    assert httpx.get(url + "/contexts", headers={"X-Access-Token": "no"}).status_code == 401
    ok = httpx.get(url + "/contexts", headers={"X-Access-Token": "s3cret-1"})
    assert ok.status_code == 200 and ok.json()
    # A new token (a restored sandbox re-initialised) replaces the old one at once.
    token("s3cret-2")
    assert execute(server, "1", headers={"X-Access-Token": "s3cret-1"})[0] == 401
    assert main_text(execute(server, "1", headers={"X-Access-Token": "s3cret-2"})) == "1"


def test_no_token_file_means_not_initialised(server):
    server["token"].unlink()
    try:
        assert httpx.get(server["url"] + "/health").status_code == 200
        r = httpx.post(server["url"] + "/execute", json={"code": "1"})
        assert r.status_code == 503 and r.json()["code"] == 503
        assert httpx.get(server["url"] + "/contexts").status_code == 503
    finally:
        publish_token(server, "")


def test_gate_modes(tmp_path):
    sys.path.insert(0, PKG_PARENT)
    try:
        from firkin_interpreter.auth import Gate, Refusal, TokenFile
    finally:
        sys.path.remove(PKG_PARENT)
    path = tmp_path / "token"
    path.write_text("t0k\n")
    files = TokenFile(str(path))
    strict, sdk = Gate(files, "strict"), Gate(files, "sdk")
    good, bad = {"X-Access-Token": "t0k"}, {"X-Access-Token": "t0"}
    for gate in (strict, sdk):
        gate.check("GET", ["health"], {})
        gate.check("POST", ["execute"], good)
        gate.check("DELETE", ["contexts", "abc"], good)
        for headers in ({}, bad):
            with pytest.raises(Refusal) as e:
                gate.check("POST", ["execute"], headers)
            assert e.value.status == 401
        with pytest.raises(Refusal):
            gate.check("GET", ["contexts"], bad)
    sdk.check("GET", ["contexts"], {})
    sdk.check("POST", ["contexts", "abc", "restart"], {})
    with pytest.raises(Refusal):
        strict.check("GET", ["contexts"], {})
    with pytest.raises(Refusal):
        sdk.check("POST", ["health"], {})  # only GET/HEAD /health is open
    # The epoch moves when the token changes, not when the file is merely rewritten.
    epoch = files.epoch
    path.write_text("t0k\n")
    sdk.check("POST", ["execute"], good)
    assert files.epoch == epoch
    path.write_text("other")
    sdk.check("POST", ["execute"], {"X-Access-Token": "other"})
    assert files.epoch == epoch + 1
    path.write_text("")
    sdk.check("POST", ["execute"], {})  # an empty token: no token required
    path.unlink()
    with pytest.raises(Refusal) as e:
        sdk.check("POST", ["execute"], good)
    assert e.value.status == 503
    with pytest.raises(ValueError):
        Gate(files, "lax")


def test_new_token_reseeds_kernels(server, token):
    # Same identity: a seeded stream continues (so what the test sees below is the reseed).
    execute(server, "import random; random.seed(42)")
    assert main_text(execute(server, "random.random()")) == repr(0.6394267984578837)
    seed = "import random; random.seed(42)"
    if HAS_NUMPY:
        seed += "\nimport numpy; numpy.random.seed(42)"
    before = execute(server, seed)
    assert not errors(before)
    token("identity-2")
    headers = {"X-Access-Token": "identity-2"}
    code = "print(random.random())"
    if HAS_NUMPY:
        code += "\nprint(numpy.random.rand())"
    lines = execute(server, code, headers=headers)
    # Silent: no output but the cell's own, and the execution count moves by one.
    assert [l["type"] for l in lines] == ["number_of_executions", "stdout", "end_of_execution"]
    assert lines[0]["execution_count"] == before[0]["execution_count"] + 1
    values = stdout(lines).split()
    assert values[0] != repr(0.6394267984578837)
    if HAS_NUMPY:
        assert values[1] != repr(0.3745401188473625)
    # The new identity reseeds once: a seed set now holds.
    execute(server, seed, headers=headers)
    assert stdout(execute(server, code, headers=headers)).split()[0] == repr(0.6394267984578837)


def test_new_token_reseeds_bash(server, token):
    first = subprocess.run(["bash", "-c", "RANDOM=7; echo $RANDOM"], capture_output=True,
                           text=True).stdout.strip()
    execute(server, "true", language="bash")  # the first run reseeds; then seed explicitly
    execute(server, "RANDOM=7", language="bash")
    token("identity-bash")
    lines = execute(server, "echo $RANDOM", language="bash",
                    headers={"X-Access-Token": "identity-bash"})
    assert stdout(lines).strip() != first


# -- JavaScript and Bash ----------------------------------------------------------------------


@pytest.mark.skipif(not HAS_NODE, reason="node is not installed")
def test_javascript(server):
    js = "javascript"
    assert main_text(execute(server, "let q = 20; q + 1", language=js)) == "21"
    assert main_text(execute(server, "q * 2", language="js")) == "40"
    lines = execute(server, "console.log('a'); const t0 = Date.now();"
                            " while (Date.now() - t0 < 1000) {} console.error('b')",
                    language=js, timed=True)
    at = {o["text"].strip(): t for t, o in lines if o["type"] in ("stdout", "stderr")}
    assert at["b"] - at["a"] > 0.7
    assert main_text(execute(server, "const w = await new Promise(r => setTimeout(() => r(2), 50));"
                                     " w + q", language=js)) == "22"
    assert main_text(execute(server, "'str'", language=js)) == "str"
    (err,) = errors(execute(server, "throw new TypeError('bad')", language=js))
    assert err["name"] == "TypeError" and err["value"] == "bad" and "TypeError" in err["traceback"]
    lines = execute(server, "process.env.FK_JS", language=js, env_vars={"FK_JS": "yes"})
    assert main_text(lines) == "yes"
    assert main_text(execute(server, "typeof process.env.FK_JS", language=js)) == "undefined"
    abandon(server, "while (true) {}", language=js, after=1.5)
    assert main_text(execute(server, "q", language=js)) == "20"
    r = httpx.post(server["url"] + "/contexts", json={"language": "javascript"}, timeout=30)
    ctx = r.json()
    assert ctx["language"] == "javascript"
    assert main_text(execute(server, "typeof q", context_id=ctx["id"])) == "undefined"
    httpx.delete(server["url"] + "/contexts/" + ctx["id"], timeout=30)


@pytest.mark.skipif(not HAS_NODE, reason="node is not installed")
def test_default_javascript_context_and_esm_imports(server):
    listed = httpx.get(server["url"] + "/contexts").json()
    assert {"python", "javascript"} <= {c["language"] for c in listed}
    js = "javascript"
    (server["tmp"] / "local.mjs").write_text("export const answer = 42;\nexport default 'dflt';\n")
    lines = execute(server, "\n    import { readFileSync as rfs } from 'fs'\n"
                            "    import * as nodePath from 'node:path'\n"
                            "    import dflt, { answer } from './local.mjs'\n"
                            "    import 'util'\n"
                            "    console.log(typeof rfs, typeof nodePath.join, dflt, answer)\n",
                    language=js)
    assert not errors(lines) and stdout(lines) == "function function dflt 42\n"
    # The bindings persist into later cells, and an import alone has no result.
    assert main_text(execute(server, "[typeof rfs, answer]", language=js)) == "[ 'function', 42 ]"
    lines = execute(server, "import { join } from 'path'", language=js)
    assert not errors(lines) and main_text(lines) is None
    (err,) = errors(execute(server, "import nothing from './missing.mjs'", language=js))
    assert "missing.mjs" in err["value"]
    # A declaration on the last line of an async cell has no value.
    lines = execute(server, "const late = await Promise.resolve(3)", language=js)
    assert main_text(lines) is None and main_text(execute(server, "late", language=js)) == "3"


@pytest.mark.skipif(not HAS_NODE, reason="node is not installed")
def test_typescript(server):
    ts = "typescript"
    lines = execute(server, "const message: string = 'Hello'; console.log(message)", language="ts")
    if any("TypeScript is unavailable" in e["value"] for e in errors(lines)):
        pytest.skip("the server's node has no 'typescript' package")
    assert stdout(lines) == "Hello\n" and not errors(lines)
    execute(server, "interface P { x: number }\nlet p: P = { x: 2 }\n"
                    "import { basename } from 'path'", language=ts)
    assert main_text(execute(server, "p.x + basename('/a/b.ts').length", language=ts)) == "6"
    assert main_text(execute(server, "process.cwd()", language=ts)) == str(server["tmp"])
    (err,) = errors(execute(server, "let broken: = 1", language=ts))
    assert err["name"] == "SyntaxError" and "1:13" in err["value"] and "repl.js" not in err["traceback"]
    assert main_text(execute(server, "typeof p", language="javascript")) == "undefined"


def test_r(server):
    lines = execute(server, 'print("Hello, World!")', language="r", timeout=60)
    if lines[0] == 500 or any(e["name"] == "ContextError" for e in errors(lines)):
        pytest.skip("R with IRkernel is not installed: %s" % (lines,))
    assert stdout(lines) == '[1] "Hello, World!"\n'
    execute(server, "kept <- 41", language="r")
    (text,) = [l["text"] for l in execute(server, "kept + 1", language="r")
               if l["type"] == "result"]
    assert text == "[1] 42"
    code = "Sys.getenv('FK_R', unset = 'unset')"
    lines = execute(server, code, language="r", env_vars={"FK_R": 'quote " é'})
    assert [l["text"] for l in lines if l["type"] == "result"] == ['[1] "quote \\" é"']
    assert [l["text"] for l in execute(server, code, language="r")
            if l["type"] == "result"] == ['[1] "unset"']
    (err,) = errors(execute(server, "stop('bad thing')", language="r"))
    assert "bad thing" in err["value"]


def test_bash(server):
    execute(server, "V=7; greet() { echo hello $1; }; cd /", language="bash")
    lines = execute(server, "echo $V; greet you; pwd", language="bash")
    assert stdout(lines) == "7\nhello you\n/\n" and not errors(lines)
    (err,) = errors(execute(server, "echo out; false", language="bash"))
    assert err["name"] == "ExitCodeError" and "1" in err["value"]
    lines = execute(server, "echo $FK_SH", language="bash", env_vars={"FK_SH": "it's"})
    assert stdout(lines) == "it's\n"
    assert stdout(execute(server, "echo \"[$FK_SH]\"", language="bash")) == "[]\n"
    abandon(server, "sleep 100", language="bash", after=1)
    assert stdout(execute(server, "echo $V", language="bash")) == "7\n"


# -- The real SDK -----------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("e2b_code_interpreter") is None,
                    reason="e2b-code-interpreter is not installed")
def test_sdk(server):
    from e2b.exceptions import TimeoutException
    from e2b_code_interpreter import Sandbox

    sbx = Sandbox.create(debug=True, sandbox_url=server["url"], api_key="test")
    assert sbx.run_code("sdk_v = 10\nsdk_v * 2").text == "20"
    seen = []
    ex = sbx.run_code("print('hi')\n1/0", on_stdout=lambda m: seen.append(m.line))
    assert seen == ["hi\n"] and ex.error.name == "ZeroDivisionError"
    with pytest.raises(TimeoutException):
        sbx.run_code("while True: pass", timeout=1)
    assert sbx.run_code("sdk_v + 1").text == "11"
    ctx = sbx.create_code_context(language="bash")
    assert sbx.run_code("echo $((6*7))", context=ctx).logs.stdout == ["42\n"]
    assert ctx.id in [c.id for c in sbx.list_code_contexts()]
    sbx.restart_code_context(ctx)
    sbx.remove_code_context(ctx)
