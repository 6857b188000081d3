//! The tables of the schema `iot`, as migrations (name, SQL) that the
//! components apply with `bv_service::migrate` under the name [`COMPONENT`].
//!
//! Statements are separated by `;` at the end of a line (as
//! `bv_service::migrate` splits them), so the functions' bodies put their
//! semicolons at the start of lines.

/// The name the migrations are recorded under in `bv_migrations`.
pub const COMPONENT: &str = "iot";

/// The migrations, in order: (name, SQL).
pub const MIGRATIONS: [(&str, &str); 2] = [("0001_telemetry", INIT), ("0002_commands", COMMANDS)];

const COMMANDS: &str = "CREATE TABLE iot.commands (
    id         text        PRIMARY KEY,
    device_id  text        NOT NULL,
    name       text        NOT NULL,
    args       jsonb       NOT NULL,
    state      text        NOT NULL CHECK (state IN ('sent', 'acknowledged', 'failed', 'timed-out')),
    created_at timestamptz NOT NULL DEFAULT now(),
    deadline   timestamptz NOT NULL,
    settled_at timestamptz,
    result     jsonb,
    error      text
);
CREATE INDEX commands_device ON iot.commands (device_id, created_at DESC);
CREATE INDEX commands_open ON iot.commands (deadline) WHERE state = 'sent'";

/// Settles a sent command from its device's acknowledgement: `$1`
/// command, `$2` device, `$3` the new state, `$4` result (JSON text or
/// null), `$5` error (or null). Only before its deadline: a late
/// acknowledgement changes nothing.
pub const SETTLE_COMMAND: &str = "UPDATE iot.commands
     SET state = $3, result = $4::text::jsonb, error = $5, settled_at = now()
     WHERE id = $1 AND device_id = $2 AND state = 'sent' AND deadline >= now()";

/// Marks sent commands past their deadline as timed out.
pub const TIME_OUT_COMMANDS: &str =
    "UPDATE iot.commands SET state = 'timed-out', settled_at = now()
     WHERE state = 'sent' AND deadline < now()";

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

/// Parks a message: `$1` topic, `$2` device (or null), `$3` reason, `$4`
/// payload.
pub const PARK: &str =
    "INSERT INTO iot.parked (topic, device_id, reason, payload) VALUES ($1, $2, $3, $4)";

/// The types (spec as JSON text) and owners of the registered devices
/// among `$1` (ids): rows of id, spec, owner.
pub const DEVICE_TYPES: &str = "SELECT d.id, t.spec::text, d.owner FROM iot.devices d
     JOIN iot.device_types t ON t.name = d.type WHERE d.id = ANY($1::text[])";

/// Stores a batch's values ([`crate::batch::Columns`]: `$1` devices, `$2`
/// times in ms, `$3` metrics, `$4` values as text), skipping those already
/// stored; returns the device, metric and time (ms) of each one stored.
pub const INSERT_TELEMETRY_BATCH: &str = "INSERT INTO iot.telemetry (device_id, metric, ts, value)
     SELECT d, m, to_timestamp(t / 1000.0), v
     FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[]::float8[]) AS x(d, t, m, v)
     ON CONFLICT DO NOTHING
     RETURNING device_id, metric, (extract(epoch FROM ts) * 1000)::int8";

/// The detector states of the (device, metric) pairs `$1`, `$2` (sorted,
/// [`crate::batch::detector_keys`]), locked in that order.
pub const LOCK_DETECTORS_BATCH: &str = "SELECT d.device_id, d.metric, d.state::text
     FROM iot.detector d JOIN unnest($1::text[], $2::text[]) AS k(device_id, metric)
       USING (device_id, metric)
     ORDER BY d.device_id, d.metric FOR UPDATE OF d";

/// Writes detector states: `$1` devices, `$2` metrics, `$3` states (JSON
/// text).
pub const SAVE_DETECTORS_BATCH: &str = "INSERT INTO iot.detector (device_id, metric, state)
     SELECT d, m, s::jsonb FROM unnest($1::text[], $2::text[], $3::text[]) AS x(d, m, s)
     ON CONFLICT (device_id, metric) DO UPDATE SET state = excluded.state";

/// Opens an incident: `$1` device, `$2` metric, `$3` kind, `$4` time
/// (RFC 3339 text), `$5` value, `$6` score, `$7` baseline; returns its id.
pub const OPEN_ANOMALY: &str =
    "INSERT INTO iot.anomalies (device_id, metric, kind, opened_at, value, score, baseline)
     VALUES ($1, $2, $3, $4::text::timestamptz, $5, $6, $7) RETURNING id";

/// Closes the open incident of `$1`'s `$2` at `$3` (RFC 3339 text);
/// returns its id.
pub const CLEAR_ANOMALY: &str = "UPDATE iot.anomalies SET cleared_at = $3::text::timestamptz
     WHERE device_id = $1 AND metric = $2 AND cleared_at IS NULL RETURNING id";

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
