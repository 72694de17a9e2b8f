"""Control plane: create, info, list, filters, pagination, timeouts, kill, connect."""

import time
from datetime import datetime, timedelta, timezone

import pytest
from e2b import Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import NotFoundException, SandboxException


def test_create_with_metadata_envs_and_timeout(tag, sandboxes):
    sbx = sandboxes(timeout=90, metadata={"suite": tag, "kind": "create"}, envs={"A": "1", "B": "two words"})
    info = sbx.get_info()
    assert info.sandbox_id == sbx.sandbox_id
    assert info.template_id == "base"
    assert info.metadata == {"suite": tag, "kind": "create"}
    assert info.state == SandboxState.RUNNING
    now = datetime.now(timezone.utc)
    assert abs((info.started_at - now).total_seconds()) < 30
    assert timedelta(seconds=60) < info.end_at - now <= timedelta(seconds=95)
    out = sbx.commands.run('echo "$A|$B"')
    assert out.stdout == "1|two words\n"
    # sandbox-wide env vars reach background processes and other users too
    out = sbx.commands.run("echo $A", user="root")
    assert out.stdout == "1\n"
    assert sbx.kill() is True


def test_default_timeout_is_300_seconds(sandboxes):
    sbx = sandboxes()
    info = sbx.get_info()
    left = (info.end_at - datetime.now(timezone.utc)).total_seconds()
    assert 270 < left <= 301


def test_list_filters_by_metadata_and_state(tag, sandboxes):
    a = sandboxes(timeout=60, metadata={"suite": tag, "n": "a"})
    b = sandboxes(timeout=60, metadata={"suite": tag, "n": "b"})
    found = Sandbox.list(query=SandboxQuery(metadata={"suite": tag})).next_items()
    assert {s.sandbox_id for s in found} == {a.sandbox_id, b.sandbox_id}
    only_a = Sandbox.list(query=SandboxQuery(metadata={"suite": tag, "n": "a"})).next_items()
    assert [s.sandbox_id for s in only_a] == [a.sandbox_id]
    running = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}, state=[SandboxState.RUNNING])).next_items()
    assert len(running) == 2
    assert all(s.state == SandboxState.RUNNING for s in running)
    paused = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}, state=[SandboxState.PAUSED])).next_items()
    assert paused == []
    weird = Sandbox.list(query=SandboxQuery(metadata={"a b/c": "d&e=f"})).next_items()
    assert weird == []


def test_list_metadata_with_special_characters(tag, sandboxes):
    meta = {"suite": tag, "path key": "a/b c&d=e"}
    sbx = sandboxes(timeout=60, metadata=meta)
    found = Sandbox.list(query=SandboxQuery(metadata=meta)).next_items()
    assert [s.sandbox_id for s in found] == [sbx.sandbox_id]
    assert found[0].metadata == meta


def test_list_paginates_with_next_token(tag, sandboxes):
    sbxs = [sandboxes(timeout=60, metadata={"suite": tag, "i": str(i)}) for i in range(3)]
    pager = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}), limit=2)
    pages = []
    while pager.has_next:
        pages.append([s.sandbox_id for s in pager.next_items()])
    assert len(pages) >= 2
    assert sorted(sum(pages, [])) == sorted(s.sandbox_id for s in sbxs)
    assert all(len(p) <= 2 for p in pages)


def test_set_timeout_moves_end_at(sandbox):
    before = sandbox.get_info().end_at
    sandbox.set_timeout(30)
    after = sandbox.get_info().end_at
    assert after < before
    left = (after - datetime.now(timezone.utc)).total_seconds()
    assert 20 < left <= 31
    sandbox.set_timeout(200)
    assert sandbox.get_info().end_at > after


def test_sandbox_expires_at_end_at():
    created = time.time()
    sbx = Sandbox.create(timeout=5)
    assert sbx.is_running()
    time.sleep(max(0.0, created + 2.5 - time.time()))
    assert sbx.is_running(), "killed well before endAt"
    deadline = created + 15
    while time.time() < deadline and sbx.is_running():
        time.sleep(0.5)
    assert not sbx.is_running(), "still running 10 s after endAt"
    assert time.time() - created >= 4.5, "killed before endAt"
    assert Sandbox.kill(sbx.sandbox_id) is False
    with pytest.raises(NotFoundException):
        Sandbox.get_info(sbx.sandbox_id)


def test_kill_then_everything_reports_gone():
    sbx = Sandbox.create(timeout=60)
    assert sbx.is_running()
    assert sbx.kill() is True
    assert sbx.is_running() is False
    assert sbx.kill() is False
    assert Sandbox.kill(sbx.sandbox_id) is False
    with pytest.raises(SandboxException) as e:
        sbx.commands.run("echo unreachable")
    assert "was not found" in str(e.value) or "not running" in str(e.value).lower()
    ids = {s.sandbox_id for s in Sandbox.list().next_items()}
    assert sbx.sandbox_id not in ids


def test_connect_to_running_sandbox(sandbox):
    sandbox.commands.run("echo persisted > /tmp/marker")
    other = Sandbox.connect(sandbox.sandbox_id)
    assert other.sandbox_id == sandbox.sandbox_id
    assert other.commands.run("cat /tmp/marker").stdout == "persisted\n"
    # connect never shortens the end time
    before = sandbox.get_info().end_at
    Sandbox.connect(sandbox.sandbox_id, timeout=5)
    assert sandbox.get_info().end_at >= before


def test_connect_to_unknown_sandbox_raises():
    with pytest.raises(SandboxException):
        Sandbox.connect("doesnotexist0000000")


def test_metrics_report_real_usage(sandbox):
    metrics = sandbox.get_metrics()
    assert len(metrics) >= 1
    m = metrics[-1]
    assert m.cpu_count >= 1
    assert m.mem_total > 0 and 0 < m.mem_used <= m.mem_total
    assert m.disk_total > 0
    # CPU and memory come from the sandbox's cgroup on the host: its limit, and real load.
    assert m.mem_total == 512 << 20, "the sandbox's memory limit (default 512 MiB)"
    sandbox.commands.run("timeout 5 sh -c 'while :; do :; done'", background=True)
    import time
    time.sleep(1)
    busy = sandbox.get_metrics()[-1]
    assert busy.cpu_used_pct > 10, f"a busy loop shows as CPU use: {busy.cpu_used_pct}%"


def test_metrics_keep_a_history_and_answer_time_ranges(sandboxes):
    import datetime
    import time

    sbx = sandboxes(timeout=120)
    created = datetime.datetime.now(datetime.timezone.utc)
    time.sleep(6)  # the server samples every 5 s, and once per request
    history = sbx.get_metrics()
    assert len(history) >= 2, f"a background sample and this request's: {len(history)}"
    stamps = [m.timestamp for m in history]
    assert stamps == sorted(stamps), "oldest first"
    # A window before the sandbox existed is empty, as in E2B.
    before = sbx.get_metrics(start=created - datetime.timedelta(hours=2), end=created - datetime.timedelta(hours=1))
    assert before == []
    recent = sbx.get_metrics(start=created - datetime.timedelta(seconds=1))
    assert len(recent) >= len(history)
    # Paused: the history stays readable.
    assert sbx.pause()
    assert len(Sandbox.get_metrics(sbx.sandbox_id)) >= len(history)


def test_concurrent_creates_are_independent(tag, sandboxes):
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        sbx = sandboxes(timeout=60, metadata={"suite": tag}, envs={"N": str(i)})
        sbx.files.write("/home/user/who.txt", f"sandbox {i}")
        out = sbx.commands.run("echo $N; cat /home/user/who.txt; ls /home/user").stdout
        sbx.kill()
        return sbx.sandbox_id, out

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(4)))
    assert len({sid for sid, _ in results}) == 4
    for i, (_, out) in enumerate(results):
        # each sandbox sees only its own env and its own files
        assert out == f"{i}\nsandbox {i}who.txt\n"
    assert Sandbox.list(query=SandboxQuery(metadata={"suite": tag})).next_items() == []
