//! The tables of the schema `iot`, as migrations (name, SQL) that the
//! components apply with `bv_service::migrate` under the name [`COMPONENT`].
//!
//! Statements are separated by `;` at the end of a line (as
//! `bv_service::migrate` splits them), so the functions' bodies put their
//! semicolons at the start of lines.

/// The name the migrations are recorded under in `bv_migrations`.
pub const COMPONENT: &str = "iot";

/// The migrations, in order: (name, SQL).
pub const MIGRATIONS: &[(&str, &str)] = &[("0001_telemetry", INIT)];

const INIT: &str = r#"CREATE SCHEMA IF NOT EXISTS iot;
CREATE TABLE iot.device_types (
    name       text        PRIMARY KEY,
    spec       jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE iot.devices (
    id                 text        PRIMARY KEY,
    type               text        NOT NULL REFERENCES iot.device_types (name),
    owner              text        NOT NULL,
    name               text        NOT NULL DEFAULT '',
    mqtt_password_hash text        NOT NULL,
    rotated_at         timestamptz NOT NULL DEFAULT now(),
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_owner ON iot.devices (owner, id);
CREATE TABLE iot.telemetry (
    device_id text             NOT NULL,
    metric    text             NOT NULL,
    ts        timestamptz      NOT NULL,
    value     double precision NOT NULL,
    PRIMARY KEY (device_id, metric, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX telemetry_ts ON iot.telemetry USING brin (ts);
CREATE TABLE iot.rollup_1m (
    device_id text             NOT NULL,
    metric    text             NOT NULL,
    bucket    timestamptz      NOT NULL,
    n         bigint           NOT NULL,
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    mean      double precision NOT NULL,
    p95       double precision NOT NULL,
    PRIMARY KEY (device_id, metric, bucket)
);
CREATE TABLE iot.rollup_1h (LIKE iot.rollup_1m INCLUDING ALL);
CREATE TABLE iot.parked (
    id          bigserial   PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic       text        NOT NULL,
    device_id   text,
    reason      text        NOT NULL,
    payload     bytea       NOT NULL
);
CREATE TABLE iot.detector (
    device_id text  NOT NULL,
    metric    text  NOT NULL,
    state     jsonb NOT NULL,
    PRIMARY KEY (device_id, metric)
);
CREATE TABLE iot.anomalies (
    id         bigserial        PRIMARY KEY,
    device_id  text             NOT NULL,
    metric     text             NOT NULL,
    kind       text             NOT NULL,
    opened_at  timestamptz      NOT NULL,
    cleared_at timestamptz,
    value      double precision NOT NULL,
    score      double precision NOT NULL,
    baseline   double precision NOT NULL
);
CREATE INDEX anomalies_device ON iot.anomalies (device_id, opened_at DESC);
CREATE FUNCTION iot.ensure_partitions(around timestamptz, days integer) RETURNS integer LANGUAGE plpgsql AS $f$
DECLARE d date; part text; made integer := 0
; BEGIN
    PERFORM pg_advisory_xact_lock(25206, hashtext('iot.telemetry'))
    ; FOR i IN 0 .. days - 1 LOOP
        d := (around AT TIME ZONE 'UTC')::date + i
        ; part := 'telemetry_' || to_char(d, 'YYYYMMDD')
        ; IF to_regclass('iot.' || part) IS NULL THEN
            EXECUTE format('CREATE TABLE iot.%I PARTITION OF iot.telemetry FOR VALUES FROM (%L) TO (%L)',
                part, d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC')
            ; made := made + 1
        ; END IF
    ; END LOOP
    ; RETURN made
; END $f$;
CREATE FUNCTION iot.drop_partitions_before(cutoff timestamptz) RETURNS integer LANGUAGE plpgsql AS $f$
DECLARE part text; dropped integer := 0
; BEGIN
    PERFORM pg_advisory_xact_lock(25206, hashtext('iot.telemetry'))
    ; FOR part IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'iot.telemetry'::regclass AND c.relname ~ '^telemetry_[0-9]{8}$' LOOP
        IF (to_date(substr(part, 11), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC' <= cutoff THEN
            EXECUTE format('DROP TABLE iot.%I', part)
            ; dropped := dropped + 1
        ; END IF
    ; END LOOP
    ; RETURN dropped
; END $f$;
SELECT iot.ensure_partitions(now() - interval '1 day', 4)"#;

/// Recomputes the one-minute rollups from `$1` (a timestamp as text) up
/// to the current minute.
pub const ROLLUP_MINUTES: &str = "INSERT INTO iot.rollup_1m AS r (device_id, metric, bucket, n, min, max, mean, p95)
     SELECT device_id, metric, date_trunc('minute', ts), count(*), min(value), max(value), avg(value),
            percentile_cont(0.95) WITHIN GROUP (ORDER BY value)
     FROM iot.telemetry
     WHERE ts >= date_trunc('minute', $1::text::timestamptz) AND ts < date_trunc('minute', now())
     GROUP BY 1, 2, 3
     ON CONFLICT (device_id, metric, bucket) DO UPDATE
     SET n = excluded.n, min = excluded.min, max = excluded.max, mean = excluded.mean, p95 = excluded.p95";

/// Recomputes the one-hour rollups of the hours from `$1` (a timestamp
/// as text) up to the current hour, from the raw samples of its closed
/// minutes.
pub const ROLLUP_HOURS: &str = "INSERT INTO iot.rollup_1h AS r (device_id, metric, bucket, n, min, max, mean, p95)
     SELECT device_id, metric, date_trunc('hour', ts), count(*), min(value), max(value), avg(value),
            percentile_cont(0.95) WITHIN GROUP (ORDER BY value)
     FROM iot.telemetry
     WHERE ts >= date_trunc('hour', $1::text::timestamptz) AND ts < date_trunc('minute', now())
     GROUP BY 1, 2, 3
     ON CONFLICT (device_id, metric, bucket) DO UPDATE
     SET n = excluded.n, min = excluded.min, max = excluded.max, mean = excluded.mean, p95 = excluded.p95";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_function_line_ends_a_statement_early() {
        // bv_service::migrate splits on ";\n": each piece must be a whole
        // statement, so every piece starting inside a function must end it.
        for piece in INIT.split(";\n") {
            let opens = piece.matches("$f$").count();
            assert!(
                opens % 2 == 0,
                "a statement split inside a function body: {piece}"
            );
        }
    }
}
