//! `iot`: the IoT API (`/api/iot/...`) and, on the cron trigger, the
//! upkeep of the telemetry tables.
//!
//! 1. **HTTP**, every route needs a token ([`registry`], [`series`]):
//!    - `POST /device-types` (administrators), `GET /device-types`;
//!    - `POST /devices` (a customer registers a device they own; an
//!      administrator may name the owner): the answer carries the device's
//!      MQTT user name and password, shown once (only Mosquitto's hash of
//!      it is kept), and its topics;
//!    - `GET /devices`, `GET|DELETE /devices/{id}`,
//!      `POST /devices/{id}/credentials` (a new password; the old one stops
//!      working at the broker's next sync);
//!    - `GET /devices/{id}/series?metric=…&from=…&to=…&step=…`: read from
//!      raw samples, one-minute or one-hour rollups, whichever the step
//!      allows;
//!    - `GET /devices/{id}/anomalies`, `GET /parked` (administrators);
//!    - `POST /devices/{id}/commands` (sent to the device over MQTT with a
//!      correlation id), `GET /devices/{id}/commands[/{command}]`: sent,
//!      acknowledged, failed or timed out ([`commands`]).
//! 2. **Cron** ([`cron`]): partitions ahead, raw retention, rollups.
//!
//! Telemetry comes in through `iot-ingest`; docs/IOT.md has the whole
//! picture.

#![deny(missing_docs)]

/// `$column` (a `timestamptz`) as the API shows times: RFC 3339 in UTC
/// with milliseconds. A literal, so it can be part of a `concat!`.
macro_rules! text_time {
    ($column:literal) => {
        concat!(
            "to_char(",
            $column,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
        )
    };
}

mod commands;
mod cron;
mod registry;
mod series;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use bv_service::{migrate, path_info, Migration, Problem, Reply};
use spin_sdk::http::{Method, Request};
use spin_sdk::http_service;
use spin_sdk::pg::{Connection, ParameterValue, Row};

/// Where `spin.toml` mounts the component.
const MOUNT: &str = "/api/iot";

static MIGRATED: AtomicBool = AtomicBool::new(false);

const MIGRATIONS: [Migration; 2] = bv_service::migrations(bv_iot::schema::MIGRATIONS);

#[http_service]
async fn handle(req: Request) -> Reply {
    route(req).await.unwrap_or_else(Problem::into_response)
}

async fn route(req: Request) -> Result<Reply, Problem> {
    let path = path_info(&req, MOUNT)?;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let method = req.method().clone();
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    match parts.as_slice() {
        ["device-types"] if post => registry::create_type(req).await,
        ["device-types"] if get => registry::list_types(&req).await,
        ["devices"] if post => registry::create_device(req).await,
        ["devices"] if get => registry::list_devices(&req).await,
        ["devices", id] if get => registry::get_device(&req, id).await,
        ["devices", id] if method == Method::DELETE => registry::delete_device(&req, id).await,
        ["devices", id, "credentials"] if post => registry::rotate(&req, id).await,
        ["devices", id, "series"] if get => series::series(&req, id).await,
        ["devices", id, "anomalies"] if get => series::anomalies(&req, id).await,
        ["devices", id, "commands"] if post => commands::send(req, id).await,
        ["devices", id, "commands"] if get => commands::list(&req, id).await,
        ["devices", id, "commands", command] if get => commands::get(&req, id, command).await,
        ["parked"] if get => series::parked(&req).await,
        ["device-types"] | ["devices"] => Err(Problem::method_not_allowed("GET, HEAD, POST")),
        ["devices", _] => Err(Problem::method_not_allowed("GET, HEAD, DELETE")),
        ["devices", _, "credentials"] => Err(Problem::method_not_allowed("POST")),
        ["devices", _, "commands"] => Err(Problem::method_not_allowed("GET, HEAD, POST")),
        ["devices", _, "series" | "anomalies"] | ["devices", _, "commands", _] | ["parked"] => {
            Err(Problem::method_not_allowed("GET, HEAD"))
        }
        _ => Err(Problem::not_found(format!("no route {MOUNT}{path}"))),
    }
}

/// The database, migrated.
async fn open() -> Result<Connection, Problem> {
    let url = spin_sdk::variables::get("db_url")
        .await
        .map_err(|e| Problem::internal(format!("variable db_url: {e:?}")))?;
    let conn = Connection::open(url)
        .await
        .map_err(|e| Problem::unavailable(format!("the IoT database: {e}")))?;
    migrate(&conn, bv_iot::schema::COMPONENT, &MIGRATIONS, &MIGRATED).await?;
    Ok(conn)
}

async fn rows(
    conn: &Connection,
    sql: &str,
    params: Vec<ParameterValue>,
) -> Result<Vec<Row>, Problem> {
    Ok(conn.query(sql, params).await?.collect().await?)
}

fn column<T: spin_sdk::pg::Decode>(row: &Row, name: &str) -> Result<T, Problem> {
    row.get::<T>(name)
        .ok_or_else(|| Problem::internal(format!("iot: column {name} is missing")))
}

/// The query's parameters; unknown and repeated ones are refused.
fn query_params(req: &Request, known: &[&str]) -> Result<BTreeMap<String, String>, Problem> {
    let mut out = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        if !known.contains(&name.as_ref()) {
            return Err(Problem::invalid_parameter(
                &name,
                format!("unknown parameter (known: {})", known.join(", ")),
            ));
        }
        if out.insert(name.to_string(), value.to_string()).is_some() {
            return Err(Problem::invalid_parameter(&name, "given more than once"));
        }
    }
    Ok(out)
}
