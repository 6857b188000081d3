//! `[[trigger.cron]]`, parsed strictly.

use std::str::FromStr;

use bv_manifest::App;
use serde::Deserialize;

/// One `[[trigger.cron]]` entry, with the fields of the spin-trigger-cron
/// plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronEntry {
    /// The component to run.
    pub component: String,
    /// When to run it: `sec min hour day-of-month month day-of-week [year]`.
    pub cron_expression: String,
    /// Optional trigger id (ignored, accepted as Spin does).
    #[serde(default)]
    pub id: Option<String>,
}

/// A `[[trigger.cron]]` entry with its expression parsed.
#[derive(Debug, Clone)]
pub struct Job {
    /// The entry as written.
    pub entry: CronEntry,
    /// Its schedule.
    pub schedule: cron::Schedule,
}

/// Reads `[[trigger.cron]]` from `app` (the plugin has no application-level
/// settings, so neither does this); errors name the field, e.g.
/// `trigger.cron[0].cron_expression`.
pub fn from_app(app: &App) -> anyhow::Result<Vec<Job>> {
    if let Some(table) = app.application.trigger_settings.get("cron") {
        if let Some(key) = table.keys().next() {
            anyhow::bail!(
                "application.trigger.cron.{key}: unknown setting (the cron trigger has none)"
            );
        }
    }
    let mut jobs = Vec::new();
    for (i, entry) in app
        .trigger_entries::<CronEntry>("cron")?
        .into_iter()
        .enumerate()
    {
        let schedule = parse_expression(&entry.cron_expression)
            .map_err(|e| anyhow::anyhow!("trigger.cron[{i}].cron_expression: {e}"))?;
        jobs.push(Job { entry, schedule });
    }
    Ok(jobs)
}

/// Parses a cron expression with a seconds field, as the plugin does
/// (6 fields, or 7 with a year).
pub fn parse_expression(expression: &str) -> Result<cron::Schedule, String> {
    let fields = expression.split_whitespace().count();
    if !(6..=7).contains(&fields) {
        return Err(format!(
            "invalid cron expression `{expression}`: expected 6 or 7 fields \
             (sec min hour day-of-month month day-of-week [year]), found {fields}"
        ));
    }
    cron::Schedule::from_str(expression)
        .map_err(|e| format!("invalid cron expression `{expression}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions() {
        assert!(parse_expression("* * * * * *").is_ok());
        assert!(parse_expression("0 */5 * * * * *").is_ok());
        assert!(parse_expression("1/2 0 9-17 * * Mon-Fri").is_ok());
        let e = parse_expression("*/5 * * * *").unwrap_err();
        assert!(e.contains("expected 6 or 7 fields"), "{e}");
        let e = parse_expression("61 * * * * *").unwrap_err();
        assert!(e.contains("invalid cron expression `61 * * * * *`"), "{e}");
    }
}
