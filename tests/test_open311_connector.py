"""The Open311 connector on recorded GeoReport v2 responses (no simulator, no network)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ingest.contracts import load_registry
from ingest.sources import SourceError, Window
from ingest.sources.http import RetryPolicy
from ingest.sources.open311 import Open311Connector

FIXTURES = Path(__file__).parent / "fixtures" / "open311"
SOURCE = load_registry().source("open311")
REQUESTS = SOURCE.dataset("service_requests")
SERVICES = SOURCE.dataset("services")
FAST = RetryPolicy(max_attempts=4, initial_wait=0.01, max_wait=3, timeout=5)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def connector(handler, **kwargs) -> Open311Connector:
    return Open311Connector(
        "http://open311.test/open311/v2",
        policy=FAST,
        page_size=3,
        transport=httpx.MockTransport(handler),
        **kwargs,
    )


def window(days: int = 30) -> Window:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    return Window(
        since=since, until=since.replace(day=1 + days) if days < 31 else datetime(2026, 3, 1, tzinfo=UTC)
    )


def test_services_are_read_whole_and_kept_byte_for_byte():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, content=fixture("services.json"))

    pages = list(connector(handler).extract(SERVICES, None))
    assert seen == ["/open311/v2/services.json"]
    assert len(pages) == 1
    assert pages[0].payload == fixture("services.json")
    assert [r["service_code"] for r in pages[0].records] == [
        s["service_code"] for s in json.loads(fixture("services.json"))
    ]


def test_requests_are_paged_until_a_short_page():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        calls.append(params)
        body = {"1": fixture("requests_page1.json"), "2": fixture("requests_page2.json")}[params["page"]]
        return httpx.Response(200, content=body)

    pages = list(connector(handler).extract(REQUESTS, window(20)))
    assert [c["page"] for c in calls] == ["1", "2"]  # page 2 is short (2 < 3): stop
    assert calls[0]["updated_after"] == "2026-01-01T00:00:00Z"
    assert calls[0]["updated_before"] == "2026-01-21T00:00:00Z"
    assert calls[0]["page_size"] == "3"
    assert sum(len(p.records) for p in pages) == 5


def test_long_windows_are_sliced_to_the_contract_window():
    slices = []

    def handler(request: httpx.Request) -> httpx.Response:
        slices.append((request.url.params["updated_after"], request.url.params["updated_before"]))
        return httpx.Response(200, content=b"[]")

    since, until = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 7, 1, tzinfo=UTC)
    assert list(connector(handler).extract(REQUESTS, Window(since, until))) == []
    starts = [datetime.fromisoformat(a) for a, _ in slices]
    ends = [datetime.fromisoformat(b) for _, b in slices]
    assert starts[0] == since and ends[-1] == until
    assert all(e - s <= REQUESTS.cursor.window_delta for s, e in zip(starts, ends, strict=True))
    assert all(ends[i] == starts[i + 1] for i in range(len(slices) - 1))  # contiguous, no gaps


def test_server_errors_are_retried_then_succeed():
    statuses = iter([503, 500, 502, 200])
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        status = next(statuses)
        return httpx.Response(status, content=fixture("services.json") if status == 200 else b"oops")

    (page,) = connector(handler).extract(SERVICES, None)
    assert calls == 4
    assert len(page.records) == 3


def test_429_waits_for_retry_after():
    stamps = []

    def handler(request: httpx.Request) -> httpx.Response:
        stamps.append(time.monotonic())
        if len(stamps) == 1:
            return httpx.Response(429, headers={"Retry-After": "1"}, content=b"slow down")
        return httpx.Response(200, content=fixture("services.json"))

    list(connector(handler).extract(SERVICES, None))
    assert len(stamps) == 2
    assert stamps[1] - stamps[0] >= 0.95  # honoured Retry-After, not the 10 ms backoff


def test_persistent_failure_fails_with_a_clear_message():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, content=b"down")

    with pytest.raises(SourceError, match=r"still failing after 4 attempts: HTTP 500.*cursor is unchanged"):
        list(connector(handler).extract(SERVICES, None))


def test_bad_credentials_fail_fast_without_retry_and_without_leaking_the_key():
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        assert request.url.params["api_key"] == "s3cr3t-key"
        return httpx.Response(401, json=[{"code": 401, "description": "invalid api_key"}])

    with pytest.raises(SourceError) as excinfo:
        list(connector(handler, api_key="s3cr3t-key").extract(SERVICES, None))
    assert calls == 1
    assert "401" in str(excinfo.value) and "credentials" in str(excinfo.value)
    assert "s3cr3t-key" not in str(excinfo.value)


def test_truncated_page_is_an_error_not_a_silent_skip():
    body = fixture("requests_page1.json")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body[: len(body) // 2])

    with pytest.raises(SourceError, match="not valid JSON"):
        list(connector(handler).extract(REQUESTS, window()))


def test_timeouts_are_retried():
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(200, content=fixture("services.json"))

    list(connector(handler).extract(SERVICES, None))
    assert calls == 3
