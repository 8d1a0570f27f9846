"""HTTP client shared by the REST connectors: timeouts, retries with backoff, clean errors.

Retries 429 (honouring ``Retry-After``), 5xx, timeouts and connection errors with exponential
backoff and jitter; fails fast on other 4xx. Error messages name the source and the request
but never the query string's secrets.
"""

from __future__ import annotations

import email.utils
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from ingest.sources import SourceError

log = logging.getLogger(__name__)
# httpx logs every URL at INFO, query string included: that would leak API keys into task logs.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

RETRYABLE_STATUS = {429, 500, 502, 503, 504}
USER_AGENT = "community-data-lake-ingest/0.1"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    initial_wait: float = 0.5
    max_wait: float = 60.0
    timeout: float = 30.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        return cls(
            max_attempts=int(os.environ.get("INGEST_HTTP_MAX_ATTEMPTS", cls.max_attempts)),
            initial_wait=float(os.environ.get("INGEST_HTTP_BACKOFF_INITIAL", cls.initial_wait)),
            max_wait=float(os.environ.get("INGEST_HTTP_BACKOFF_MAX", cls.max_wait)),
            timeout=float(os.environ.get("INGEST_HTTP_TIMEOUT", cls.timeout)),
        )


class RetryableHTTPError(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpClient:
    def __init__(
        self,
        base_url: str,
        *,
        source: str,
        policy: RetryPolicy | None = None,
        headers: dict[str, str] | None = None,
        secret_params: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.source = source
        self.policy = policy or RetryPolicy.from_env()
        self._secret_params = secret_params or {}
        self._client = httpx.Client(
            base_url=base_url.rstrip("/") + "/",
            timeout=self.policy.timeout,
            headers={"User-Agent": USER_AGENT, **(headers or {})},
            follow_redirects=True,
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableHTTPError) and exc.retry_after is not None:
            return min(exc.retry_after, self.policy.max_wait)
        return wait_exponential_jitter(
            multiplier=self.policy.initial_wait, max=self.policy.max_wait, jitter=self.policy.initial_wait
        )(state)

    def get(self, path: str, params: dict[str, Any] | None = None, *, what: str = "") -> httpx.Response:
        """GET ``path`` (relative to the base URL) with retries; returns a 2xx response."""
        what = what or path
        retrying = Retrying(
            stop=stop_after_attempt(self.policy.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(RetryableHTTPError),
            reraise=True,
            before_sleep=lambda s: log.warning(
                "%s: %s failed (attempt %d/%d): %s; retrying",
                self.source,
                what,
                s.attempt_number,
                self.policy.max_attempts,
                s.outcome.exception() if s.outcome else "",
            ),
        )
        try:
            return retrying(self._get_once, path, {**(params or {}), **self._secret_params}, what)
        except RetryableHTTPError as exc:
            raise SourceError(
                f"{self.source}: {what} still failing after {self.policy.max_attempts} attempts: {exc}. "
                "Nothing from this run was committed; the cursor is unchanged. "
                "Check that the source system is up, then re-run."
            ) from None

    def _get_once(self, path: str, params: dict[str, Any], what: str) -> httpx.Response:
        try:
            response = self._client.get(path, params=params)
        except httpx.TimeoutException:
            raise RetryableHTTPError(f"timed out after {self.policy.timeout:g}s") from None
        except httpx.TransportError as exc:
            raise RetryableHTTPError(f"connection failed ({type(exc).__name__})") from None
        if response.status_code in RETRYABLE_STATUS:
            raise RetryableHTTPError(
                f"HTTP {response.status_code}",
                retry_after=_retry_after_seconds(response.headers.get("Retry-After")),
            )
        if response.status_code >= 400:
            hint = {
                401: "the credentials were refused: check the API key / connection",
                403: "access denied: check the account's permissions",
                404: "not found: check the base URL and the dataset endpoint in the contract",
            }.get(response.status_code, "the source rejected the request")
            raise SourceError(
                f"{self.source}: {what} answered HTTP {response.status_code} — {hint}. "
                f"Response: {response.text[:300]!r}"
            )
        return response
