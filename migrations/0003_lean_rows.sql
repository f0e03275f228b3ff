-- otelpg schema, version 3: lean rows. Plain PostgreSQL 14+; no extension required.
--
-- Spans, span events and log records get tables of their own, each with a typed column per
-- fixed OTLP field (span kind, status, flags, ids in binary form, severity number...) and JSONB
-- only for what is open-ended (attributes, structured bodies, links). Each is partitioned by day
-- on its own, so each signal keeps its own retention. Scopes are stored once, like resources.
--
-- `system_events` becomes a view over them with the columns and meaning of schema 2 (payload and
-- metadata rebuilt from the typed columns), so queries written against it keep working. What was
-- the system_events table is renamed otelpg_events: it keeps otelpg's own events, the rows stored
-- before this migration (until `otelpg migrate` moves them, partition by partition, into the new
-- tables) and rows that clients INSERT into the view.

-- Scope name/version/attributes/schema_url of a ScopeSpans/ScopeLogs/ScopeMetrics, stored once.
-- scope_id: a stable 64-bit hash of `metadata` (its canonical JSON) computed by otelpg.
CREATE TABLE otel_scopes (
    scope_id    BIGINT PRIMARY KEY,
    name        TEXT,
    version     TEXT,
    -- {"scope": {name, version, attributes, dropped_attributes_count}, "schema_url"}: schema 2's
    -- system_events.metadata, empty parts left out
    metadata    JSONB NOT NULL,
    first_seen  TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The schema-2 table keeps its data, partitions and indexes under a new name.
ALTER TABLE system_events RENAME TO otelpg_events;
DO $$
DECLARE
    part TEXT;
BEGIN
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'otelpg_events'::regclass AND c.relname LIKE 'system\_events\_%'
    LOOP
        EXECUTE format('ALTER TABLE %I RENAME TO %I', part, 'otelpg_events' || substr(part, length('system_events') + 1));
    END LOOP;
END;
$$;
ALTER TABLE otelpg_events RENAME CONSTRAINT system_events_pkey TO otelpg_events_pkey;
ALTER INDEX system_events_trace_id_idx RENAME TO otelpg_events_trace_id_idx;
ALTER INDEX system_events_type_time_idx RENAME TO otelpg_events_type_time_idx;
-- Its few rows (once converted) are found by trace id and event type; no query needs the BRIN.
DROP INDEX system_events_timestamp_brin;

-- user_analytics rows are written once, with the rows they come from (never upserted), and found by
-- user id and time (user_analytics_user_time_idx): its primary key served no query.
ALTER TABLE user_analytics DROP CONSTRAINT user_analytics_pkey;

-- Exact OTLP times are kept as `timestamp` (microseconds, TIMESTAMPTZ's precision) plus `nanos`,
-- the nanoseconds past that microsecond (0-999). NUMERIC: OTLP times are uint64 nanoseconds,
-- beyond BIGINT after 2262.
CREATE FUNCTION otelpg_unix_nano(ts TIMESTAMPTZ, nanos SMALLINT) RETURNS NUMERIC
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT trunc(extract(epoch FROM ts) * 1000000) * 1000 + nanos
$$;

-- One row per span.
CREATE TABLE otel_spans (
    id              UUID NOT NULL,
    timestamp       TIMESTAMPTZ NOT NULL,          -- start (the receive time when start is 0)
    resource_id     BIGINT,
    scope_id        BIGINT,
    duration_ns     BIGINT,                        -- end - start; NULL when start is 0 or end < start
    trace_id        UUID NOT NULL,
    nanos           SMALLINT NOT NULL DEFAULT 0,   -- of the start
    kind            SMALLINT NOT NULL,             -- SpanKind: 0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer
    status_code     SMALLINT NOT NULL,             -- 0 unset, 1 ok, 2 error
    flags           INTEGER,                       -- W3C trace flags and has-remote-parent bits; NULL when 0
    service_name    TEXT NOT NULL,
    span_id         BYTEA NOT NULL,                -- 8 bytes
    parent_span_id  BYTEA,                         -- NULL for a root
    name            TEXT NOT NULL,
    status_message  TEXT,                          -- NULL when empty
    attributes      JSONB NOT NULL,
    -- rare fields, NULL when none: links, trace_state, dropped_*_count, and the exact
    -- start_time_unix_nano / end_time_unix_nano when the columns can't give them
    extra           JSONB,
    PRIMARY KEY (service_name, timestamp, id)
) PARTITION BY RANGE (timestamp);
CREATE TABLE otel_spans_default PARTITION OF otel_spans DEFAULT;
CREATE INDEX otel_spans_trace_id_idx ON otel_spans (trace_id);
CREATE INDEX otel_spans_timestamp_brin ON otel_spans USING brin (timestamp);

-- One row per span event.
CREATE TABLE otel_span_events (
    id            UUID NOT NULL,
    timestamp     TIMESTAMPTZ NOT NULL,            -- the event's time (the span's start when 0)
    resource_id   BIGINT,
    scope_id      BIGINT,
    trace_id      UUID NOT NULL,
    nanos         SMALLINT NOT NULL DEFAULT 0,
    service_name  TEXT NOT NULL,
    span_id       BYTEA NOT NULL,                  -- the span's
    name          TEXT NOT NULL,
    span_name     TEXT NOT NULL,                   -- the span's name
    attributes    JSONB NOT NULL,
    extra         JSONB,                           -- dropped_attributes_count; time_unix_nano when it was 0
    PRIMARY KEY (service_name, timestamp, id)
) PARTITION BY RANGE (timestamp);
CREATE TABLE otel_span_events_default PARTITION OF otel_span_events DEFAULT;
CREATE INDEX otel_span_events_trace_id_idx ON otel_span_events (trace_id);

-- One row per log record.
CREATE TABLE otel_logs (
    id                       UUID NOT NULL,
    timestamp                TIMESTAMPTZ NOT NULL, -- time, else observed time, else the receive time
    resource_id              BIGINT,
    scope_id                 BIGINT,
    observed_time_unix_nano  BIGINT,               -- NULL when 0
    trace_id                 UUID,
    nanos                    SMALLINT NOT NULL DEFAULT 0,
    severity_number          SMALLINT NOT NULL DEFAULT 0,
    flags                    INTEGER,              -- NULL when 0
    -- trace|debug|info|warn|error|fatal as its first letter (from severity_number, else severity_text)
    severity                 "char" NOT NULL,
    service_name             TEXT NOT NULL,
    event_type               TEXT NOT NULL,        -- the event name (event.name attribute or field), else 'log'
    span_id                  BYTEA,
    severity_text            TEXT,                 -- NULL when empty
    body                     TEXT,                 -- a string body
    body_value               JSONB,                -- any other body, typed (NULL: no body or a string one)
    attributes               JSONB NOT NULL,
    extra                    JSONB,                -- dropped_attributes_count, the whole event_name when cut, time_unix_nano when 0
    PRIMARY KEY (service_name, timestamp, id)
) PARTITION BY RANGE (timestamp);
CREATE TABLE otel_logs_default PARTITION OF otel_logs DEFAULT;
CREATE INDEX otel_logs_trace_id_idx ON otel_logs (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX otel_logs_event_type_idx ON otel_logs (event_type, timestamp) WHERE event_type <> 'log';
CREATE INDEX otel_logs_timestamp_brin ON otel_logs USING brin (timestamp);

-- Schema 2's system_events, rebuilt: the same columns, and in `payload` and `metadata` the same
-- JSON, from the typed columns. Columns a query doesn't read are not computed (nor the scope join
-- made), and a filter on event_type skips the tables that can't match.
CREATE VIEW system_events AS
SELECT s.id,
       'span'::text AS event_type,
       s.service_name AS source,
       CASE WHEN s.status_code = 2 THEN 'error' ELSE 'info' END AS severity,
       jsonb_build_object(
           'kind', CASE WHEN s.kind BETWEEN 0 AND 5
                        THEN to_jsonb((ARRAY['SPAN_KIND_UNSPECIFIED', 'SPAN_KIND_INTERNAL', 'SPAN_KIND_SERVER',
                                             'SPAN_KIND_CLIENT', 'SPAN_KIND_PRODUCER', 'SPAN_KIND_CONSUMER'])[s.kind + 1])
                        ELSE to_jsonb(s.kind) END,
           'status', jsonb_strip_nulls(jsonb_build_object(
               'code', CASE WHEN s.status_code BETWEEN 0 AND 2
                            THEN to_jsonb((ARRAY['STATUS_CODE_UNSET', 'STATUS_CODE_OK', 'STATUS_CODE_ERROR'])[s.status_code + 1])
                            ELSE to_jsonb(s.status_code) END,
               'message', s.status_message)),
           'attributes', s.attributes,
           'start_time_unix_nano', otelpg_unix_nano(s.timestamp, s.nanos),
           'end_time_unix_nano', otelpg_unix_nano(s.timestamp, s.nanos) + s.duration_ns
       ) || CASE WHEN s.flags IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('flags', s.flags) END
         || coalesce(s.extra, '{}'::jsonb) AS payload,
       s.timestamp,
       coalesce(sc.metadata, '{}'::jsonb) AS metadata,
       s.service_name,
       s.resource_id,
       s.trace_id,
       encode(s.span_id, 'hex') AS span_id,
       encode(s.parent_span_id, 'hex') AS parent_span_id,
       s.name,
       s.duration_ns / 1e6::double precision AS duration_ms
FROM otel_spans s LEFT JOIN otel_scopes sc ON sc.scope_id = s.scope_id
UNION ALL
SELECT e.id,
       'span_event'::text,
       e.service_name,
       CASE WHEN e.name = 'exception' THEN 'error' ELSE 'info' END,
       jsonb_build_object(
           'span_name', e.span_name,
           'attributes', e.attributes,
           'time_unix_nano', otelpg_unix_nano(e.timestamp, e.nanos)
       ) || coalesce(e.extra, '{}'::jsonb),
       e.timestamp,
       coalesce(sc.metadata, '{}'::jsonb),
       e.service_name,
       e.resource_id,
       e.trace_id,
       encode(e.span_id, 'hex'),
       NULL::text,
       e.name,
       NULL::double precision
FROM otel_span_events e LEFT JOIN otel_scopes sc ON sc.scope_id = e.scope_id
UNION ALL
SELECT l.id,
       l.event_type,
       l.service_name,
       CASE l.severity WHEN 't' THEN 'trace' WHEN 'd' THEN 'debug' WHEN 'i' THEN 'info'
                       WHEN 'w' THEN 'warn' WHEN 'e' THEN 'error' ELSE 'fatal' END,
       jsonb_build_object(
           'body', CASE WHEN l.body IS NOT NULL THEN to_jsonb(l.body) ELSE coalesce(l.body_value, 'null'::jsonb) END,
           'attributes', l.attributes,
           'severity_number', l.severity_number,
           'severity_text', coalesce(l.severity_text, ''),
           'time_unix_nano', otelpg_unix_nano(l.timestamp, l.nanos),
           'observed_time_unix_nano', coalesce(l.observed_time_unix_nano, 0)
       ) || CASE WHEN l.flags IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('flags', l.flags) END
         || coalesce(l.extra, '{}'::jsonb),
       l.timestamp,
       coalesce(sc.metadata, '{}'::jsonb),
       l.service_name,
       l.resource_id,
       l.trace_id,
       encode(l.span_id, 'hex'),
       NULL::text,
       nullif(l.event_type, 'log'),
       NULL::double precision
FROM otel_logs l LEFT JOIN otel_scopes sc ON sc.scope_id = l.scope_id
UNION ALL
SELECT id, event_type, source, severity, payload, timestamp, metadata, service_name, resource_id,
       trace_id, span_id, parent_span_id, name, duration_ms
FROM otelpg_events;

-- Rows INSERTed (or COPied) into the view, as schema 2 let clients do, are kept in otelpg_events.
CREATE FUNCTION otelpg_system_events_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO otelpg_events (id, event_type, source, severity, payload, timestamp, metadata, service_name,
                               resource_id, trace_id, span_id, parent_span_id, name, duration_ms)
    VALUES (coalesce(NEW.id, gen_random_uuid()), NEW.event_type, NEW.source, coalesce(NEW.severity, 'info'),
            coalesce(NEW.payload, '{}'::jsonb), coalesce(NEW.timestamp, now()), coalesce(NEW.metadata, '{}'::jsonb),
            coalesce(NEW.service_name, 'unknown_service'), NEW.resource_id, NEW.trace_id, NEW.span_id,
            NEW.parent_span_id, NEW.name, NEW.duration_ms);
    RETURN NEW;
END;
$$;
CREATE TRIGGER system_events_insert INSTEAD OF INSERT ON system_events
    FOR EACH ROW EXECUTE FUNCTION otelpg_system_events_insert();

-- DELETEs through the view (a purge by service or time, as schema 2 allowed) delete the rows
-- from the table that holds them, by primary key.
CREATE FUNCTION otelpg_system_events_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM otel_spans WHERE service_name = OLD.service_name AND timestamp = OLD.timestamp AND id = OLD.id;
    IF NOT FOUND THEN
        DELETE FROM otel_span_events
        WHERE service_name = OLD.service_name AND timestamp = OLD.timestamp AND id = OLD.id;
    END IF;
    IF NOT FOUND THEN
        DELETE FROM otel_logs WHERE service_name = OLD.service_name AND timestamp = OLD.timestamp AND id = OLD.id;
    END IF;
    IF NOT FOUND THEN
        DELETE FROM otelpg_events WHERE service_name = OLD.service_name AND timestamp = OLD.timestamp AND id = OLD.id;
    END IF;
    RETURN OLD;
END;
$$;
CREATE TRIGGER system_events_delete INSTEAD OF DELETE ON system_events
    FOR EACH ROW EXECUTE FUNCTION otelpg_system_events_delete();
