"""The real `e2b-code-interpreter` SDK against the `code-interpreter-v1` template: stateful
Jupyter kernels restored warm from the template checkpoint."""

import time

import pytest
from e2b_code_interpreter import Sandbox


@pytest.fixture(scope="module")
def ci():
    sbx = Sandbox.create(timeout=300, envs={"SANDBOX_WIDE": "everywhere"})
    yield sbx
    sbx.kill()


def test_state_persists_and_unpicklable_objects_survive(ci, sandboxes):
    # /execute works as soon as create returns: the kernel was restored warm.
    fresh = sandboxes(timeout=60, sandbox_class=Sandbox)
    assert fresh.run_code("1 + 1").text == "2"
    fresh.kill()
    ci.run_code("x = 41")
    assert ci.run_code("x + 1").text == "42"
    ci.run_code("gen = (i * i for i in range(10))\nf = open('/tmp/kept.txt', 'w+')\nf.write('kept')")
    assert ci.run_code("next(gen), next(gen), next(gen)").text == "(0, 1, 4)"
    assert ci.run_code("f.seek(0); f.read()").text == "kept"


def test_rich_results(ci):
    chart = ci.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()")
    assert chart.error is None
    assert any(r.png for r in chart.results), chart.results
    frame = ci.run_code("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': [3, 4]})")
    main = [r for r in frame.results if r.is_main_result]
    assert main and main[0].html and "<table" in main[0].html
    md = ci.run_code("from IPython.display import Markdown, display\ndisplay(Markdown('**bold**'))")
    assert any(r.markdown == "**bold**" and not r.is_main_result for r in md.results)


def test_errors_have_name_value_and_traceback(ci):
    e = ci.run_code("1 / 0")
    assert e.error is not None
    assert e.error.name == "ZeroDivisionError"
    assert "division by zero" in e.error.value
    assert "ZeroDivisionError" in e.error.traceback
    assert ci.run_code("x").text == "41", "an error does not lose the context"


def test_stdout_and_stderr_stream_incrementally(ci):
    seen = []
    code = "import sys, time\nprint('one', flush=True)\ntime.sleep(1.5)\nprint('two', file=sys.stderr, flush=True)"
    e = ci.run_code(code, on_stdout=lambda m: seen.append(("out", m.line, time.time())),
                    on_stderr=lambda m: seen.append(("err", m.line, time.time())))
    assert [(k, l) for k, l, _ in seen] == [("out", "one\n"), ("err", "two\n")]
    assert seen[1][2] - seen[0][2] > 1.0, "the first line arrived before the cell finished"
    assert e.logs.stdout == ["one\n"] and e.logs.stderr == ["two\n"]


def test_env_vars_per_execution_and_sandbox_wide(ci):
    assert ci.run_code("import os; os.environ.get('SANDBOX_WIDE')").text == "everywhere"
    assert ci.run_code("os.environ.get('ONLY_ONCE')", envs={"ONLY_ONCE": "yes"}).text == "yes"
    assert ci.run_code("os.environ.get('ONLY_ONCE', 'gone')").text == "gone"


def test_contexts_create_use_restart_remove(ci):
    ctx = ci.create_code_context(cwd="/tmp")
    assert ctx.language == "python" and ctx.cwd == "/tmp"
    ci.run_code("y = 'in ctx'", context=ctx)
    assert ci.run_code("y", context=ctx).text == "in ctx"
    assert ci.run_code("import os; os.getcwd()", context=ctx).text == "/tmp"
    assert ci.run_code("'y' in globals()").text == "False", "contexts are separate kernels"
    assert ctx.id in [c.id for c in ci.list_code_contexts()]
    ci.restart_code_context(ctx)
    assert ci.run_code("'y' in globals()", context=ctx).text == "False", "restart clears state"
    ci.remove_code_context(ctx)
    assert ctx.id not in [c.id for c in ci.list_code_contexts()]


def test_timeout_interrupts_the_cell_but_keeps_the_context(ci):
    ci.run_code("kept = 'still here'")
    with pytest.raises(Exception) as e:
        ci.run_code("while True:\n    pass", timeout=3)
    assert "timed out" in str(e.value).lower() or "timeout" in type(e.value).__name__.lower()
    deadline = time.time() + 20
    while True:  # the interrupt lands within a moment of the disconnect
        r = ci.run_code("kept")
        if r.text == "still here" or time.time() > deadline:
            break
        time.sleep(0.5)
    assert r.text == "still here"
    assert ci.run_code("1 + 1").text == "2"


def test_javascript_and_bash_are_real_persistent_processes(ci):
    ci.run_code("let counter = 40", language="javascript")
    js = ci.run_code("console.log('from node'); counter + 2", language="javascript")
    assert js.text == "42" and js.logs.stdout == ["from node\n"]
    ci.run_code("cd /tmp && export SEEN=yes", language="bash")
    sh = ci.run_code("pwd; echo $SEEN", language="bash")
    assert sh.logs.stdout == ["/tmp\n", "yes\n"] or "".join(sh.logs.stdout) == "/tmp\nyes\n"
    failed = ci.run_code("false", language="bash")
    assert failed.error is not None


def test_unsupported_language_is_an_explicit_error(ci):
    with pytest.raises(Exception) as e:
        ci.run_code("1", language="java")
    assert "not supported" in str(e.value)


def test_kernel_state_survives_pause_and_resume(sandboxes):
    sbx = sandboxes(timeout=120, sandbox_class=Sandbox)
    sbx.run_code("import threading, time\nticks = []\nt = threading.Thread(target=lambda: [ticks.append(1) or time.sleep(0.1) for _ in range(10**6)], daemon=True)\nt.start()\nmark = 'before pause'")
    sbx.beta_pause() if hasattr(sbx, "beta_pause") else sbx.pause()
    again = Sandbox.connect(sbx.sandbox_id)
    assert again.run_code("mark").text == "before pause"
    n1 = int(again.run_code("len(ticks)").text)
    time.sleep(0.5)
    assert int(again.run_code("len(ticks)").text) > n1, "the thread kept running after resume"
