"""schema.Positions: the named positions of a row tuple are its column tuple's, and can't drift."""

from __future__ import annotations

import pytest

from exporters.postgres import schema
from exporters.postgres.schema import PM, RES, SE, UA, Positions


@pytest.mark.parametrize(
    ("positions", "columns"),
    [
        (SE, schema.SYSTEM_EVENTS_COLUMNS),
        (PM, schema.PERFORMANCE_METRICS_COLUMNS),
        (RES, schema.OTEL_RESOURCES_COLUMNS),
        (UA, schema.USER_ANALYTICS_COLUMNS),
    ],
)
def test_every_column_is_named_at_its_position(positions: type[Positions], columns: tuple[str, ...]) -> None:
    assert positions.COLUMNS is columns
    assert [getattr(positions, c.upper()) for c in columns] == list(range(len(columns)))


def test_reads_a_row_by_name() -> None:
    row = tuple(range(len(schema.SYSTEM_EVENTS_COLUMNS)))
    assert row[SE.SERVICE_NAME] == schema.SYSTEM_EVENTS_COLUMNS.index("service_name")


@pytest.mark.parametrize(
    "declared",
    [("A",), ("A", "B", "C"), ("B", "A"), ("A", "X")],
    ids=["missing", "extra", "moved", "renamed"],
)
def test_a_declaration_that_does_not_match_its_columns_fails(declared: tuple[str, ...]) -> None:
    with pytest.raises(TypeError, match="declares"):
        type("Bad", (Positions,), {"__annotations__": dict.fromkeys(declared, int)}, columns=("a", "b"))
