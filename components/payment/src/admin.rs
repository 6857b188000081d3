//! Operating the simulation while it runs: the outage switch.

use bv_service::{json, read_json, Problem, Reply};
use serde::Deserialize;
use serde_json::json;
use spin_sdk::http::{Method, Request};

use crate::config::{set_outage_override, Config};

/// Admin calls need an administrator's bearer token (401 without a valid
/// token, 403 for a customer's).
pub async fn require_admin(req: &Request) -> Result<(), Problem> {
    bv_auth::require_admin(req.headers()).await.map(drop)
}

/// `POST {"on": bool}` sets the override, `DELETE` clears it (the
/// `payment_outage` variable decides again), `GET` reads the switch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutageBody {
    on: Option<bool>,
}

/// `/admin/outage`: answers the switch's state after the call.
pub async fn outage(req: Request) -> Result<Reply, Problem> {
    require_admin(&req).await?;
    let method = req.method().clone();
    if method == Method::POST {
        let body: OutageBody = read_json(req, 1024).await?;
        let on = body
            .on
            .ok_or_else(|| Problem::invalid_field("on", "required"))?;
        set_outage_override(Some(on)).await?;
    } else if method == Method::DELETE {
        set_outage_override(None).await?;
    }
    let outage = Config::load().await?.outage;
    Ok(json(
        200,
        &json!({
            "on": outage.on(),
            "variable": outage.variable,
            "override": outage.overridden,
        }),
    ))
}
