-- otelpg schema, version 2: data lifecycle. Rollups, lookup tables for Grafana variables, and a
-- view of partitions and their ranges. Plain PostgreSQL 14+; no extension required.
-- Partitions are created, split out of the default partition and dropped by otelpg
-- (exporters/postgres/maintenance.py), not by SQL functions, so `otelpg maintain` can run from cron.

-- Rollups of performance_metrics, one row per (metric, service, series, bucket), maintained by
-- otelpg in the transaction that writes the raw points (so they always agree with them).
-- series_hash identifies the series within a metric and service: a hash of the metric type, the
-- canonical (key-sorted) tags and the histogram bucket bounds. Over the points of a bucket:
--   count                     number of points;
--   sum, min, max             of `value` (the point's value, or its sum for distributions);
--   last, last_timestamp      `value` of the latest point, and its timestamp;
--   sample_count, sample_min, sample_max   distributions: Σ count, min(min), max(max);
--   bucket_bounds, bucket_counts           histograms: the bounds, counts summed bucket-wise.
-- The key columns use the "C" collation (byte order): equality and prefix queries work the same,
-- and every upsert's index search compares faster. Rollup partitions get fillfactor 70 (set by
-- maintenance) so that merging into a row is a HOT update, without a new index entry.
CREATE TABLE performance_metrics_1m (
    bucket          TIMESTAMPTZ NOT NULL,
    metric_name     TEXT COLLATE "C" NOT NULL,
    service_name    TEXT COLLATE "C" NOT NULL,
    series_hash     BIGINT NOT NULL,
    tags            JSONB NOT NULL DEFAULT '{}'::jsonb,
    metric_type     TEXT NOT NULL,
    temporality     TEXT,
    unit            TEXT,
    count           BIGINT NOT NULL,
    sum             DOUBLE PRECISION,
    min             DOUBLE PRECISION,
    max             DOUBLE PRECISION,
    last            DOUBLE PRECISION,
    last_timestamp  TIMESTAMPTZ NOT NULL,
    sample_count    BIGINT,
    sample_min      DOUBLE PRECISION,
    sample_max      DOUBLE PRECISION,
    bucket_bounds   FLOAT8[],
    bucket_counts   BIGINT[],
    PRIMARY KEY (metric_name, service_name, series_hash, bucket)
) PARTITION BY RANGE (bucket);
CREATE TABLE performance_metrics_1m_default PARTITION OF performance_metrics_1m DEFAULT WITH (fillfactor = 70);

CREATE TABLE performance_metrics_1h (
    bucket          TIMESTAMPTZ NOT NULL,
    metric_name     TEXT COLLATE "C" NOT NULL,
    service_name    TEXT COLLATE "C" NOT NULL,
    series_hash     BIGINT NOT NULL,
    tags            JSONB NOT NULL DEFAULT '{}'::jsonb,
    metric_type     TEXT NOT NULL,
    temporality     TEXT,
    unit            TEXT,
    count           BIGINT NOT NULL,
    sum             DOUBLE PRECISION,
    min             DOUBLE PRECISION,
    max             DOUBLE PRECISION,
    last            DOUBLE PRECISION,
    last_timestamp  TIMESTAMPTZ NOT NULL,
    sample_count    BIGINT,
    sample_min      DOUBLE PRECISION,
    sample_max      DOUBLE PRECISION,
    bucket_bounds   FLOAT8[],
    bucket_counts   BIGINT[],
    PRIMARY KEY (metric_name, service_name, series_hash, bucket)
) PARTITION BY RANGE (bucket);
CREATE TABLE performance_metrics_1h_default PARTITION OF performance_metrics_1h DEFAULT WITH (fillfactor = 70);

-- Lookup tables for Grafana variables, kept by otelpg as it writes (a SELECT DISTINCT over the
-- fact tables would scan them). last_seen is refreshed at most every few minutes.
CREATE TABLE otelpg_metric_names (
    metric_name   TEXT NOT NULL,
    service_name  TEXT NOT NULL,
    metric_type   TEXT,
    unit          TEXT,
    first_seen    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (metric_name, service_name)
);
CREATE INDEX otelpg_metric_names_service_idx ON otelpg_metric_names (service_name);

CREATE TABLE otelpg_event_types (
    event_type    TEXT NOT NULL,
    service_name  TEXT NOT NULL,
    first_seen    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (event_type, service_name)
);
CREATE INDEX otelpg_event_types_service_idx ON otelpg_event_types (service_name);

CREATE VIEW otelpg_services AS
SELECT service_name, min(first_seen) AS first_seen, max(last_seen) AS last_seen
FROM (
    SELECT service_name, first_seen, last_seen FROM otelpg_metric_names
    UNION ALL
    SELECT service_name, first_seen, last_seen FROM otelpg_event_types
    UNION ALL
    SELECT service_name, created_at, last_active FROM agent_states
) s
GROUP BY service_name;

-- Every partition of otelpg's partitioned tables with its range ([range_start, range_end); both
-- NULL for a DEFAULT partition). Used by maintenance and `otelpg stats`.
CREATE VIEW otelpg_partitions AS
SELECT parent.relname::text AS parent,
       part.relname::text AS partition,
       part.oid AS relid,
       b.bound = 'DEFAULT' AS is_default,
       (regexp_match(b.bound, $re$FROM \('([^']*)'\) TO \('([^']*)'\)$re$))[1]::timestamptz AS range_start,
       (regexp_match(b.bound, $re$FROM \('([^']*)'\) TO \('([^']*)'\)$re$))[2]::timestamptz AS range_end
FROM pg_inherits i
JOIN pg_class parent ON parent.oid = i.inhparent
JOIN pg_class part ON part.oid = i.inhrelid
CROSS JOIN LATERAL (SELECT pg_get_expr(part.relpartbound, part.oid) AS bound) b
WHERE parent.relkind = 'p' AND parent.relnamespace = current_schema()::regnamespace;
