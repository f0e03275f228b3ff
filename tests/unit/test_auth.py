"""Bearer token check shared by both receivers (RFC 6750: scheme case-insensitive, one header)."""

from __future__ import annotations

import pytest

from sidecar.pipeline.errors import UnauthenticatedError
from sidecar.receivers.auth import BearerAuth

TOKEN = "s3cret-tok.en_~+/=="


@pytest.fixture
def auth() -> BearerAuth:
    return BearerAuth(TOKEN)


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {TOKEN}",
        f"bearer {TOKEN}",
        f"BEARER {TOKEN}",
        f"BeArEr {TOKEN}",
        f"Bearer    {TOKEN}",
        f"Bearer \t {TOKEN}",
        f"Bearer\t{TOKEN}",
        f"  Bearer {TOKEN} \t",  # surrounding whitespace isn't part of a field value (RFC 9110 OWS)
        f"Bearer {TOKEN}".encode(),
    ],
)
def test_accepts_one_bearer_header_with_the_token(auth, value):
    auth.check([value])
    auth.check((value,))


def refused(auth: BearerAuth, values) -> str:
    with pytest.raises(UnauthenticatedError) as e:
        auth.check(values)
    message = str(e.value)
    assert TOKEN not in message
    return message


def test_missing(auth):
    assert "missing" in refused(auth, [])


@pytest.mark.parametrize(
    "values",
    [
        [f"Bearer {TOKEN}", "Bearer nope"],
        ["Bearer nope", f"Bearer {TOKEN}"],
        [f"Bearer {TOKEN}", f"Bearer {TOKEN}"],
        [f"Bearer {TOKEN}", ""],
        [b"Bearer nope", f"Bearer {TOKEN}".encode()],
    ],
)
def test_more_than_one_header_is_refused(auth, values):
    assert "multiple Authorization headers" in refused(auth, values)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Bearer",
        "Bearer ",
        "Bearer \t ",
        TOKEN,  # no scheme
        f"Basic {TOKEN}",
        f"Basic Zm9vOmJhcg==, Bearer {TOKEN}",
        f"Bearers {TOKEN}",
        f"Bearer{TOKEN}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN} {TOKEN}",
        f"Bearer\n{TOKEN}",
        f"Bearer {TOKEN.upper()}",  # the token itself is case-sensitive
        "Bearer nope",
    ],
)
def test_wrong_scheme_empty_or_wrong_token_is_refused(auth, value):
    message = refused(auth, [value])
    assert TOKEN not in message


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer \xff\xfe\x80",
        b"\xffBearer " + TOKEN.encode(),
        b"Bearer " + TOKEN.encode() + b"\xc3",
        "Bearer \udcff\udcfe",  # aiohttp's surrogateescape of non-UTF-8 bytes
        "Bearer \ud800",  # a lone surrogate no codec error handler encodes
        "Bearer caf\u00e9",
        b"Bearer \x00" + TOKEN.encode(),
        b"",
    ],
)
def test_garbage_is_refused_not_crashed(auth, value):
    message = refused(auth, [value])
    assert TOKEN not in message


def test_non_ascii_token_configured_matches_its_utf8_bytes():
    auth = BearerAuth("jeton-été")
    auth.check(["Bearer jeton-été"])
    auth.check(["Bearer jeton-été".encode()])
    # aiohttp hands a UTF-8 header it can decode as text; one it can't, surrogate-escaped.
    auth.check(["Bearer jeton-été".encode().decode("utf-8", "surrogateescape")])
    with pytest.raises(UnauthenticatedError):
        auth.check(["Bearer jeton-ete"])


def test_an_empty_configured_token_is_a_programming_error():
    with pytest.raises(ValueError):
        BearerAuth("")


def test_messages_never_echo_what_was_sent(auth):
    for values in (["Bearer guess-me"], ["Basic guess-me"], ["Bearer guess-me", "Bearer guess-me"]):
        assert "guess-me" not in refused(auth, values)
