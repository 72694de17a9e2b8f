"""The code interpreter (port 49999) checks the sandbox's access token, and kernels restored from
one template checkpoint do not share their random streams (docs/security.md, "The code
interpreter's access token")."""

import json
import random
import uuid

from conftest import sandbox_headers
from e2b_code_interpreter import Sandbox as CodeSandbox

UNAUTHORIZED = {"code": 401, "message": "unauthorized access, invalid or missing access token"}


def test_sdk_works_as_usual(sandboxes):
    sbx = sandboxes(sandbox_class=CodeSandbox, timeout=120)
    assert sbx.run_code("6 * 7").text == "42"
    # The pinned SDK sends no token on the context routes; they keep working.
    ctx = sbx.create_code_context(language="bash")
    assert sbx.run_code("echo $((2 + 3))", context=ctx).logs.stdout == ["5\n"]
    assert ctx.id in [c.id for c in sbx.list_code_contexts()]
    sbx.remove_code_context(ctx)


def test_raw_requests_need_the_token(api, sandboxes):
    sbx = sandboxes(sandbox_class=CodeSandbox, timeout=120)
    marker = f"/tmp/ran-{uuid.uuid4().hex[:8]}"
    body = {"code": f"open({marker!r}, 'w').write('x')\n'ran'"}
    bare = sandbox_headers(sbx, port=49999, token=False)
    wrong = {**bare, "X-Access-Token": "not-" + sbx._envd_access_token}
    right = sandbox_headers(sbx, port=49999)
    for headers in (bare, wrong):
        r = api.post("/execute", headers=headers, json=body)
        assert r.status_code == 401, r.text
        assert r.json() == UNAUTHORIZED
    assert not sbx.files.exists(marker), "a refused request ran its code"
    assert api.get("/contexts", headers=wrong).status_code == 401
    # Without any token the context routes answer, as the pinned SDK needs (it sends none).
    assert api.get("/contexts", headers=bare).status_code == 200
    assert api.get("/health", headers=bare).status_code == 200

    r = api.post("/execute", headers=right, json=body)
    assert r.status_code == 200, r.text
    lines = [json.loads(line) for line in r.text.splitlines() if line.strip()]
    assert any(l.get("type") == "result" and l.get("text") == "ran" for l in lines), lines
    assert sbx.files.exists(marker)
    contexts = api.get("/contexts", headers=right)
    assert contexts.status_code == 200 and contexts.json()


def test_sandboxes_from_one_checkpoint_draw_different_random_numbers(sandboxes):
    code = "import random, numpy\nprint(random.random(), numpy.random.rand())"
    a, b = (sandboxes(sandbox_class=CodeSandbox, timeout=120) for _ in range(2))
    first_a = a.run_code(code)
    first_b = b.run_code(code)
    assert first_a.error is None and first_b.error is None
    values_a, values_b = first_a.logs.stdout[0].split(), first_b.logs.stdout[0].split()
    assert values_a[0] != values_b[0], "random.random() replays the template's stream"
    assert values_a[1] != values_b[1], "numpy.random.rand() replays the template's stream"


def test_run_code_works_after_pause_and_resume(sandboxes):
    sbx = sandboxes(sandbox_class=CodeSandbox, timeout=120)
    assert sbx.run_code("import random\nrandom.seed(7)\nkept = 'before pause'").error is None
    assert sbx.pause() is True
    resumed = CodeSandbox.connect(sbx.sandbox_id)
    assert resumed.run_code("kept").text == "before pause"
    # The same sandbox keeps its token, so its kernel is not reseeded: the stream goes on.
    assert resumed.run_code("random.random()").text == repr(random.Random(7).random())
