"""otelpg's log lines can't be forged by a client: control characters in a message are escaped."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest

from sidecar.logging_setup import setup_logging

LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) otelpg\.test: ")


@pytest.fixture
def log() -> Iterator[logging.Logger]:
    """The root logger without pytest's handlers (basicConfig(force=True) would close them), then
    restored. Tests call setup_logging() themselves: sys.stderr is captured only while they run."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    for h in handlers:
        root.removeHandler(h)
    try:
        yield logging.getLogger("otelpg.test")
    finally:
        for h in root.handlers[:]:
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)


def test_a_forged_multi_line_argument_stays_on_one_line(log, capsys):
    setup_logging("info")
    forged = "web\n2031-03-10 12:30:00,000 ERROR otelpg: database dropped\r\nnext"
    log.warning("agent_states row %s dropped", forged)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\r" not in err
    assert LINE.match(err)
    assert err.endswith(
        "agent_states row web\\n2031-03-10 12:30:00,000 ERROR otelpg: database dropped\\r\\nnext dropped\n"
    )


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[31mred", "\\x1b[31mred"),
        ("a\tb\x00c\x7fd", "a\\tb\\x00c\\x7fd"),
        ("\x0bv\x0cf\x1cfs", "\\x0bv\\x0cf\\x1cfs"),
        ("nel\x85ls\u2028ps\u2029", "nel\\x85ls\\u2028ps\\u2029"),
        ("café ✓ 日本 back\\slash", "café ✓ 日本 back\\slash"),  # printable text, ASCII or not, as is
    ],
)
def test_control_and_line_breaking_characters_are_visible_escapes(log, capsys, raw, shown):
    setup_logging("info")
    log.info("service.name=%s", raw)
    err = capsys.readouterr().err
    assert err.endswith(f"service.name={shown}\n")
    assert len(err.splitlines()) == 1  # str.splitlines breaks on \x0b \x0c \x1c-\x1e \x85 \u2028 \u2029 too


def test_tracebacks_keep_their_newlines(log, capsys):
    setup_logging("info")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed for %s", "a\nb")
    first, *rest = capsys.readouterr().err.splitlines()
    assert first.endswith("otelpg.test: failed for a\\nb")
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError: boom"


def test_level_and_quiet_loggers(log, capsys):
    setup_logging("warning")
    log.info("not shown")
    assert capsys.readouterr().err == ""
    assert logging.getLogger("asyncio").level == logging.WARNING
    setup_logging("debug")
    log.debug("shown")
    assert capsys.readouterr().err.endswith("otelpg.test: shown\n")
