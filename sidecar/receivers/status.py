"""The one table that turns an error into an HTTP status, a gRPC code and a retry hint."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sidecar.pipeline.errors import (
    BackpressureError,
    DatabaseUnavailableError,
    DecodeError,
    IncompleteRequestError,
    PayloadTooLargeError,
    PermanentError,
    RetryableError,
    ShuttingDownError,
    UnauthenticatedError,
    UnsupportedMediaTypeError,
)

log = logging.getLogger("otelpg.receiver")

# google.rpc.Code values (same numbers as grpc.StatusCode).
INVALID_ARGUMENT = 3
RESOURCE_EXHAUSTED = 8
INTERNAL = 13
UNAVAILABLE = 14
UNAUTHENTICATED = 16


@dataclass(frozen=True, slots=True)
class Status:
    http: int
    grpc: int
    message: str
    reason: str  # label of otelpg_receiver_refused_*_total
    retry_after: float | None = None


# Most specific first.
_TABLE: tuple[tuple[type[Exception], int, int, str], ...] = (
    (IncompleteRequestError, 400, INVALID_ARGUMENT, "incomplete"),
    (DecodeError, 400, INVALID_ARGUMENT, "decode_error"),
    (PayloadTooLargeError, 413, RESOURCE_EXHAUSTED, "too_large"),
    (UnsupportedMediaTypeError, 415, INVALID_ARGUMENT, "unsupported_media_type"),
    (UnauthenticatedError, 401, UNAUTHENTICATED, "unauthenticated"),
    (BackpressureError, 503, UNAVAILABLE, "backpressure"),
    (DatabaseUnavailableError, 503, UNAVAILABLE, "database_unavailable"),
    (ShuttingDownError, 503, UNAVAILABLE, "shutting_down"),
    (RetryableError, 503, UNAVAILABLE, "retryable"),
    (PermanentError, 500, INTERNAL, "permanent"),
)


def status_for(error: BaseException) -> Status:
    for kind, http, grpc_code, reason in _TABLE:
        if isinstance(error, kind):
            retry_after = error.retry_after if isinstance(error, RetryableError) else None
            return Status(http, grpc_code, str(error), reason, retry_after)
    log.error("unexpected error handling a request", exc_info=error)
    return Status(500, INTERNAL, f"internal error: {type(error).__name__}", "internal")
