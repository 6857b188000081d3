//! `bv mqtt-auth`: Mosquitto's password and ACL files from the device
//! registry (`bv_mqtt_auth`), once or kept in step.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail};
use bv_mqtt_auth::Files;
use clap::Args;
use tokio_util::sync::CancellationToken;

/// `bv mqtt-auth …`.
#[derive(Args)]
pub struct MqttAuthArgs {
    /// The registry database. Default: the manifest's `db_url` variable
    /// (SPIN_VARIABLE_DB_URL, else its default).
    #[arg(
        long,
        env = "BV_IOT_DATABASE",
        hide_env_values = true,
        value_name = "URL"
    )]
    database: Option<String>,
    /// The manifest whose `db_url` is used when --database is not given.
    #[arg(
        short = 'f',
        long = "from",
        default_value = "spin.toml",
        value_name = "MANIFEST"
    )]
    from: PathBuf,
    /// Mosquitto's `password_file`, written by this command.
    #[arg(long, value_name = "PATH")]
    password_file: PathBuf,
    /// Mosquitto's `acl_file`, written by this command.
    #[arg(long, value_name = "PATH")]
    acl_file: PathBuf,
    /// Mosquitto's `pid_file`: it gets SIGHUP (reload) after each change.
    #[arg(long, value_name = "PATH")]
    mosquitto_pid_file: Option<PathBuf>,
    /// The platform's own MQTT account (what `mqtt_username` is set to);
    /// its password comes from BV_MQTT_SERVICE_PASSWORD.
    #[arg(long, env = "BV_MQTT_SERVICE_USER", value_name = "NAME")]
    service_user: Option<String>,
    /// Write the files once and exit, instead of keeping them in step.
    #[arg(long)]
    once: bool,
    /// Seconds between two looks at the registry.
    #[arg(long, default_value_t = 2, value_name = "SECONDS")]
    interval: u64,
}

pub fn run(args: MqttAuthArgs) -> anyhow::Result<()> {
    let address = match &args.database {
        Some(url) => url.clone(),
        None => crate::events::manifest_variable(&args.from, "db_url")?,
    };
    let service = match args.service_user {
        Some(user) => {
            let password = std::env::var("BV_MQTT_SERVICE_PASSWORD").map_err(|_| {
                anyhow!("--service-user {user}: set its password in BV_MQTT_SERVICE_PASSWORD")
            })?;
            if password.is_empty() {
                bail!("BV_MQTT_SERVICE_PASSWORD is empty");
            }
            Some((user, password))
        }
        None => None,
    };
    let files = Files {
        password_file: args.password_file,
        acl_file: args.acl_file,
        mosquitto_pid_file: args.mosquitto_pid_file,
        service,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = bv_trigger_postgres::admin::connect(&address).await?;
        if args.once {
            let outcome = bv_mqtt_auth::sync(&client, &files).await?;
            println!(
                "{} device account(s); files {}",
                outcome.devices,
                if outcome.changed {
                    "written"
                } else {
                    "unchanged"
                }
            );
            return Ok(());
        }
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("a SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            stop.cancel();
        });
        eprintln!(
            "keeping {} and {} in step with the device registry every {} s",
            files.password_file.display(),
            files.acl_file.display(),
            args.interval
        );
        bv_mqtt_auth::watch(
            &client,
            &files,
            Duration::from_secs(args.interval.max(1)),
            cancel,
        )
        .await
    })
}
