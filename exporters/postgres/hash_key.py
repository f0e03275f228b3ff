"""The key of the user-id hash (`user_analytics.hash_user_ids`): configured, or generated once."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from exporters.postgres.config import UserAnalyticsConfig

log = logging.getLogger("otelpg.user_analytics")

HASH_KEY_FILE = "user_hash_key"


def user_hash_key(config: UserAnalyticsConfig, data_dir: str | Path) -> bytes:
    """The key of the user-id hash: `user_analytics.hash_key`, else one generated once and kept in
    the data dir (0600), so hashes stay the same across restarts. Sidecars sharing a database
    should be given the same key in the config."""
    if config.hash_key:
        return config.hash_key.encode()
    path = Path(data_dir) / HASH_KEY_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
        f.flush()
        os.fsync(f.fileno())
    log.info("generated the user id hash key in %s (set user_analytics.hash_key to share it)", path)
    return key
