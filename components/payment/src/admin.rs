//! Operating the simulation while it runs: the outage switch.

use bv_service::{json, read_json, Problem, Reply};
use serde::Deserialize;
use serde_json::json;
use spin_sdk::http::{Method, Request};

use crate::config::{set_outage_override, Config};

/// Admin calls need `x-bv-role: admin` (403 otherwise). The one place to
/// change when real admin authentication arrives.
pub fn require_admin(req: &Request) -> Result<(), Problem> {
    let role = req.headers().get("x-bv-role").and_then(|v| v.to_str().ok());
    if role == Some("admin") {
        Ok(())
    } else {
        Err(Problem::new(
            403,
            "forbidden",
            "Admins only",
            "this call needs the admin role (header `x-bv-role: admin`)",
        ))
    }
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
    require_admin(&req)?;
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
