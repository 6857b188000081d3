//! Servers of a test's own, for the integration tests of several crates:
//! stopped and started again without disturbing the other tests, which
//! share the machine's PostgreSQL (5432).
//!
//! - [`free_port`]: a port below the kernel's ephemeral range.
//! - [`PrivatePostgres`]: a real PostgreSQL cluster of its own (`initdb`
//!   and `pg_ctl` from `/usr/lib/postgresql/<version>/bin`, trust
//!   authentication, a free port, its data in a temporary directory; run
//!   as the `postgres` user when the tests run as root, since PostgreSQL
//!   refuses root), stopped with `pg_ctl stop -m immediate` (like a crash:
//!   sessions cut, no checkpoint) and started again on the same data.
//! - [`PrivateRegistry`]: a real OCI registry (Debian's `docker-registry`,
//!   the CNCF distribution server) on a free port, its storage in a
//!   temporary directory, optionally behind basic authentication.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A free port for a server the test stops and starts again, below the
/// kernel's ephemeral range: while the server is down, a port in that range
/// may be taken as the local port of any outgoing connection on the machine
/// (the suite makes thousands), and the restart would find it in use.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let from = 20_000.min(ephemeral_from.saturating_sub(4_000)).max(1024);
    let span = ephemeral_from - from;
    // Processes of the suite run at once start at different places.
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let port = (from + start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {from}..{ephemeral_from}");
}

/// Waits until something listens on `port` (30 s at most).
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The newest installed PostgreSQL's `bin` directory.
fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries under /usr/lib/postgresql")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no initdb under /usr/lib/postgresql")
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A PostgreSQL cluster of the test's own.
pub struct PrivatePostgres {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
    running: bool,
    settings: String,
}

impl PrivatePostgres {
    /// A new cluster, started.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A new cluster with server settings of its own (`name`, `value`, as
    /// in `postgresql.conf`, e.g. `("wal_level", "logical")`), started.
    pub fn start_with(settings: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = running_as_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let mut pg = Self {
            port: free_port(),
            dir,
            bin: pg_bin(),
            as_postgres,
            running: false,
            settings: settings
                .iter()
                .map(|(name, value)| format!(" -c {name}={value}"))
                .collect(),
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        pg.restart();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `tool` of the cluster's PostgreSQL, run as `postgres` when needed.
    fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&program);
            cmd
        } else {
            Command::new(&program)
        };
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        cmd
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let mut cmd = self.command(tool);
        let out = cmd
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts it again on the same port and data (crash recovery first
    /// when it was stopped with `immediate`).
    pub fn restart(&mut self) {
        let options = self.start_options();
        let data = self.data();
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
        self.running = true;
    }

    /// Stops it like a crash: every session cut at once.
    pub fn stop(&mut self) {
        let data = self.data();
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        self.running = false;
    }

    /// Shell command lines that stop it like [`PrivatePostgres::stop`] and
    /// start it like [`PrivatePostgres::restart`], for tools that run
    /// commands (game days); the caller keeps it running in the end.
    pub fn shell_commands(&self) -> (String, String) {
        let pg_ctl = format!(
            "{}{}",
            if self.as_postgres {
                "runuser -u postgres -- "
            } else {
                ""
            },
            self.bin.join("pg_ctl").display()
        );
        let data = self.data();
        let stop = format!("{pg_ctl} -D {} -m immediate -w stop", data.display());
        let start = format!(
            "{pg_ctl} -D {} -l {} -o '{}' -w start",
            data.display(),
            self.dir.path().join("server.log").display(),
            self.start_options()
        );
        (stop, start)
    }

    fn start_options(&self) -> String {
        format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200{}",
            self.port,
            self.dir.path().display(),
            self.settings
        )
    }

    /// Its `postgres` database.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running {
            let data = self.data();
            let _ = self
                .command("pg_ctl")
                .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A user the registry started by [`PrivateRegistry::start_with_auth`]
/// accepts, and its password.
pub const REGISTRY_USER: (&str, &str) = ("bv-test", "bv-test-password");

/// `REGISTRY_USER`'s password, bcrypt-hashed as the registry's htpasswd
/// file wants it.
const REGISTRY_USER_BCRYPT: &str = "$2b$12$p5faMYA3dQUPzcTfAlVNEus1iLKUo1E6PWPorGuuyi9SIR/eYrmAa";

/// An OCI registry of the test's own.
pub struct PrivateRegistry {
    dir: tempfile::TempDir,
    port: u16,
    child: std::process::Child,
}

impl PrivateRegistry {
    /// Starts an anonymous registry.
    pub fn start() -> Self {
        Self::start_inner(false)
    }

    /// Starts a registry that accepts only [`REGISTRY_USER`].
    pub fn start_with_auth() -> Self {
        Self::start_inner(true)
    }

    fn start_inner(auth: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let storage = dir.path().join("storage");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        if auth {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(
                &htpasswd,
                format!("{}:{REGISTRY_USER_BCRYPT}\n", REGISTRY_USER.0),
            )
            .expect("htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: bv-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("docker-registry (Debian package docker-registry) must be installed");
        wait_for_port(port, "docker-registry");
        Self { dir, port, child }
    }

    /// `127.0.0.1:<port>`, the host part of a reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The file holding the blob with `digest` (`sha256:<hex>`) in the
    /// registry's storage, for tests that tamper with it.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
