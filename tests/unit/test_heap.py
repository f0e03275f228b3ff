"""The mmap threshold is fixed where glibc is the allocator (what `otelpg run` does at start)."""

from __future__ import annotations

import platform

import pytest

from sidecar.heap import return_large_buffers_to_os


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_glibc_takes_the_fixed_mmap_threshold() -> None:
    assert return_large_buffers_to_os() is True
