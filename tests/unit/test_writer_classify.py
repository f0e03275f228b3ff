import asyncpg
import pytest

from exporters.postgres.writer import classify
from sidecar.pipeline.errors import DatabaseUnavailableError, PermanentError


def _pg(cls: type[asyncpg.PostgresError]) -> asyncpg.PostgresError:
    return cls("message")


@pytest.mark.parametrize(
    "error",
    [
        _pg(asyncpg.exceptions.AdminShutdownError),  # 57P01: server shutting down
        _pg(asyncpg.exceptions.CannotConnectNowError),  # 57P03: starting up / shutting down
        _pg(asyncpg.exceptions.TooManyConnectionsError),  # 53300
        _pg(asyncpg.exceptions.SerializationError),  # 40001
        _pg(asyncpg.exceptions.DeadlockDetectedError),  # 40P01
        _pg(asyncpg.exceptions.InternalServerError),  # XX000
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.ProtocolError("unexpected message"),
        ConnectionResetError(),
        TimeoutError(),
        RuntimeError("anything unexpected on the client side"),
    ],
)
def test_transient_and_unknown_failures_are_retryable(error):
    assert isinstance(classify(error), DatabaseUnavailableError)


@pytest.mark.parametrize(
    "error",
    [
        _pg(asyncpg.exceptions.NumericValueOutOfRangeError),  # 22003
        _pg(asyncpg.exceptions.UntranslatableCharacterError),  # 22P05
        _pg(asyncpg.exceptions.UniqueViolationError),  # 23505
        _pg(asyncpg.exceptions.UndefinedColumnError),  # 42703
        _pg(asyncpg.exceptions.ProgramLimitExceededError),  # 54000
        asyncpg.exceptions.DataError("invalid input for query argument"),
        OverflowError("int too big to convert"),
    ],
)
def test_bad_data_is_permanent(error):
    assert isinstance(classify(error), PermanentError)


def test_a_refused_rows_contents_stay_out_of_the_detail_that_is_logged():
    error = asyncpg.exceptions.CheckViolationError("new row violates check constraint")
    error.detail = "Failing row contains (2026-12-03, secret-user-data)"
    classified = classify(error)
    assert "secret-user-data" not in classified.detail and "secret-user-data" not in str(classified)
    assert classified.detail == "CheckViolationError: new row violates check constraint"
