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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

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
    """A source's HTTP API: base URL, default headers, secret query parameters, retry policy.

    A protocol's client may override :attr:`HINTS` (what to check on a 4xx), :meth:`server_said`
    and :meth:`retry_reason` (how the server's answer is quoted in errors).
    """

    # what to check when the source answers these 4xx statuses
    HINTS: ClassVar[dict[int, str]] = {
        401: "the credentials were refused: check the API key / connection",
        403: "access denied: check the account's permissions",
        404: "not found: check the base URL and the dataset endpoint in the contract",
    }
    DEFAULT_HINT = "the source rejected the request"

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
        """GET ``path`` (relative to the base URL) with the secret query parameters, with retries;
        returns a 2xx response."""
        return self.request("GET", path, params={**(params or {}), **self._secret_params}, what=what or path)

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Any = None,
        headers: dict[str, str] | None = None,
        what: str,
    ) -> httpx.Response:
        """One request (``url`` relative to the base URL, or absolute) with retries on 429/5xx,
        timeouts and connection errors; returns a 2xx response, else raises SourceError.

        ``what`` names the request in logs and errors: the URL never does (it may carry secrets).
        """
        try:
            return self._retrying(what)(self._request_once, method, url, params, headers, what)
        except RetryableHTTPError as exc:
            raise self._exhausted(what, exc) from None

    def _retrying(self, what: str) -> Retrying:
        return Retrying(
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

    def _exhausted(self, what: str, exc: Exception) -> SourceError:
        return SourceError(
            f"{self.source}: {what} still failing after {self.policy.max_attempts} attempts: {exc}. "
            "Nothing from this run was committed; the cursor is unchanged. "
            "Check that the source system is up, then re-run."
        )

    def _request_once(
        self, method: str, url: str, params: Any, headers: dict[str, str] | None, what: str
    ) -> httpx.Response:
        with self.transport_errors():
            response = self._client.request(method, url, params=params, headers=headers)
        self.check(response, what)
        return response

    @contextmanager
    def transport_errors(self) -> Iterator[None]:
        """Timeouts and connection errors as RetryableHTTPError (naming neither URL nor secrets)."""
        try:
            yield
        except httpx.TimeoutException:
            raise RetryableHTTPError(f"timed out after {self.policy.timeout:g}s") from None
        except httpx.TransportError as exc:
            raise RetryableHTTPError(f"connection failed ({type(exc).__name__})") from None

    def check(self, response: httpx.Response, what: str, *, hint: bool = True) -> None:
        """Raise RetryableHTTPError for 429/5xx (with Retry-After), SourceError for other 4xx."""
        if response.status_code in RETRYABLE_STATUS:
            raise RetryableHTTPError(
                self.retry_reason(response),
                retry_after=_retry_after_seconds(response.headers.get("Retry-After")),
            )
        if response.status_code >= 400:
            advice = f" — {self.HINTS.get(response.status_code, self.DEFAULT_HINT)}" if hint else ""
            raise SourceError(
                f"{self.source}: {what} answered HTTP {response.status_code}{advice}. "
                f"{self.server_said(response)}"
            )

    def retry_reason(self, response: httpx.Response) -> str:
        """Why a retryable answer failed, for the retry log and the final error (overridable)."""
        return f"HTTP {response.status_code}"

    def server_said(self, response: httpx.Response) -> str:
        """What the server said in a 4xx answer, for the error message (overridable)."""
        return f"Response: {response.text[:300]!r}"


class HttpConnector:
    """What the REST connectors share: their constructor's arguments, one :class:`HttpClient`
    (:meth:`make_client` says how the protocol sends the API key) and ``close``."""

    SOURCE: ClassVar[str]  # the default source name
    PAGE_SIZE: ClassVar[int | None] = None  # None: the contract's options decide

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        source: str | None = None,
        page_size: int | None = None,
        policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        **_: object,
    ) -> None:
        self.source = source or self.SOURCE
        self.page_size = self.PAGE_SIZE if page_size is None else page_size
        self.client = self.make_client(base_url, api_key, policy=policy, transport=transport)

    def make_client(self, base_url: str, api_key: str | None, **kwargs: Any) -> HttpClient:
        """The client for ``base_url``; ``kwargs`` (policy, transport) go to its constructor."""
        raise NotImplementedError

    def close(self) -> None:
        self.client.close()
