//! No secret the suite uses reaches a log.
//!
//! Every `bv up` the harness starts appends what it writes (stdout and
//! stderr) to a file in the suite's log directory, and every secret a test
//! hands to an app or to a request (signing keys, passwords, access and
//! refresh tokens, secret variables) is recorded there too. After the
//! suite, `infra/scripts/test.sh` runs
//! [`the_suite_logs_hold_none_of_the_secrets_it_used`], which reads them all
//! and fails on any secret found in any log line.
//!
//! The directory is `BV_SUITE_LOG_DIR` when set (test.sh makes a fresh one
//! per run), otherwise one per test process under Cargo's scratch directory.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The file of recorded secrets, one per line, in the log directory.
const SECRETS_FILE: &str = "secrets.txt";
/// Shorter values are not secrets worth scanning for (and would match by
/// chance).
const MIN_SECRET_LEN: usize = 8;

fn log_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = match std::env::var_os("BV_SUITE_LOG_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join("suite-logs")
                .join(std::process::id().to_string()),
        };
        std::fs::create_dir_all(&dir).expect("creating the suite's log directory");
        dir
    })
}

/// A log file of one app, shared by the threads that read its output.
pub type AppLog = Arc<Mutex<File>>;

/// A new log file for the next app.
pub fn app_log() -> AppLog {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = log_dir().join(format!("app-{n:05}.log"));
    Arc::new(Mutex::new(
        File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    ))
}

/// Appends one line `bv` wrote to its app's log file.
pub fn append(log: &AppLog, line: &str) {
    let mut file = log.lock().unwrap();
    let _ = writeln!(file, "{line}");
}

/// Records `secret` (and the forms it takes inside JSON) as used by the
/// suite: no log may contain it.
pub fn used(secret: &str) {
    static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let mut forms = vec![secret.to_string()];
    let escaped = serde_json::to_string(secret).unwrap();
    forms.push(escaped[1..escaped.len() - 1].to_string());
    let mut seen = SEEN.lock().unwrap();
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir().join(SECRETS_FILE))
        .expect("opening the suite's secrets file");
    for form in forms {
        if form.len() >= MIN_SECRET_LEN && !form.contains('\n') && seen.insert(form.clone()) {
            writeln!(file, "{form}").expect("recording a secret");
        }
    }
}

/// Records the secrets among an app's environment: secret variables the
/// suite passes (signing keys, and the seeds inside them; API keys).
pub fn used_in_env(env: &[(String, String)]) {
    for (name, value) in env {
        let name = name.to_ascii_uppercase();
        let secret = ["SIGNING_KEYS", "API_KEY", "PASSWORD", "SECRET", "TOKEN"]
            .iter()
            .any(|word| name.contains(word));
        if !secret {
            continue;
        }
        used(value);
        // A key list: each key's seed on its own too.
        if let Ok(serde_json::Value::Array(keys)) = serde_json::from_str(value) {
            for seed in keys.iter().filter_map(|k| k["seed"].as_str()) {
                used(seed);
            }
        }
    }
}

/// A secret found in a log: where, and which one.
#[derive(Debug, PartialEq, Eq)]
pub struct Leak {
    /// The log file.
    pub file: String,
    /// Its 1-based line number.
    pub line: usize,
    /// The secret, shortened to its first characters.
    pub secret: String,
}

/// Every occurrence of a recorded secret in the log files of `dir`, plus
/// how many log files and secrets were read.
pub fn scan(dir: &Path) -> (Vec<Leak>, usize, usize) {
    let secrets: Vec<String> = std::fs::read_to_string(dir.join(SECRETS_FILE))
        .unwrap_or_default()
        .lines()
        .filter(|s| s.len() >= MIN_SECRET_LEN)
        .map(str::to_string)
        .collect();
    let mut leaks = Vec::new();
    let mut files = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    entries.sort();
    for path in entries {
        files += 1;
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        for (n, line) in text.lines().enumerate() {
            for secret in secrets.iter().filter(|s| line.contains(s.as_str())) {
                leaks.push(Leak {
                    file: path.file_name().unwrap().to_string_lossy().into_owned(),
                    line: n + 1,
                    secret: secret.chars().take(6).chain("…".chars()).collect(),
                });
            }
        }
    }
    (leaks, files, secrets.len())
}

/// Run after the whole suite (by `infra/scripts/test.sh`, with the suite's
/// `BV_SUITE_LOG_DIR`): ignored in a plain `cargo test`, where the other
/// tests would still be writing.
#[test]
#[ignore = "runs after the suite: infra/scripts/test.sh"]
fn the_suite_logs_hold_none_of_the_secrets_it_used() {
    let dir = std::env::var_os("BV_SUITE_LOG_DIR")
        .map(PathBuf::from)
        .expect("BV_SUITE_LOG_DIR names the log directory of the suite's run");
    let (leaks, files, secrets) = scan(&dir);
    eprintln!(
        "scanned {files} app logs in {} for {secrets} secrets",
        dir.display()
    );
    // A scan of nothing shows nothing: the suite starts hundreds of apps
    // and the auth tests alone use dozens of secrets.
    assert!(files >= 50, "only {files} app logs in {}", dir.display());
    assert!(secrets >= 10, "only {secrets} secrets recorded");
    assert!(
        leaks.is_empty(),
        "secrets in the logs ({}):\n{}",
        leaks.len(),
        leaks
            .iter()
            .take(50)
            .map(|l| format!("  {} line {}: {}", l.file, l.line, l.secret))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn a_planted_secret_is_found_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(SECRETS_FILE),
        "hunter2-hunter2\nseed-AAAAAAAA\nshort\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("app-00000.log"),
        "starting\n{\"msg\":\"login\",\"password\":\"hunter2-hunter2\"}\nshort\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("app-00001.log"), "nothing here\n").unwrap();
    let (leaks, files, secrets) = scan(dir.path());
    assert_eq!((files, secrets), (2, 2));
    assert_eq!(
        leaks,
        vec![Leak {
            file: "app-00000.log".into(),
            line: 2,
            secret: "hunter…".into(),
        }]
    );
}
