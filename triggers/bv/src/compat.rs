//! What runs where: which hosts have each trigger a manifest uses, and the
//! notes `bv up` prints about a manifest that will not run the same way
//! under Spin (`spin up`) or SpinKube.
//!
//! Spin 4.1's `spin up` has the HTTP and Redis triggers built in and looks
//! up any other trigger type as a plugin `trigger-<type>`, refusing the
//! manifest when none is installed (`src/commands/up.rs` in Spin's source).
//! SpinKube's `containerd-shim-spin` bundles the HTTP, Redis, MQTT, SQS and
//! command triggers. The Postgres trigger exists only in `bv`.

use bv_manifest::App;

/// Where a trigger type runs besides `bv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Support {
    /// The trigger type (`[[trigger.<type>]]`).
    pub kind: &'static str,
    /// Under `spin up`: built in, through a plugin, or not at all.
    pub spin_up: SpinUp,
    /// Bundled in SpinKube's `containerd-shim-spin`.
    pub spinkube: bool,
    /// Run by `bv`.
    pub bv: bool,
}

/// How `spin up` runs a trigger type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpinUp {
    /// Built into Spin.
    BuiltIn,
    /// Through the named plugin (`spin plugins install <name>`).
    Plugin(&'static str),
    /// No built-in trigger and no plugin: `spin up` refuses the manifest.
    No,
}

/// Every trigger type this project knows of.
pub const TRIGGERS: &[Support] = &[
    Support {
        kind: "http",
        spin_up: SpinUp::BuiltIn,
        spinkube: true,
        bv: true,
    },
    Support {
        kind: "redis",
        spin_up: SpinUp::BuiltIn,
        spinkube: true,
        bv: true,
    },
    Support {
        kind: "mqtt",
        spin_up: SpinUp::Plugin("trigger-mqtt"),
        spinkube: true,
        bv: true,
    },
    Support {
        kind: "cron",
        spin_up: SpinUp::Plugin("trigger-cron"),
        spinkube: false,
        bv: true,
    },
    Support {
        kind: "sqs",
        spin_up: SpinUp::Plugin("trigger-sqs"),
        spinkube: true,
        bv: false,
    },
    Support {
        kind: "command",
        spin_up: SpinUp::Plugin("trigger-command"),
        spinkube: true,
        bv: false,
    },
    Support {
        kind: "postgres",
        spin_up: SpinUp::No,
        spinkube: false,
        bv: true,
    },
];

/// What `bv up` says about one trigger type of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// A warning (the manifest will not run under Spin) or information.
    pub warning: bool,
    /// The sentence logged.
    pub message: String,
}

/// The notes for `app`: a warning per `bv`-only trigger type it uses (and
/// per type `bv` does not run), and information for trigger types that
/// need a Spin plugin or are missing from SpinKube's shim. Nothing for HTTP
/// and Redis.
pub fn notes(app: &App) -> Vec<Note> {
    let mut notes = Vec::new();
    for (kind, entries) in &app.other_triggers {
        let mut components: Vec<&str> = entries
            .iter()
            .filter_map(|entry| entry.get("component").and_then(|c| c.as_str()))
            .collect();
        components.sort_unstable();
        components.dedup();
        let who = components.join(", ");
        let support = TRIGGERS.iter().find(|s| s.kind == kind.as_str());
        let Some(support) = support.filter(|s| s.bv) else {
            notes.push(Note {
                warning: true,
                message: format!(
                    "[[trigger.{kind}]] ({who}): bv has no {kind} trigger; these handlers do not \
                     run under bv"
                ),
            });
            continue;
        };
        match (support.spin_up, support.spinkube) {
            (SpinUp::No, false) => notes.push(Note {
                warning: true,
                message: format!(
                    "[[trigger.{kind}]] ({who}) runs only under bv: Spin has no {kind} trigger, \
                     built in or as a plugin, so `spin up` refuses this manifest (\"No built-in \
                     trigger named '{kind}'\") and SpinKube's shim has none either, and --component-id cannot select a \
                     component that has one. Under Spin, run a manifest without these \
                     [[trigger.{kind}]] entries (their components' other triggers still work); \
                     these handlers then do not run."
                ),
            }),
            (SpinUp::Plugin(plugin), spinkube) => notes.push(Note {
                warning: false,
                message: format!(
                    "[[trigger.{kind}]] ({who}) needs the Spin plugin `{plugin}` under `spin up`{}",
                    if spinkube {
                        "; SpinKube's shim has it built in"
                    } else {
                        "; SpinKube's shim does not have it"
                    }
                ),
            }),
            _ => {}
        }
    }
    notes
}

/// Logs [`notes`] for `app`.
pub fn report(app: &App) {
    for note in notes(app) {
        if note.warning {
            tracing::warn!("{}", note.message);
        } else {
            tracing::info!("{}", note.message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(triggers: &str) -> App {
        let text = format!(
            r#"spin_manifest_version = 2
[application]
name = "t"
[[trigger.http]]
route = "/..."
component = "a"
{triggers}
[component.a]
source = "a.wasm"
[component.b]
source = "b.wasm"
"#
        );
        bv_manifest::parse(&text, std::path::Path::new("/tmp/spin.toml")).unwrap()
    }

    #[test]
    fn http_and_redis_run_everywhere_without_a_note() {
        let app = app("[[trigger.redis]]\ncomponent = \"b\"\nchannel = \"c\"\n");
        assert_eq!(notes(&app), []);
    }

    #[test]
    fn the_postgres_trigger_is_bv_only() {
        let app = app(
            "[[trigger.postgres]]\ncomponent = \"b\"\nevents = [\"x\"]\n\
             [[trigger.postgres]]\ncomponent = \"a\"\nevents = [\"y\"]\n",
        );
        let notes = notes(&app);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].warning);
        let m = &notes[0].message;
        assert!(
            m.contains("[[trigger.postgres]] (a, b) runs only under bv"),
            "{m}"
        );
        assert!(m.contains("No built-in trigger named 'postgres'"), "{m}");
        assert!(m.contains("run a manifest without these"), "{m}");
    }

    #[test]
    fn plugin_triggers_are_information() {
        let app = app(
            "[[trigger.cron]]\ncomponent = \"b\"\ncron_expression = \"* * * * * *\"\n\
             [[trigger.mqtt]]\ncomponent = \"a\"\naddress = \"mqtt://x\"\n",
        );
        let notes = notes(&app);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes.iter().all(|n| !n.warning));
        assert!(notes[0].message.contains("`trigger-cron`"), "{notes:?}");
        assert!(
            notes[0].message.contains("shim does not have it"),
            "{notes:?}"
        );
        assert!(notes[1].message.contains("`trigger-mqtt`"), "{notes:?}");
        assert!(
            notes[1].message.contains("shim has it built in"),
            "{notes:?}"
        );
    }

    #[test]
    fn triggers_bv_does_not_run_are_warnings() {
        let app = app("[[trigger.sqs]]\ncomponent = \"b\"\nqueue_url = \"q\"\n");
        let notes = notes(&app);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].warning);
        assert!(
            notes[0].message.contains("bv has no sqs trigger"),
            "{notes:?}"
        );
    }
}
