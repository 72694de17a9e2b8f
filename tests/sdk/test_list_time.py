"""`Sandbox.list` filters by start time (the SDK's SandboxQuery started_after; the API's
startedBefore, which this SDK does not expose, through a plain request), and a malformed bound
is a 400 naming it."""

import datetime

import httpx
from e2b import Sandbox, SandboxQuery

from conftest import API_URL, auth_headers


def ids(query):
    return {s.sandbox_id for s in Sandbox.list(query=query).next_items()}


def raw_ids(**params):
    r = httpx.get(f"{API_URL}/v2/sandboxes", params=params, headers=auth_headers(), timeout=30)
    assert r.status_code == 200, r.text
    return {s["sandboxID"] for s in r.json()}


def test_list_filters_by_start_time(sandboxes, tag):
    before = datetime.datetime.now(datetime.timezone.utc)
    sbx = sandboxes(timeout=120, metadata={"t": tag})
    meta = {"t": tag}
    assert sbx.sandbox_id in ids(SandboxQuery(metadata=meta, started_after=before))
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=5)
    assert sbx.sandbox_id not in ids(SandboxQuery(metadata=meta, started_after=later))
    assert sbx.sandbox_id not in raw_ids(startedBefore=before.isoformat())
    assert sbx.sandbox_id in raw_ids(startedAfter=before.isoformat(), startedBefore=later.isoformat())


def test_a_malformed_start_bound_is_refused():
    r = httpx.get(f"{API_URL}/v2/sandboxes", params={"startedAfter": "yesterday"}, headers=auth_headers(), timeout=30)
    assert r.status_code == 400 and "startedAfter" in r.json()["message"], r.text
