#!/bin/sh
# Run once by the postgres image on an empty data directory (/docker-entrypoint-initdb.d).
# Grafana does not validate SQL, so it connects as a role that can only read (Grafana's PostgreSQL data source documentation).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v grafana_password="$GRAFANA_DB_PASSWORD" <<'SQL'
CREATE ROLE grafana LOGIN PASSWORD :'grafana_password';
GRANT CONNECT ON DATABASE otelpg TO grafana;
GRANT USAGE ON SCHEMA public TO grafana;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO grafana;
-- Tables and views otelpg's migrations create later (run as the otelpg role).
ALTER DEFAULT PRIVILEGES FOR ROLE otelpg IN SCHEMA public GRANT SELECT ON TABLES TO grafana;
-- Table sizes on the database-utilization dashboard.
GRANT pg_read_all_stats TO grafana;
SQL
