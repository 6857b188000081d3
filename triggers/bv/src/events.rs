//! `bv events`: operating durable events (subscriptions, replay, dead
//! letters). The work is done by `bv_trigger_postgres::admin`; this module
//! finds the database, parses arguments and formats what comes back.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bv_trigger_postgres::admin::{self, ReplayFrom, Selection};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

/// How often a replay's progress is printed when stderr is not a terminal.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// `bv events …`.
#[derive(Args)]
pub struct EventsArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(subcommand)]
    command: EventsCommand,
}

/// Which database: `--database`, else the manifest's postgres trigger address.
#[derive(Args)]
struct DatabaseArgs {
    /// The events database (postgres://user@host:port/db?sslmode=disable or
    /// key=value form). Default: [application.trigger.postgres] address of
    /// the manifest.
    #[arg(
        long,
        env = "BV_EVENTS_DATABASE",
        hide_env_values = true,
        global = true,
        value_name = "URL"
    )]
    database: Option<String>,
    /// The manifest, or a directory holding spin.toml, whose postgres
    /// trigger address is used when --database is not given.
    #[arg(
        short = 'f',
        long = "from",
        default_value = "spin.toml",
        global = true,
        value_name = "MANIFEST"
    )]
    from: PathBuf,
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Create the bv_events schema (outbox, subscriptions, dead letters) in the database.
    Init,
    /// Show every subscription: position, lag, dead letters, whether a bv delivers it.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Redeliver a subscription's events from an offset or a time.
    #[command(group = clap::ArgGroup::new("start").required(true).args(["from_offset", "from_time"]))]
    Replay {
        /// The subscription (its name, by default the component id).
        subscription: String,
        /// Start at the first event whose offset (outbox seq) is at least N.
        #[arg(long, value_name = "N")]
        from_offset: Option<u64>,
        /// Start at the first event recorded at or after this time (RFC 3339,
        /// e.g. 2025-01-31T12:00:00Z).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        from_time: Option<DateTime<Utc>>,
        /// Also delete the consumer's processed marks, so an idempotent
        /// consumer handles the events again (rebuilding a projection).
        #[arg(long)]
        forget_processed: bool,
        /// Return after the reset instead of showing progress until caught up.
        #[arg(long)]
        no_wait: bool,
    },
    /// Inspect, retry or drop events a subscription gave up on.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
}

#[derive(Subcommand)]
enum DeadLettersCommand {
    /// List dead letters.
    List {
        /// Only this subscription's.
        #[arg(long)]
        subscription: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter with its event.
    Show {
        /// The dead letter's id.
        id: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Deliver dead letters again (a running bv picks them up at once).
    Retry(SelectionArgs),
    /// Delete dead letters for good.
    Drop(SelectionArgs),
}

#[derive(Args)]
struct SelectionArgs {
    /// Dead letter ids.
    #[arg(
        required_unless_present = "all",
        conflicts_with = "all",
        value_name = "ID"
    )]
    ids: Vec<i64>,
    /// Every dead letter (of --subscription, if given).
    #[arg(long)]
    all: bool,
    /// With --all: only this subscription's.
    #[arg(long, requires = "all")]
    subscription: Option<String>,
}

impl SelectionArgs {
    fn selection(self) -> Selection {
        if self.all {
            Selection::All {
                subscription: self.subscription,
            }
        } else {
            Selection::Ids(self.ids)
        }
    }
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`{s}` is not an RFC 3339 time like 2025-01-31T12:00:00Z ({e})"))
}

/// Runs one `bv events` command.
pub fn run(args: EventsArgs) -> anyhow::Result<()> {
    let address = database_address(&args.database)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(execute(&address, args.command))
}

async fn execute(address: &str, command: EventsCommand) -> anyhow::Result<()> {
    if let EventsCommand::Init = command {
        admin::init(address).await?;
        println!("The bv_events schema is ready.");
        return Ok(());
    }
    let mut client = admin::connect(address).await?;
    match command {
        EventsCommand::Init => unreachable!("handled above"),
        EventsCommand::List { json } => {
            let subscriptions = admin::list_subscriptions(&client).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&subscriptions)?);
            } else if subscriptions.is_empty() {
                eprintln!(
                    "No subscriptions yet: bv creates one when it starts a [[trigger.postgres]] entry."
                );
            } else {
                print_table(
                    &[
                        "SUBSCRIPTION",
                        "COMPONENT",
                        "POSITION",
                        "LAG",
                        "DEAD LETTERS",
                        "ACTIVE",
                        "TYPES",
                    ],
                    subscriptions
                        .iter()
                        .map(|s| {
                            vec![
                                s.name.clone(),
                                s.component.clone(),
                                s.position.seq.to_string(),
                                s.lag.to_string(),
                                s.dead_letters.to_string(),
                                if s.active { "yes" } else { "no" }.to_string(),
                                s.types.join(","),
                            ]
                        })
                        .collect(),
                );
            }
        }
        EventsCommand::Replay {
            subscription,
            from_offset,
            from_time,
            forget_processed,
            no_wait,
        } => {
            let from = match (from_offset, from_time) {
                (Some(n), _) => ReplayFrom::Offset(
                    i64::try_from(n).map_err(|_| anyhow!("--from-offset {n} is too large"))?,
                ),
                (None, Some(t)) => ReplayFrom::Time(t),
                (None, None) => bail!("give --from-offset or --from-time"),
            };
            let start = admin::replay(&mut client, &subscription, from, forget_processed).await?;
            if forget_processed {
                println!(
                    "Forgot {} processed mark(s) of consumer `{subscription}`.",
                    start.forgotten
                );
            }
            println!(
                "Subscription `{subscription}` now resumes after offset {}: {} event(s) to redeliver.",
                start.position.seq, start.events
            );
            if start.events == 0 {
                return Ok(());
            }
            if !start.active {
                println!(
                    "No bv is delivering `{subscription}` now: the events will be delivered when it starts."
                );
                return Ok(());
            }
            if no_wait {
                return Ok(());
            }
            show_progress(&client, &subscription).await?;
        }
        EventsCommand::DeadLetters(command) => dead_letters(&mut client, command).await?,
    }
    Ok(())
}

/// Follows a replay on stderr until the subscription has caught up: one line
/// rewritten in place on a terminal, a line a second otherwise (logs).
async fn show_progress(client: &tokio_postgres::Client, subscription: &str) -> anyhow::Result<()> {
    let terminal = std::io::stderr().is_terminal();
    let mut last_print: Option<Instant> = None;
    let mut warned_inactive = false;
    let mut err = std::io::stderr();
    admin::wait_progress(client, subscription, |p| {
        let pct = if p.total > 0 {
            p.done * 100 / p.total
        } else {
            100
        };
        let line = format!(
            "replay {subscription}: {}/{} ({pct}%), {} to go",
            p.done, p.total, p.lag
        );
        if terminal {
            let _ = write!(err, "\r\x1b[2K{line}");
            if p.lag == 0 {
                let _ = writeln!(err);
            }
        } else if p.lag == 0 || last_print.is_none_or(|t| t.elapsed() >= PLAIN_PROGRESS_EVERY) {
            let _ = writeln!(err, "{line}");
            last_print = Some(Instant::now());
        }
        if !p.active && !warned_inactive && p.lag > 0 {
            warned_inactive = true;
            if terminal {
                let _ = writeln!(err);
            }
            let _ = writeln!(
                err,
                "No bv is delivering `{subscription}` now; waiting for one to start (Ctrl-C stops waiting, the replay stays)."
            );
        }
        let _ = err.flush();
    })
    .await?;
    println!("Replay of `{subscription}` caught up.");
    Ok(())
}

async fn dead_letters(
    client: &mut tokio_postgres::Client,
    command: DeadLettersCommand,
) -> anyhow::Result<()> {
    match command {
        DeadLettersCommand::List { subscription, json } => {
            let letters = admin::list_dead_letters(client, subscription.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
            } else if letters.is_empty() {
                eprintln!("No dead letters.");
            } else {
                print_table(
                    &[
                        "ID",
                        "SUBSCRIPTION",
                        "OFFSET",
                        "TYPE",
                        "SUBJECT",
                        "ATTEMPTS",
                        "RETRY",
                        "FAILED AT (UTC)",
                        "LAST ERROR",
                    ],
                    letters
                        .iter()
                        .map(|d| {
                            vec![
                                d.id.to_string(),
                                d.subscription.clone(),
                                d.seq.to_string(),
                                d.event_type.clone(),
                                d.subject.clone().unwrap_or_else(|| "-".into()),
                                d.attempts.to_string(),
                                if d.retry_requested { "requested" } else { "-" }.to_string(),
                                d.failed_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                                one_line(&d.last_error, 80),
                            ]
                        })
                        .collect(),
                );
            }
        }
        DeadLettersCommand::Show { id, json } => {
            let detail = admin::show_dead_letter(client, id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&detail)?);
            } else {
                let d = &detail.letter;
                println!("id:           {}", d.id);
                println!("subscription: {}", d.subscription);
                println!("offset:       {}", d.seq);
                println!("event id:     {}", d.event_id);
                println!("type:         {}", d.event_type);
                println!("subject:      {}", d.subject.as_deref().unwrap_or("-"));
                println!("attempts:     {}", d.attempts);
                println!(
                    "retry:        {}",
                    if d.retry_requested { "requested" } else { "no" }
                );
                println!("failed at:    {}", d.failed_at.to_rfc3339());
                println!("last error:   {}", d.last_error);
                println!("event:");
                println!("{}", serde_json::to_string_pretty(&detail.event)?);
            }
        }
        DeadLettersCommand::Retry(selection) => {
            let n = admin::retry_dead_letters(client, selection.selection()).await?;
            println!("Requested a retry of {n} dead letter(s); a running bv delivers them now.");
        }
        DeadLettersCommand::Drop(selection) => {
            let n = admin::drop_dead_letters(client, selection.selection()).await?;
            println!("Dropped {n} dead letter(s).");
        }
    }
    Ok(())
}

/// The database address: `--database` / `BV_EVENTS_DATABASE`, else the
/// manifest's `[application.trigger.postgres] address` with its
/// `{{ variable }}`s resolved as `bv up` would (SPIN_VARIABLE_<NAME>, then the
/// variable's default).
fn database_address(args: &DatabaseArgs) -> anyhow::Result<String> {
    if let Some(address) = &args.database {
        return Ok(address.clone());
    }
    let manifest = crate::manifest_path(&args.from);
    if !manifest.is_file() {
        bail!(
            "no events database: pass --database <url>, set BV_EVENTS_DATABASE, or point -f at a spin.toml with [application.trigger.postgres] address ({} not found)",
            manifest.display()
        );
    }
    let app = bv_manifest::load(&manifest)?;
    let config = bv_trigger_postgres::PostgresTriggerConfig::from_app(&app).map_err(|e| {
        // A ManifestError names the file already.
        if e.is::<bv_manifest::ManifestError>() {
            e
        } else {
            e.context(manifest.display().to_string())
        }
    })?;
    let (template, field) = match &config.address {
        Some(t) => (
            t.clone(),
            "application.trigger.postgres.address".to_string(),
        ),
        None => {
            // No application default: usable only if every entry names the same database.
            let mut entries = config.entries.iter().filter_map(|e| e.address.as_ref());
            match entries.next() {
                Some(first) if entries.all(|a| a.as_str() == first.as_str()) => {
                    (first.clone(), "trigger.postgres[0].address".to_string())
                }
                Some(_) => bail!(
                    "{}: the [[trigger.postgres]] entries use different databases; pass --database <url>",
                    manifest.display()
                ),
                None => bail!(
                    "no events database: {} has no [application.trigger.postgres] address; pass --database <url> or set BV_EVENTS_DATABASE",
                    manifest.display()
                ),
            }
        }
    };
    template
        .render(|name| {
            std::env::var(format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()))
                .ok()
                .or_else(|| app.variables.get(name).and_then(|v| v.default.clone()))
        })
        .map_err(|e| match e {
            bv_manifest::TemplateError::MissingVariable { name } => anyhow!(
                "{}: {field}: variable `{name}` has no value: set SPIN_VARIABLE_{} or give it a default, or pass --database <url>",
                manifest.display(),
                name.to_ascii_uppercase()
            ),
            other => anyhow!("{}: {field}: {other}", manifest.display()),
        })
}

/// The value of the manifest variable `name`: SPIN_VARIABLE_<NAME>, else
/// its default.
pub fn manifest_variable(from: &std::path::Path, name: &str) -> anyhow::Result<String> {
    let manifest = crate::manifest_path(from);
    if !manifest.is_file() {
        bail!(
            "{} not found: pass the database with --database",
            manifest.display()
        );
    }
    let app = bv_manifest::load(&manifest)?;
    std::env::var(format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()))
        .ok()
        .or_else(|| app.variables.get(name).and_then(|v| v.default.clone()))
        .ok_or_else(|| {
            anyhow!(
                "{}: variable `{name}` has no value: set SPIN_VARIABLE_{} or pass --database",
                manifest.display(),
                name.to_ascii_uppercase()
            )
        })
}

/// Prints left-aligned columns; the last column is not padded.
fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `s` on one line, cut to `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}
