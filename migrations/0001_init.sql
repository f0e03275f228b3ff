-- otelpg schema, version 1. Plain PostgreSQL 14+; no extension required.
-- Run by `otelpg migrate` inside one transaction; recorded in schema_migrations.

-- Resource attributes are stored once and referenced by resource_id (a stable 64-bit hash of
-- the sorted attributes computed by otelpg), instead of repeating 10-20 attributes on every row.
CREATE TABLE otel_resources (
    resource_id   BIGINT PRIMARY KEY,
    service_name  TEXT NOT NULL,
    attributes    JSONB NOT NULL DEFAULT '{}'::jsonb,
    schema_url    TEXT,
    first_seen    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX otel_resources_service_name_idx ON otel_resources (service_name);

-- Spans, span events, log records and otelpg's own events. Partitioned by day on timestamp;
-- the default partition keeps rows whose day has no partition (never lose a row).
CREATE TABLE system_events (
    id              UUID NOT NULL DEFAULT gen_random_uuid(),
    event_type      TEXT NOT NULL,
    source          TEXT NOT NULL,
    severity        TEXT NOT NULL DEFAULT 'info',
    payload         JSONB NOT NULL DEFAULT '{}'::jsonb,
    timestamp       TIMESTAMPTZ NOT NULL DEFAULT now(),
    metadata        JSONB NOT NULL DEFAULT '{}'::jsonb,
    service_name    TEXT NOT NULL DEFAULT 'unknown_service',
    resource_id     BIGINT,
    trace_id        UUID,
    span_id         TEXT,
    parent_span_id  TEXT,
    name            TEXT,
    duration_ms     DOUBLE PRECISION,
    PRIMARY KEY (service_name, timestamp, id)
) PARTITION BY RANGE (timestamp);
CREATE TABLE system_events_default PARTITION OF system_events DEFAULT;
CREATE INDEX system_events_trace_id_idx ON system_events (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX system_events_type_time_idx ON system_events (event_type, timestamp);
CREATE INDEX system_events_timestamp_brin ON system_events USING brin (timestamp);

-- One row per metric data point (and span-derived aggregates). Partitioned by day.
CREATE TABLE performance_metrics (
    id               UUID NOT NULL DEFAULT gen_random_uuid(),
    metric_name      TEXT NOT NULL,
    value            DOUBLE PRECISION,
    unit             TEXT,
    tags             JSONB NOT NULL DEFAULT '{}'::jsonb,
    timestamp        TIMESTAMPTZ NOT NULL DEFAULT now(),
    service_name     TEXT NOT NULL DEFAULT 'unknown_service',
    resource_id      BIGINT,
    metric_type      TEXT NOT NULL DEFAULT 'gauge'
        CHECK (metric_type IN ('gauge', 'sum', 'histogram', 'exponential_histogram', 'summary')),
    temporality      TEXT CHECK (temporality IN ('delta', 'cumulative')),
    is_monotonic     BOOLEAN,
    start_timestamp  TIMESTAMPTZ,
    count            BIGINT,
    sum              DOUBLE PRECISION,
    min              DOUBLE PRECISION,
    max              DOUBLE PRECISION,
    bucket_bounds    FLOAT8[],
    bucket_counts    BIGINT[],
    exemplars        JSONB,
    -- what has no column of its own: summary quantiles, the exact exponential-histogram
    -- layout (scale, offsets, zero bucket), point flags, metric description, scope.
    details          JSONB,
    PRIMARY KEY (service_name, timestamp, id)
) PARTITION BY RANGE (timestamp);
CREATE TABLE performance_metrics_default PARTITION OF performance_metrics DEFAULT;
CREATE INDEX performance_metrics_name_time_idx ON performance_metrics (metric_name, timestamp);

-- One row per service instance otelpg hears from.
CREATE TABLE agent_states (
    id                   UUID NOT NULL DEFAULT gen_random_uuid(),
    agent_key            TEXT PRIMARY KEY,
    service_name         TEXT NOT NULL,
    instance_id          TEXT,
    status               TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'stale')),
    current_task         TEXT,
    last_active          TIMESTAMPTZ NOT NULL DEFAULT now(),
    performance_metrics  JSONB NOT NULL DEFAULT '{}'::jsonb,
    error_log            JSONB NOT NULL DEFAULT '[]'::jsonb,
    resource_id          BIGINT,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX agent_states_last_active_idx ON agent_states (last_active);

-- User actions taken from spans and logs that carry enduser.id / user.id.
CREATE TABLE user_analytics (
    id            UUID NOT NULL DEFAULT gen_random_uuid(),
    user_id       TEXT NOT NULL,
    action        TEXT NOT NULL,
    page          TEXT,
    session_id    TEXT,
    timestamp     TIMESTAMPTZ NOT NULL DEFAULT now(),
    metadata      JSONB NOT NULL DEFAULT '{}'::jsonb,
    service_name  TEXT NOT NULL DEFAULT 'unknown_service',
    PRIMARY KEY (service_name, timestamp, id)
) PARTITION BY RANGE (timestamp);
CREATE TABLE user_analytics_default PARTITION OF user_analytics DEFAULT;
CREATE INDEX user_analytics_user_time_idx ON user_analytics (user_id, timestamp);

-- otelpg's effective configuration (secrets redacted), one row per key.
CREATE TABLE system_config (
    key          TEXT PRIMARY KEY,
    value        JSONB NOT NULL,
    description  TEXT,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Create the daily partitions [first_day, last_day] of a day-partitioned table, skipping
-- those that exist. A day whose rows already sit in the default partition is skipped too
-- (attaching it would fail); maintenance moves such rows out separately.
CREATE FUNCTION otelpg_ensure_daily_partitions(parent TEXT, first_day DATE, last_day DATE)
RETURNS INTEGER LANGUAGE plpgsql AS $$
DECLARE
    d        DATE := first_day;
    part     TEXT;
    created  INTEGER := 0;
    occupied BOOLEAN;
BEGIN
    WHILE d <= last_day LOOP
        part := parent || '_p' || to_char(d, 'YYYYMMDD');
        IF to_regclass(quote_ident(part)) IS NULL THEN
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE timestamp >= %L AND timestamp < %L)',
                           parent || '_default', d::timestamptz, (d + 1)::timestamptz)
                INTO occupied;
            IF NOT occupied THEN
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                               part, parent, d::timestamptz, (d + 1)::timestamptz);
                created := created + 1;
            END IF;
        END IF;
        d := d + 1;
    END LOOP;
    RETURN created;
END;
$$;

-- Percentile from explicit-bucket histogram arrays (bounds are upper bounds; counts has one more
-- element, the +Inf bucket), interpolated linearly inside the bucket as Prometheus'
-- histogram_quantile does. Counts may be per-point or summed bucket-wise across points.
CREATE FUNCTION otelpg_histogram_quantile(q DOUBLE PRECISION, bounds FLOAT8[], counts BIGINT[])
RETURNS DOUBLE PRECISION LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    n          INTEGER := coalesce(array_length(counts, 1), 0);
    total      NUMERIC := 0;
    rank       NUMERIC;
    cumulative NUMERIC := 0;
    lower_b    DOUBLE PRECISION;
    upper_b    DOUBLE PRECISION;
    c          NUMERIC;
    i          INTEGER;
BEGIN
    IF q IS NULL OR n = 0 OR q < 0 OR q > 1 OR q <> q THEN
        RETURN NULL;
    END IF;
    FOR i IN 1..n LOOP
        total := total + coalesce(counts[i], 0);
    END LOOP;
    IF total = 0 THEN
        RETURN NULL;
    END IF;
    rank := q::numeric * total;
    FOR i IN 1..n LOOP
        c := coalesce(counts[i], 0);
        IF cumulative + c >= rank AND c > 0 THEN
            IF i > coalesce(array_length(bounds, 1), 0) THEN
                -- +Inf bucket: the best estimate is the highest finite bound.
                RETURN bounds[i - 1];
            END IF;
            upper_b := bounds[i];
            IF i = 1 THEN
                lower_b := least(0, upper_b);
            ELSE
                lower_b := bounds[i - 1];
            END IF;
            RETURN lower_b + (upper_b - lower_b) * ((rank - cumulative) / c)::double precision;
        END IF;
        cumulative := cumulative + c;
    END LOOP;
    RETURN bounds[array_length(bounds, 1)];
END;
$$;

-- Bucket-wise sum of histogram count arrays, for merging points before taking a quantile:
-- SELECT otelpg_histogram_quantile(0.99, max(bucket_bounds), otelpg_sum_buckets(bucket_counts)) ...
CREATE FUNCTION otelpg_add_buckets(acc BIGINT[], counts BIGINT[])
RETURNS BIGINT[] LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN acc IS NULL THEN counts
        WHEN counts IS NULL THEN acc
        ELSE ARRAY(
            SELECT coalesce(a, 0) + coalesce(b, 0)
            FROM unnest(acc, counts) AS u(a, b)
        )
    END
$$;
CREATE AGGREGATE otelpg_sum_buckets(BIGINT[]) (SFUNC = otelpg_add_buckets, STYPE = BIGINT[]);
