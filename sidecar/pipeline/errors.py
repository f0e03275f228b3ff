"""The two kinds of pipeline error, plus request and start-up errors.

Errors are classified where they arise (retryable vs permanent) and translated to an
HTTP/gRPC status once, at the edge (`sidecar.receivers.status`).
"""

from __future__ import annotations


class OtelpgError(Exception):
    """Base class of every error otelpg raises on purpose."""


class RetryableError(OtelpgError):
    """Transient: the client should retry (503 / UNAVAILABLE), after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BackpressureError(RetryableError):
    """The queue (or spool) is full."""


class DatabaseUnavailableError(RetryableError):
    """PostgreSQL can't be reached or refused the connection."""


class ShuttingDownError(RetryableError):
    """otelpg is draining and takes no new data."""


class PermanentError(OtelpgError):
    """The data itself is bad: retrying the same request can't succeed. The message is for the
    client; `detail`, when set, is the underlying error for otelpg's own log."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


class DecodeError(PermanentError):
    """The request body can't be decoded (400 / INVALID_ARGUMENT)."""


class IncompleteRequestError(DecodeError):
    """The client closed the connection before its request body was complete: nothing to answer,
    nothing to log but a counter."""


class PayloadTooLargeError(PermanentError):
    """The body exceeds the size limit after decompression (413 / RESOURCE_EXHAUSTED)."""


class UnsupportedMediaTypeError(PermanentError):
    """Content-Type is neither protobuf nor JSON (415)."""


class UnauthenticatedError(PermanentError):
    """Missing or wrong bearer token (401 / UNAUTHENTICATED)."""


class StartupError(OtelpgError):
    """otelpg can't start (bad config, unreachable database...). `exit_code` is the process status."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ConfigError(StartupError):
    """Invalid configuration: names the key and the problem; exit status 2."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"invalid config: {key}: {problem}", exit_code=2)
        self.key = key
        self.problem = problem
