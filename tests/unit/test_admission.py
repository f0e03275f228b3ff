"""Admission: one memory budget, reserved before each step, with the oldest-first and large-request rules."""

from __future__ import annotations

import threading

import pytest

from sidecar.pipeline.admission import Admission
from sidecar.pipeline.errors import BackpressureError

MiB = 1 << 20


def test_reservations_add_up_and_release() -> None:
    a = Admission(64 * MiB)
    r1, r2 = a.reserve(MiB), a.reserve(2 * MiB)
    r1.grow(MiB)
    assert a.bytes == 4 * MiB
    r2.shrink(MiB)
    r1.release()
    assert a.bytes == MiB
    with r2:
        pass
    assert a.bytes == 0


def test_beyond_the_budget_is_refused_and_keeps_what_it_held() -> None:
    a = Admission(10 * MiB)
    held = a.reserve(8 * MiB)
    r = a.reserve(MiB)
    with pytest.raises(BackpressureError) as refused:
        r.grow(2 * MiB)
    assert refused.value.retry_after == 1.0
    assert r.nbytes == MiB and a.bytes == 9 * MiB
    with pytest.raises(BackpressureError):
        a.reserve(2 * MiB)
    held.release()
    r.grow(2 * MiB)  # room again


def test_a_request_alone_is_always_admitted() -> None:
    a = Admission(MiB)
    r = a.reserve(100 * MiB)
    r.grow(100 * MiB)
    assert a.bytes == 200 * MiB
    with pytest.raises(BackpressureError):
        a.reserve(1)
    r.release()
    a.reserve(1)


def test_the_oldest_request_always_gets_through_newcomers_do_not() -> None:
    """Newcomers can't starve a request that got far: it is let through each of its steps, while
    the budget refuses the newer ones (however many keep coming)."""
    a = Admission(10 * MiB)
    oldest = a.reserve(MiB)
    newer = a.reserve(8 * MiB)
    oldest.grow(5 * MiB)  # over the budget (14 of 10 MiB): still through, it is the oldest
    with pytest.raises(BackpressureError):
        newer.grow(MiB)
    with pytest.raises(BackpressureError):
        a.reserve(MiB)  # a refused newcomer leaves nothing behind
    assert a.bytes == 14 * MiB
    oldest.release()
    newer.grow(2 * MiB)  # now the oldest: through again, even over the budget
    assert a.bytes == 10 * MiB


def test_large_requests_share_at_most_half_the_budget() -> None:
    a = Admission(64 * MiB)
    large = a.reserve(20 * MiB)  # over an eighth (8 MiB): large
    with pytest.raises(BackpressureError):
        a.reserve(20 * MiB)  # two large ones would hold 40 MiB, over half
    small = [a.reserve(7 * MiB) for _ in range(6)]  # ordinary requests still get the rest
    assert a.bytes == 62 * MiB
    for r in small[3:]:
        r.release()
    small[0].grow(3 * MiB)  # 10 MiB: large now, and 20 + 10 is within half
    with pytest.raises(BackpressureError):
        small[0].grow(3 * MiB)  # 20 + 13 is not, though the budget has room (44 of 64 MiB)
    for r in small[:3]:
        r.release()
    large.release()
    assert a.bytes == 0


def test_growth_from_threads_is_consistent() -> None:
    a = Admission(1 << 40)
    reservations = [a.reserve() for _ in range(8)]

    def work(r) -> None:
        for _ in range(10_000):
            r.grow(3)
            r.shrink(2)

    threads = [threading.Thread(target=work, args=(r,)) for r in reservations]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert a.bytes == 8 * 10_000
    for r in reservations:
        r.release()
    assert a.bytes == 0
