//! Device types and devices, with their MQTT credentials.

use bv_auth::Principal;
use bv_iot::credentials;
use bv_iot::device::{DeviceId, DeviceType};
use bv_service::{json, read_json, Problem, Reply};
use serde::Deserialize;
use serde_json::{json, Value};
use spin_sdk::http::Request;
use spin_sdk::pg::{Connection, ParameterValue, Row};

use crate::{column, open, rows};

/// The largest request body.
const MAX_BODY: usize = 16 * 1024;

/// `POST /device-types` (administrators).
pub async fn create_type(req: Request) -> Result<Reply, Problem> {
    bv_auth::require_admin(req.headers()).await?;
    let ty: DeviceType = read_json(req, MAX_BODY).await?;
    ty.check()
        .map_err(|(field, detail)| Problem::invalid_field(&field, detail))?;
    let conn = open().await?;
    let spec = serde_json::to_string(&ty).expect("a type serializes");
    let made = rows(
        &conn,
        "INSERT INTO iot.device_types (name, spec) VALUES ($1, $2::text::jsonb)
         ON CONFLICT (name) DO NOTHING RETURNING name",
        vec![
            ParameterValue::Str(ty.name.clone()),
            ParameterValue::Str(spec),
        ],
    )
    .await?;
    if made.is_empty() {
        return Err(Problem::conflict(format!(
            "device type {:?} exists",
            ty.name
        )));
    }
    Ok(json(201, &ty))
}

/// `GET /device-types`.
pub async fn list_types(req: &Request) -> Result<Reply, Problem> {
    bv_auth::authenticate(req.headers()).await?;
    let conn = open().await?;
    let found = rows(
        &conn,
        "SELECT spec::text AS spec FROM iot.device_types ORDER BY name",
        vec![],
    )
    .await?;
    let types: Vec<Value> = found
        .iter()
        .map(|r| {
            column::<String>(r, "spec").map(|s| serde_json::from_str(&s).unwrap_or(Value::Null))
        })
        .collect::<Result<_, _>>()?;
    Ok(json(200, &json!({ "types": types })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDevice {
    id: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    name: String,
    /// Administrators only: register for someone else.
    #[serde(default, deserialize_with = "present")]
    owner: Option<String>,
}

/// An optional value that may be left out but not given as `null`.
pub fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// `POST /devices`: 201 with the credentials, shown this once.
pub async fn create_device(req: Request) -> Result<Reply, Problem> {
    let principal = bv_auth::authenticate(req.headers()).await?;
    let body: NewDevice = read_json(req, MAX_BODY).await?;
    let id = DeviceId::parse(&body.id).map_err(|e| Problem::invalid_field("id", e))?;
    if body.name.chars().count() > 200 {
        return Err(Problem::invalid_field("name", "at most 200 characters"));
    }
    let owner = match body.owner {
        Some(owner) if principal.is_admin() => bv_auth::Subject::parse(&owner)
            .ok_or_else(|| Problem::invalid_field("owner", "not a user id"))?
            .to_string(),
        Some(_) => {
            return Err(bv_auth::guest::forbidden(
                "only an administrator registers a device for someone else",
            ))
        }
        None => principal.subject.to_string(),
    };
    let conn = open().await?;
    let known = rows(
        &conn,
        "SELECT 1 FROM iot.device_types WHERE name = $1",
        vec![ParameterValue::Str(body.ty.clone())],
    )
    .await?;
    if known.is_empty() {
        return Err(Problem::invalid_field(
            "type",
            format!("no device type {:?} (GET /api/iot/device-types)", body.ty),
        ));
    }
    let (password, hash) = new_password()?;
    let made = rows(
        &conn,
        &format!(
            "INSERT INTO iot.devices (id, type, owner, name, mqtt_password_hash) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO NOTHING RETURNING {DEVICE_COLUMNS}"
        ),
        vec![
            ParameterValue::Str(id.to_string()),
            ParameterValue::Str(body.ty),
            ParameterValue::Str(owner),
            ParameterValue::Str(body.name),
            ParameterValue::Str(hash),
        ],
    )
    .await?;
    let Some(row) = made.first() else {
        return Err(Problem::conflict(format!("device {id} exists")));
    };
    let mut device = device_json(row)?;
    device["mqtt"] = mqtt(&id, &password);
    Ok(json(201, &device))
}

/// `GET /devices`: the caller's (an administrator's: everyone's).
pub async fn list_devices(req: &Request) -> Result<Reply, Problem> {
    let principal = bv_auth::authenticate(req.headers()).await?;
    let conn = open().await?;
    let found = rows(
        &conn,
        &format!(
            "SELECT {DEVICE_COLUMNS} FROM iot.devices WHERE $1 OR owner = $2 ORDER BY id LIMIT 1000"
        ),
        vec![
            ParameterValue::Boolean(principal.is_admin()),
            ParameterValue::Str(principal.subject.to_string()),
        ],
    )
    .await?;
    let devices: Vec<Value> = found.iter().map(device_json).collect::<Result<_, _>>()?;
    Ok(json(200, &json!({ "devices": devices })))
}

/// `GET /devices/{id}`.
pub async fn get_device(req: &Request, segment: &str) -> Result<Reply, Problem> {
    let (_, _, row) = owned(req, segment).await?;
    Ok(json(200, &device_json(&row)?))
}

/// `DELETE /devices/{id}`: the device and its detector state; its
/// telemetry stays until retention removes it.
pub async fn delete_device(req: &Request, segment: &str) -> Result<Reply, Problem> {
    let (conn, id, _) = owned(req, segment).await?;
    let param = || vec![ParameterValue::Str(id.to_string())];
    conn.execute("DELETE FROM iot.detector WHERE device_id = $1", param())
        .await?;
    conn.execute("DELETE FROM iot.devices WHERE id = $1", param())
        .await?;
    Ok(spin_sdk::http::Response::builder()
        .status(204)
        .body(spin_sdk::http::FullBody::new(bytes::Bytes::new()))
        .expect("a valid status"))
}

/// `POST /devices/{id}/credentials`: a new password replaces the old.
pub async fn rotate(req: &Request, segment: &str) -> Result<Reply, Problem> {
    let (conn, id, _) = owned(req, segment).await?;
    let (password, hash) = new_password()?;
    let updated = rows(
        &conn,
        &format!(
            "UPDATE iot.devices SET mqtt_password_hash = $2, rotated_at = now() WHERE id = $1
             RETURNING {DEVICE_COLUMNS}"
        ),
        vec![
            ParameterValue::Str(id.to_string()),
            ParameterValue::Str(hash),
        ],
    )
    .await?;
    let row = updated
        .first()
        .ok_or_else(|| Problem::not_found(format!("no device {id}")))?;
    let mut device = device_json(row)?;
    device["mqtt"] = mqtt(&id, &password);
    Ok(json(200, &device))
}

/// The device `segment` names, if the caller owns it (or is an
/// administrator).
pub async fn owned(req: &Request, segment: &str) -> Result<(Connection, DeviceId, Row), Problem> {
    let principal: Principal = bv_auth::authenticate(req.headers()).await?;
    let id = DeviceId::parse(segment)
        .map_err(|e| Problem::not_found(format!("no device {segment:?}: an id {e}")))?;
    let conn = open().await?;
    let found = rows(
        &conn,
        &format!("SELECT {DEVICE_COLUMNS} FROM iot.devices WHERE id = $1"),
        vec![ParameterValue::Str(id.to_string())],
    )
    .await?;
    let row = found
        .into_iter()
        .next()
        .ok_or_else(|| Problem::not_found(format!("no device {id}")))?;
    if !principal.may_access(&column::<String>(&row, "owner")?) {
        return Err(bv_auth::guest::forbidden("a device is its owner's"));
    }
    Ok((conn, id, row))
}

const DEVICE_COLUMNS: &str = concat!(
    "id, type, owner, name, ",
    text_time!("created_at"),
    " AS created_at, ",
    text_time!("rotated_at"),
    " AS rotated_at"
);

fn device_json(row: &Row) -> Result<Value, Problem> {
    Ok(json!({
        "id": column::<String>(row, "id")?,
        "type": column::<String>(row, "type")?,
        "owner": column::<String>(row, "owner")?,
        "name": column::<String>(row, "name")?,
        "createdAt": column::<String>(row, "created_at")?,
        "credentialsRotatedAt": column::<String>(row, "rotated_at")?,
    }))
}

fn mqtt(id: &DeviceId, password: &str) -> Value {
    json!({
        "username": id.as_str(),
        "password": password,
        "telemetryTopic": id.telemetry_topic(),
        "commandTopic": id.command_topic(),
        "ackTopic": id.ack_topic(),
    })
}

/// A fresh password and its Mosquitto hash.
fn new_password() -> Result<(String, String), Problem> {
    let mut random = [0u8; 24];
    let mut salt = [0u8; credentials::SALT_BYTES];
    getrandom::fill(&mut random)
        .and_then(|()| getrandom::fill(&mut salt))
        .map_err(|e| Problem::internal(format!("random: {e}")))?;
    let password = credentials::password_from(&random);
    let hash = credentials::mosquitto_hash(&password, &salt);
    Ok((password, hash))
}
