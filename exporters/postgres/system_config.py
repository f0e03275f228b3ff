"""system_config: the effective configuration of the sidecar, one row per key (secrets redacted),
written at start (once PostgreSQL has the schema), and a `config_updated` event in system_events
when it differs from what was stored."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import orjson

from exporters.postgres.events import event_row
from exporters.postgres.schema import OTELPG_EVENTS, SYSTEM_CONFIG, SYSTEM_EVENTS_COLUMNS
from sidecar.pipeline.component import HEALTHY, Health, Tasks

log = logging.getLogger("otelpg.system_config")

_CONFIG_LOCK = "hashtext('otelpg.config.' || current_schema())"


class SystemConfig:
    """`values`: every key's effective value; `helps`: its description. Written once `schema_ready`
    is set (at once, or when PostgreSQL is back after a start during an outage)."""

    name = "system_config"

    def __init__(
        self, pool: asyncpg.Pool, values: dict[str, Any], helps: dict[str, str], schema_ready: asyncio.Event
    ) -> None:
        self._pool = pool
        self._values = values
        self._helps = helps
        self._schema_ready = schema_ready
        self._tasks = Tasks()

    async def start(self) -> None:
        if self._schema_ready.is_set():
            await self._write_logged()
        else:
            self._tasks.spawn(self._write_when_ready(), "otelpg-system-config")

    async def stop(self) -> None:
        await self._tasks.cancel()

    def health(self) -> Health:
        return HEALTHY

    async def _write_when_ready(self) -> None:
        await self._schema_ready.wait()
        await self._write_logged()

    async def _write_logged(self) -> None:
        try:
            await self.write()
        except Exception as e:  # bookkeeping: not a reason to refuse telemetry
            log.warning("effective configuration not written to system_config: %s: %s", type(e).__name__, e)

    async def write(self) -> dict[str, dict[str, Any]]:
        """Store the effective configuration (secrets redacted), one row per key; return what changed
        and record it as a `config_updated` event (not on the first start: nothing was stored)."""
        values, helps = self._values, self._helps
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SELECT pg_advisory_xact_lock({_CONFIG_LOCK})")
            stored = {
                r["key"]: orjson.loads(r["value"])
                for r in await conn.fetch(f"SELECT key, value::text FROM {SYSTEM_CONFIG}")
            }
            changes = {
                k: {"old": stored.get(k), "new": v} for k, v in values.items() if k not in stored or stored[k] != v
            }
            changes.update({k: {"old": v, "new": None} for k, v in stored.items() if k not in values})
            if changes:
                changed = sorted(k for k in changes if k in values)
                await conn.execute(
                    f"""INSERT INTO {SYSTEM_CONFIG} AS t (key, value, description, updated_at)
                        SELECT k, v::jsonb, d, now() FROM unnest($1::text[], $2::text[], $3::text[]) AS u(k, v, d)
                        ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, description = EXCLUDED.description,
                                                        updated_at = now()""",
                    changed,
                    [orjson.dumps(values[k]).decode() for k in changed],
                    [helps[k] for k in changed],
                )
                removed = sorted(k for k in changes if k not in values)
                if removed:
                    await conn.execute(f"DELETE FROM {SYSTEM_CONFIG} WHERE key = ANY($1::text[])", removed)
                if stored:
                    await conn.copy_records_to_table(
                        OTELPG_EVENTS,
                        records=[event_row("config_updated", "info", {"changes": changes})],
                        columns=SYSTEM_EVENTS_COLUMNS,
                    )
                    log.info("configuration changed since the last start: %s", ", ".join(sorted(changes)))
        return changes if stored else {}
