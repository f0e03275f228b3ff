"""A health probe from a process of its own, as a kubelet would probe (a new connection each time),
so that a busy load generator does not add to the latency it measures.

    python -m tests.reliability.probe URL INTERVAL SECONDS

GETs URL every INTERVAL seconds (the next one once the previous is answered) for SECONDS, then
prints {"latencies": [...], "errors": n} as JSON on stdout.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from urllib.parse import urlsplit


def main() -> None:
    url, interval, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    parts = urlsplit(url)
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
            conn.request("GET", parts.path or "/")
            conn.getresponse().read()
            conn.close()
        except OSError:
            errors += 1
        took = time.perf_counter() - started
        latencies.append(took)
        time.sleep(max(0.0, interval - took))
    print(json.dumps({"latencies": latencies, "errors": errors}))


if __name__ == "__main__":
    main()
