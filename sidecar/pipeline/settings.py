"""How a component declares its settings: a frozen dataclass whose fields are `setting(...)`s.

Each component keeps its section next to its code; `sidecar.config` composes the sections into
the one `Config` (YAML, then environment, then defaults), checks every value against what its
`setting` declares, calls each section's `validate()` for rules across fields, and generates the
documented `config/otelpg.yaml` from the same metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field
from typing import Any

REDACTED = "***"


def setting(
    default: Any,
    help: str,
    env: tuple[str, ...] = (),
    *,
    secret: bool | Callable[[str], str | None] = False,
    positive: bool = False,
    minimum: float | None = 0,
    choices: tuple[str, ...] = (),
) -> Any:
    """A configuration key. `secret`: shown as ***, or through the given redaction; `positive`:
    numbers must be > 0; `minimum`: numbers must be >= it (None: any); `choices`: the values
    a string may take (case-insensitive, stored lower-case)."""
    return field(
        default=default,
        metadata={
            "help": help,
            "env": env,
            "secret": secret,
            "positive": positive,
            "minimum": minimum,
            "choices": choices,
        },
    )
