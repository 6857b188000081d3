//! Commands to devices: sent over MQTT (QoS 1) to the device's command
//! topic with a correlation id, settled by the device's acknowledgement on
//! its `acks` topic (handled by `iot-ingest`) or timed out at their
//! deadline.

use bv_iot::device::DeviceId;
use bv_service::{json, read_json, Problem, Reply};
use serde::Deserialize;
use serde_json::{json, Value};
use spin_sdk::http::Request;
use spin_sdk::pg::{ParameterValue, Row};

use crate::registry::owned;
use crate::{column, query_params, rows};

/// The largest request body.
const MAX_BODY: usize = 16 * 1024;
/// A command's deadline when the request names none.
const DEFAULT_TIMEOUT_SECONDS: i64 = 30;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewCommand {
    name: String,
    #[serde(default)]
    args: serde_json::Map<String, Value>,
    #[serde(default, deserialize_with = "crate::registry::present")]
    timeout_seconds: Option<i64>,
}

/// The command's columns; a sent command past its deadline reads as
/// timed out even before the cron has marked it.
const COLUMNS: &str = concat!(
    "id, name, args::text AS args, result::text AS result, error,
    CASE WHEN state = 'sent' AND deadline < now() THEN 'timed-out' ELSE state END AS state, ",
    text_time!("created_at"),
    " AS created_at, ",
    text_time!("deadline"),
    " AS deadline, ",
    text_time!("settled_at"),
    " AS settled_at"
);

/// `POST /devices/{id}/commands`: 202 once the broker has the command.
pub async fn send(req: Request, segment: &str) -> Result<Reply, Problem> {
    let (conn, device, _) = owned(&req, segment).await?;
    let body: NewCommand = read_json(req, MAX_BODY).await?;
    let name_ok = (1..=64).contains(&body.name.len())
        && body
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !name_ok {
        return Err(Problem::invalid_field(
            "name",
            "1 to 64 characters of letters, digits, '_' and '-'",
        ));
    }
    let timeout = body.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    if !(1..=3600).contains(&timeout) {
        return Err(Problem::invalid_field("timeoutSeconds", "1 to 3600"));
    }
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|e| Problem::internal(format!("random: {e}")))?;
    let id: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let args = Value::Object(body.args);
    let created = rows(
        &conn,
        &format!(
            "INSERT INTO iot.commands (id, device_id, name, args, state, deadline)
             VALUES ($1, $2, $3, $4::text::jsonb, 'sent', now() + $5::bigint * interval '1 second')
             RETURNING {COLUMNS}"
        ),
        vec![
            ParameterValue::Str(id.clone()),
            ParameterValue::Str(device.to_string()),
            ParameterValue::Str(body.name.clone()),
            ParameterValue::Str(args.to_string()),
            ParameterValue::Int64(timeout),
        ],
    )
    .await?;
    let row = created
        .first()
        .ok_or_else(|| Problem::internal("the command was not stored"))?;
    let command = command_json(row)?;
    let message = json!({
        "id": id, "name": body.name, "args": args, "deadline": command["deadline"],
        "ackTopic": device.ack_topic(),
    });
    if let Err(e) = publish(&device, message.to_string().into_bytes()).await {
        conn.execute(
            "UPDATE iot.commands SET state = 'failed', error = $2, settled_at = now() WHERE id = $1",
            vec![ParameterValue::Str(id), ParameterValue::Str(e.clone())],
        )
        .await?;
        return Err(Problem::unavailable(format!(
            "the command could not be handed to the broker: {e}"
        )));
    }
    Ok(json(202, &command))
}

async fn publish(device: &DeviceId, payload: Vec<u8>) -> Result<(), String> {
    let var = |name: &'static str| async move {
        spin_sdk::variables::get(name)
            .await
            .map_err(|e| format!("variable {name}: {e:?}"))
    };
    let address = var("mqtt_address").await?;
    let user = var("mqtt_username").await.unwrap_or_default();
    let password = var("mqtt_password").await.unwrap_or_default();
    let conn = spin_sdk::mqtt::Connection::open(address, user, password, 30)
        .await
        .map_err(|e| format!("{e:?}"))?;
    conn.publish(
        device.command_topic(),
        payload,
        spin_sdk::mqtt::Qos::AtLeastOnce,
    )
    .await
    .map_err(|e| format!("{e:?}"))
}

/// `GET /devices/{id}/commands`: the newest 100.
pub async fn list(req: &Request, segment: &str) -> Result<Reply, Problem> {
    query_params(req, &[])?;
    let (conn, device, _) = owned(req, segment).await?;
    let found = rows(
        &conn,
        &format!(
            "SELECT {COLUMNS} FROM iot.commands WHERE device_id = $1 ORDER BY created_at DESC, id LIMIT 100"
        ),
        vec![ParameterValue::Str(device.to_string())],
    )
    .await?;
    let list: Vec<Value> = found.iter().map(command_json).collect::<Result<_, _>>()?;
    Ok(json(
        200,
        &json!({ "deviceId": device.as_str(), "commands": list }),
    ))
}

/// `GET /devices/{id}/commands/{command}`.
pub async fn get(req: &Request, segment: &str, command: &str) -> Result<Reply, Problem> {
    let (conn, device, _) = owned(req, segment).await?;
    let found = rows(
        &conn,
        &format!("SELECT {COLUMNS} FROM iot.commands WHERE device_id = $1 AND id = $2"),
        vec![
            ParameterValue::Str(device.to_string()),
            ParameterValue::Str(command.to_string()),
        ],
    )
    .await?;
    let row = found
        .first()
        .ok_or_else(|| Problem::not_found(format!("no command {command:?} of {device}")))?;
    Ok(json(200, &command_json(row)?))
}

fn command_json(row: &Row) -> Result<Value, Problem> {
    let parse = |text: Option<String>| {
        text.and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .unwrap_or(Value::Null)
    };
    Ok(json!({
        "id": column::<String>(row, "id")?,
        "name": column::<String>(row, "name")?,
        "args": parse(row.get::<String>("args")),
        "state": column::<String>(row, "state")?,
        "createdAt": column::<String>(row, "created_at")?,
        "deadline": column::<String>(row, "deadline")?,
        "settledAt": row.get::<String>("settled_at"),
        "result": parse(row.get::<String>("result")),
        "error": row.get::<String>("error"),
    }))
}
