"""The code interpreter behaves like E2B's where the SDK can tell: kernels run as root (so any cwd
works), `python` and `javascript` contexts exist from the start, JavaScript cells take ESM
`import`s, TypeScript and R are real languages, and matplotlib figures and DataFrames come back
as `result.chart` and `result.data` (E2B's own extractor, the e2b-charts package)."""

import pytest
from e2b_code_interpreter import Sandbox as CodeSandbox
from e2b_code_interpreter.charts import (
    BarChart,
    BoxAndWhiskerChart,
    ChartType,
    LineChart,
    PieChart,
    ScatterChart,
    SuperChart,
)


@pytest.fixture(scope="module")
def ci():
    sbx = CodeSandbox.create(timeout=600)
    yield sbx
    sbx.kill()


def results_with(execution, field):
    assert execution.error is None, execution.error
    return [r for r in execution.results if getattr(r, field)]


# -- who runs the code ---------------------------------------------------------------------------


def test_kernels_run_as_root_and_any_cwd_works(ci):
    ctx = ci.create_code_context(cwd="/root")
    assert ctx.cwd == "/root"
    where = ci.run_code("import os, getpass, pathlib; (os.getcwd(), getpass.getuser(), "
                        "str(pathlib.Path.home()))", context=ctx)
    assert where.text == "('/root', 'root', '/root')"
    js = ci.create_code_context(cwd="/root", language="javascript")
    assert ci.run_code("process.cwd()", context=js).text == "/root"
    # The default context still starts in /home/user, and what code writes there is readable
    # through the filesystem API, which acts as `user`.
    assert ci.run_code("import os; os.getcwd()").text == "/home/user"
    ci.run_code("open('/home/user/from-code.txt', 'w').write('written by a kernel')")
    assert ci.files.read("/home/user/from-code.txt") == "written by a kernel"
    for c in (ctx, js):
        ci.remove_code_context(c)


def test_a_missing_cwd_is_a_clear_error(ci):
    with pytest.raises(Exception) as e:
        ci.create_code_context(cwd="/no/such/dir")
    assert "400" in str(e.value) and "/no/such/dir" in str(e.value)


# -- default contexts and JavaScript -------------------------------------------------------------


def test_python_and_javascript_contexts_exist_from_the_start(sandboxes):
    sbx = sandboxes(sandbox_class=CodeSandbox, timeout=120)
    listed = sbx.list_code_contexts()
    assert sorted(c.language for c in listed) == ["javascript", "python"]
    assert all(c.cwd == "/home/user" for c in listed)
    # language="js" runs in that listed context: no new context appears.
    assert sbx.run_code("globalThis.mark = 'default js'; 1", language="js").text == "1"
    assert [c.id for c in sbx.list_code_contexts()] == [c.id for c in listed]


def test_javascript_takes_esm_imports(ci):
    run = ci.run_code("""
    import { readFileSync } from 'fs'
    import * as path from 'node:path'
    import util, { format } from 'util'
    console.log(typeof readFileSync, path.basename('/a/b.txt'), format('%d!', 7))
    """, language="js")
    assert run.error is None and run.logs.stdout == ["function b.txt 7!\n"]
    later = ci.run_code("typeof util.inspect + ' ' + typeof readFileSync", language="javascript")
    assert later.text == "function function"
    assert ci.run_code("await Promise.resolve('awaited')", language="js").text == "awaited"
    assert ci.run_code("require('os').platform()", language="js").text == "linux"


# -- TypeScript and R ----------------------------------------------------------------------------


def test_typescript(ci):
    run = ci.run_code("const greeting: string = 'typed'; console.log(greeting)", language="ts")
    assert run.error is None and run.logs.stdout == ["typed\n"]
    ci.run_code("type Point = { x: number; y: number }\nconst pt: Point = { x: 3, y: 4 }",
                language="typescript")
    assert ci.run_code("Math.hypot(pt.x, pt.y)", language="ts").text == "5"
    assert ci.run_code("process.cwd()", language="ts").text == "/home/user"
    ctx = ci.create_code_context(language="typescript")
    assert ctx.language == "typescript"
    assert ci.run_code("typeof pt", context=ctx).text == "undefined", "contexts are separate"
    bad = ci.run_code("let oops: = 1", context=ctx)
    assert bad.error is not None and bad.error.name == "SyntaxError"
    ci.remove_code_context(ctx)


def test_r(ci):
    run = ci.run_code('print("Hello, World!")', language="r")
    assert run.error is None and run.logs.stdout == ['[1] "Hello, World!"\n']
    ci.run_code("kept <- c(1, 2, 3)", language="r")
    assert ci.run_code("sum(kept)", language="r").results[0].text.strip() == "[1] 6"
    assert ci.run_code("getwd()", language="r").results[0].text.strip() == '[1] "/home/user"'
    once = ci.run_code("Sys.getenv('ONCE')", language="r", envs={"ONCE": "set"})
    assert once.results[0].text.strip() == '[1] "set"'
    after = ci.run_code("Sys.getenv('ONCE', unset = 'gone')", language="r")
    assert after.results[0].text.strip() == '[1] "gone"'
    err = ci.run_code("stop('r failed')", language="r")
    assert err.error is not None and "r failed" in err.error.value
    ctx = ci.create_code_context(language="r", cwd="/tmp")
    assert ci.run_code("getwd()", context=ctx).results[0].text.strip() == '[1] "/tmp"'
    ci.remove_code_context(ctx)


def test_java_is_refused_by_name(ci):
    with pytest.raises(Exception) as e:
        ci.run_code("System.out.println(1)", language="java")
    assert "400" in str(e.value) and "'java'" in str(e.value) and "not supported" in str(e.value)
    with pytest.raises(Exception) as e:
        ci.create_code_context(language="java")
    assert "'java'" in str(e.value)


# -- charts and data -----------------------------------------------------------------------------


def chart_of(ci, code):
    charts = [r.chart for r in results_with(ci.run_code(code), "chart")]
    assert len(charts) == 1, charts
    return charts[0]


def test_line_chart_with_points_and_labels(ci):
    chart = chart_of(ci, """
import matplotlib.pyplot as plt
plt.figure()
plt.plot([0, 1, 2, 3], [0, 1, 4, 9], label='squares')
plt.plot([0, 1, 2, 3], [0, 1, 8, 27], label='cubes')
plt.title('Powers'); plt.xlabel('n'); plt.ylabel('value')
plt.show()
""")
    assert isinstance(chart, LineChart) and chart.type == ChartType.LINE
    assert (chart.title, chart.x_label, chart.y_label) == ("Powers", "n", "value")
    assert [e.label for e in chart.elements] == ["squares", "cubes"]
    assert chart.elements[1].points == [(0, 0), (1, 1), (2, 8), (3, 27)]
    assert chart.x_scale == "linear" and chart.y_scale == "linear"


def test_bar_scatter_pie_and_box_charts(ci):
    bar = chart_of(ci, "import matplotlib.pyplot as plt\nplt.figure()\n"
                       "plt.bar(['x', 'y', 'z'], [3, 1, 2])\nplt.title('Bars')\nplt.show()")
    assert isinstance(bar, BarChart) and bar.title == "Bars"
    assert [(e.label, e.value) for e in bar.elements] == [("x", 3), ("y", 1), ("z", 2)]
    scatter = chart_of(ci, "plt.figure()\nplt.scatter([1, 2, 3], [4, 5, 6], label='dots')\n"
                           "plt.show()")
    assert isinstance(scatter, ScatterChart)
    assert scatter.elements[0].points == [(1, 4), (2, 5), (3, 6)]
    pie = chart_of(ci, "plt.figure()\nplt.pie([1, 3], labels=['small', 'big'])\nplt.show()")
    assert isinstance(pie, PieChart)
    assert [(e.label, e.angle) for e in pie.elements] == [("small", 90), ("big", 270)]
    # Boxes drawn as patches: plain boxplot() lines read as a line chart, in E2B too.
    box = chart_of(ci, "plt.figure()\nplt.boxplot([[1, 2, 3, 4, 5], [2, 4, 6, 8, 10]], "
                       "labels=['a', 'b'], patch_artist=True)\nplt.show()")
    assert isinstance(box, BoxAndWhiskerChart)
    assert [(e.label, e.min, e.median, e.max) for e in box.elements] == [
        ("a", 1, 3, 5), ("b", 2, 6, 10)]


def test_superchart_and_scales(ci):
    sup = chart_of(ci, """
import matplotlib.pyplot as plt, datetime
fig, (left, right) = plt.subplots(1, 2)
fig.suptitle('Two panels')
left.plot([datetime.date(2024, 1, d) for d in (1, 2, 3)], [1, 2, 3])
left.set_title('dates')
right.plot([1, 10, 100], [1, 2, 3]); right.set_xscale('log'); right.set_title('log')
plt.show()
""")
    assert isinstance(sup, SuperChart) and sup.title == "Two panels"
    dates, log = sup.elements
    assert isinstance(dates, LineChart) and dates.x_scale == "datetime"
    assert isinstance(log, LineChart) and log.x_scale == "log"
    cat = chart_of(ci, "plt.figure()\nplt.plot([1, 2, 3], ['low', 'mid', 'high'])\nplt.show()")
    assert cat.y_scale == "categorical"


def test_dataframes_have_data_and_dicts_have_json(ci):
    run = ci.run_code("import pandas as pd\n"
                      "pd.DataFrame({'a': [1, 2, 3], 'b': ['x', 'y', None]})")
    (frame,) = results_with(run, "data")
    assert frame.is_main_result and frame.data == {"a": [1, 2, 3], "b": ["x", "y", None]}
    assert "<table" in frame.html
    (obj,) = results_with(ci.run_code("{'k': [1, 2], 'n': None}"), "json")
    assert obj.json == {"k": [1, 2], "n": None} and obj.text == "{'k': [1, 2], 'n': None}"
    # An empty figure has a picture but no chart.
    blank = ci.run_code("plt.figure(); plt.show()")
    assert blank.error is None and not results_with(blank, "chart")
