//! Builds the components a Spin manifest lists (`bv build`, `bv up --build`).
//!
//! A manifest's `[component.<id>.build]` sections hold standard Spin commands such
//! as `cargo build --target wasm32-wasip2 --release`. They are run as they are, with
//! `sh -c` in the component's working directory, on one of two toolchain routes:
//!
//! - [`Toolchain::Rustup`]: rustup's toolchain has the `wasm32-wasip2` standard
//!   library (`rustup target add wasm32-wasip2`). The environment is left untouched.
//! - [`Toolchain::DebianBuildStd`]: Debian's `rustc-web` (1.94 or newer) compiles
//!   the standard library from source (`-Z build-std`) and links against Debian's
//!   `wasi-libc`. The commands stay the same: the route is selected purely through
//!   the environment (see [`debian_env`]).
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let steps = vec![bv_build::BuildStep {
//!     component_id: "hello".into(),
//!     command: "cargo build --target wasm32-wasip2 --release".into(),
//!     workdir: "components/hello".into(),
//! }];
//! let toolchain = bv_build::detect_toolchain()?;
//! let mut progress = |msg: &str| eprintln!("{msg}");
//! bv_build::ensure_toolchain(toolchain, &mut progress)?;
//! bv_build::build(&steps, toolchain, &mut progress)?;
//! # Ok(())
//! # }
//! ```

use std::ffi::OsString;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// One component's build: its manifest's `build.command`, run in `workdir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildStep {
    /// The component's id in the manifest.
    pub component_id: String,
    /// The shell command to run (`sh -c`).
    pub command: String,
    /// The directory to run it in: the manifest's directory joined with the
    /// component's `build.workdir`, if any.
    pub workdir: PathBuf,
}

/// How `wasm32-wasip2` components are compiled on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toolchain {
    /// rustup's toolchain, with the `wasm32-wasip2` target installed.
    Rustup,
    /// Debian's `rustc-web` building the standard library from source.
    DebianBuildStd,
}

/// Debian packages that make up the [`Toolchain::DebianBuildStd`] route.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "rust-web-llvm",
    "lld-22",
    "wasi-libc",
];

/// The oldest Debian rustc accepted (spin-sdk 7's minimum Rust version).
pub const MIN_DEBIAN_RUSTC: (u32, u32) = (1, 94);

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUST_SRC: &str = "/usr/lib/rustlib/src/rust/library/std";
const WASI_LIBC_DIR: &str = "/usr/lib/wasm32-wasi";
const CRT1_REACTOR: &str = "/usr/lib/wasm32-wasi/crt1-reactor.o";
const DEBIAN_LLD: &str = "/usr/bin/rust-lld";

/// Picks the toolchain route: [`Toolchain::Rustup`] when the `rustc` on `PATH`
/// (rustup's) has a `wasm32-wasip2` standard library, else
/// [`Toolchain::DebianBuildStd`].
pub fn detect_toolchain() -> Result<Toolchain> {
    let output = match Command::new("rustc")
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()
    {
        Ok(output) => output,
        // No rustc at all: only the Debian route can be installed here.
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Toolchain::DebianBuildStd),
        Err(e) => return Err(e).context("running `rustc --print target-libdir`"),
    };
    let libdir = String::from_utf8_lossy(&output.stdout);
    if output.status.success() && has_std(Path::new(libdir.trim())) {
        Ok(Toolchain::Rustup)
    } else {
        Ok(Toolchain::DebianBuildStd)
    }
}

/// Whether `libdir` holds a compiled standard library (`libstd-*.rlib`).
fn has_std(libdir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(libdir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        name.starts_with("libstd-") && name.ends_with(".rlib")
    })
}

/// Makes sure `toolchain` can build components, installing the Debian packages
/// of [`Toolchain::DebianBuildStd`] with `apt-get` if any part is missing.
///
/// The rustup route needs nothing more ([`detect_toolchain`] only picks it when it
/// works). Progress messages go to `progress`; apt's own output is passed through.
pub fn ensure_toolchain(toolchain: Toolchain, progress: &mut dyn FnMut(&str)) -> Result<()> {
    if toolchain == Toolchain::Rustup {
        return Ok(());
    }
    let missing = missing_debian_parts();
    if missing.is_empty() {
        return Ok(());
    }
    let packages = DEBIAN_PACKAGES.join(" ");
    progress(&format!(
        "The wasm32-wasip2 toolchain is incomplete ({}); installing Debian packages: {packages}",
        missing.join("; ")
    ));
    if !is_root() {
        bail!(
            "the wasm32-wasip2 toolchain is incomplete ({}) and installing it needs root: \
             run `apt-get install -y {packages}` as root, or `rustup target add wasm32-wasip2`",
            missing.join("; ")
        );
    }
    if !apt_get(&["install", "-y"], progress)? {
        progress("apt-get install failed; running apt-get update and trying again");
        if !apt_get(&["update"], progress)? {
            bail!("`apt-get update` failed");
        }
        if !apt_get(&["install", "-y"], progress)? {
            bail!("`apt-get install -y {packages}` failed");
        }
    }
    let missing = missing_debian_parts();
    if !missing.is_empty() {
        bail!(
            "the Debian wasm32-wasip2 toolchain is still incomplete after installing {packages}: {}",
            missing.join("; ")
        );
    }
    progress("Installed the Debian wasm32-wasip2 toolchain");
    Ok(())
}

/// Runs `apt-get <args>` (plus the packages for `install`); `Ok(false)` if it failed.
fn apt_get(args: &[&str], progress: &mut dyn FnMut(&str)) -> Result<bool> {
    let mut cmd = Command::new("apt-get");
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    if args.first() == Some(&"install") {
        cmd.args(DEBIAN_PACKAGES);
    }
    progress(&format!("Running apt-get {}", args.join(" ")));
    match cmd.status() {
        Ok(status) => Ok(status.success()),
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "apt-get not found: the Debian wasm32-wasip2 toolchain can't be installed on this \
             machine; install rustup's target instead (`rustup target add wasm32-wasip2`)"
        ),
        Err(e) => Err(e).context("running apt-get"),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// What the Debian route lacks on this machine, one description per part.
fn missing_debian_parts() -> Vec<String> {
    let mut missing = Vec::new();
    match Command::new(DEBIAN_RUSTC).arg("-vV").output() {
        Ok(out) if out.status.success() => {
            let info = String::from_utf8_lossy(&out.stdout);
            match parse_release(&info) {
                Some(v) if v >= MIN_DEBIAN_RUSTC => {}
                v => missing.push(format!(
                    "{DEBIAN_RUSTC} is {}, not >= {}.{}",
                    v.map_or("of unknown version".into(), |(a, b)| format!("{a}.{b}")),
                    MIN_DEBIAN_RUSTC.0,
                    MIN_DEBIAN_RUSTC.1
                )),
            }
            let host = info
                .lines()
                .find_map(|l| l.strip_prefix("host: "))
                .unwrap_or("x86_64-unknown-linux-gnu");
            let ld = format!("/usr/lib/rustlib/{host}/bin/wasm-component-ld");
            if !Path::new(&ld).exists() {
                missing.push(format!("no {ld}"));
            }
        }
        _ => missing.push(format!("no working {DEBIAN_RUSTC}")),
    }
    for path in [DEBIAN_CARGO, DEBIAN_RUST_SRC, CRT1_REACTOR, DEBIAN_LLD] {
        // `exists` follows symlinks: rust-lld -> lld-22 -> llvm-22's lld.
        if !Path::new(path).exists() {
            missing.push(format!("no {path}"));
        }
    }
    missing
}

/// `(major, minor)` of the `release:` line of `rustc -vV`.
fn parse_release(verbose_version: &str) -> Option<(u32, u32)> {
    let release = verbose_version
        .lines()
        .find_map(|l| l.strip_prefix("release: "))?;
    let mut parts = release.trim().split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The environment variables the [`Toolchain::DebianBuildStd`] route sets for a
/// build command, given the current `PATH`, `RUSTFLAGS` and
/// `CARGO_ENCODED_RUSTFLAGS`:
///
/// - `PATH` with `/usr/bin` first, so `cargo` is Debian's;
/// - `RUSTC=/usr/bin/rustc` and `RUSTC_BOOTSTRAP=1` (for `-Z` on a stable compiler);
/// - `CARGO_UNSTABLE_BUILD_STD=std,panic_abort`, the environment form of
///   `-Z build-std=std,panic_abort`;
/// - `CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS`, linking against Debian's wasi-libc. As
///   `RUSTFLAGS` (or `CARGO_ENCODED_RUSTFLAGS`) would take precedence over it, those
///   get the same flags appended when they are set.
pub fn debian_env(
    path: Option<OsString>,
    rustflags: Option<String>,
    encoded_rustflags: Option<String>,
) -> Vec<(String, OsString)> {
    let flags = [
        "-C",
        "link-self-contained=no",
        "-L",
        &format!("native={WASI_LIBC_DIR}"),
        "-C",
        &format!("link-arg={CRT1_REACTOR}"),
    ]
    .join(" ");
    let mut paths = vec![PathBuf::from("/usr/bin")];
    if let Some(path) = &path {
        paths.extend(std::env::split_paths(path));
    }
    let path = std::env::join_paths(paths).unwrap_or_else(|_| "/usr/bin".into());
    let mut env = vec![
        ("PATH".to_owned(), path),
        ("RUSTC".to_owned(), DEBIAN_RUSTC.into()),
        ("RUSTC_BOOTSTRAP".to_owned(), "1".into()),
        (
            "CARGO_UNSTABLE_BUILD_STD".to_owned(),
            "std,panic_abort".into(),
        ),
        (
            "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS".to_owned(),
            flags.clone().into(),
        ),
    ];
    if let Some(encoded) = encoded_rustflags.filter(|f| !f.is_empty()) {
        let extra = flags.split(' ').collect::<Vec<_>>().join("\x1f");
        env.push((
            "CARGO_ENCODED_RUSTFLAGS".to_owned(),
            format!("{encoded}\x1f{extra}").into(),
        ));
    } else if let Some(rustflags) = rustflags.filter(|f| !f.trim().is_empty()) {
        env.push((
            "RUSTFLAGS".to_owned(),
            format!("{rustflags} {flags}").into(),
        ));
    }
    env
}

/// One command to run, and the components it builds.
#[derive(Debug, PartialEq, Eq)]
struct Job<'a> {
    command: &'a str,
    workdir: &'a Path,
    components: Vec<&'a str>,
}

/// Groups the steps by identical (command, workdir), in order of first appearance.
fn plan(steps: &[BuildStep]) -> Vec<Job<'_>> {
    let mut jobs: Vec<(PathBuf, Job)> = Vec::new();
    for step in steps {
        let key = std::fs::canonicalize(&step.workdir).unwrap_or_else(|_| step.workdir.clone());
        match jobs
            .iter_mut()
            .find(|(k, job)| *k == key && job.command == step.command)
        {
            Some((_, job)) => job.components.push(&step.component_id),
            None => jobs.push((
                key,
                Job {
                    command: &step.command,
                    workdir: &step.workdir,
                    components: vec![&step.component_id],
                },
            )),
        }
    }
    jobs.into_iter().map(|(_, job)| job).collect()
}

/// Runs the build commands of `steps` on `toolchain`, each distinct
/// (command, workdir) pair once, stopping at the first failure.
///
/// Each command runs as `sh -c <command>` in its workdir, with the standard
/// streams inherited; `progress` is told which components each one builds.
/// A `CARGO_TARGET_DIR` meant for the host build is not passed on: the
/// manifest's `source` paths point into the components' own target dir.
pub fn build(
    steps: &[BuildStep],
    toolchain: Toolchain,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let env = match toolchain {
        Toolchain::Rustup => Vec::new(),
        Toolchain::DebianBuildStd => debian_env(
            std::env::var_os("PATH"),
            std::env::var("RUSTFLAGS").ok(),
            std::env::var("CARGO_ENCODED_RUSTFLAGS").ok(),
        ),
    };
    let jobs = plan(steps);
    for job in &jobs {
        let names = job.components.join(", ");
        let noun = if job.components.len() == 1 {
            "component"
        } else {
            "components"
        };
        progress(&format!(
            "Building {noun} {names} with `{}` in {}",
            job.command,
            job.workdir.display()
        ));
        let status = Command::new("sh")
            .arg("-c")
            .arg(job.command)
            .current_dir(job.workdir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .status()
            .with_context(|| {
                format!(
                    "building {noun} {names}: could not run `{}` in {}",
                    job.command,
                    job.workdir.display()
                )
            })?;
        if !status.success() {
            bail!(
                "building {noun} {names} failed: `{}` in {} exited with {status}",
                job.command,
                job.workdir.display()
            );
        }
    }
    progress(&format!("Finished building {} component(s)", steps.len()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, command: &str, workdir: &Path) -> BuildStep {
        BuildStep {
            component_id: id.into(),
            command: command.into(),
            workdir: workdir.into(),
        }
    }

    #[test]
    fn has_std_needs_a_std_rlib() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!has_std(dir.path()));
        assert!(!has_std(&dir.path().join("missing")));
        std::fs::write(dir.path().join("libcore-abc.rlib"), "").unwrap();
        assert!(!has_std(dir.path()));
        std::fs::write(dir.path().join("libstd-0123.rlib"), "").unwrap();
        assert!(has_std(dir.path()));
    }

    #[test]
    fn detect_is_consistent_with_rustups_libdir() {
        // On a machine without rustup's wasm32-wasip2 std this must be the Debian
        // route; with it, rustup's.
        let out = Command::new("rustc")
            .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
            .output();
        let expected = match out {
            Ok(out) if out.status.success() => {
                if has_std(Path::new(String::from_utf8_lossy(&out.stdout).trim())) {
                    Toolchain::Rustup
                } else {
                    Toolchain::DebianBuildStd
                }
            }
            _ => Toolchain::DebianBuildStd,
        };
        assert_eq!(detect_toolchain().unwrap(), expected);
    }

    #[test]
    fn parses_rustc_release() {
        let info = "rustc 1.96.0 (ac68faa20 2026-05-25)\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\nrelease: 1.96.0\n";
        assert_eq!(parse_release(info), Some((1, 96)));
        assert_eq!(parse_release("release: 1.94.0-nightly\n"), Some((1, 94)));
        assert_eq!(parse_release("rustc 1.96.0\n"), None);
        assert!(parse_release("release: 1.93.1").unwrap() < MIN_DEBIAN_RUSTC);
    }

    #[test]
    fn plan_dedups_identical_commands_in_the_same_dir() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let ws = "cargo build --workspace --target wasm32-wasip2 --release";
        let steps = [
            step("one", ws, &a),
            step("two", ws, &b),
            step("three", ws, &a.join(".")),
            step("four", "make", &a),
            step("five", ws, &b.join("../a")),
        ];
        let jobs = plan(&steps);
        assert_eq!(
            jobs.iter()
                .map(|j| (j.command, j.components.clone()))
                .collect::<Vec<_>>(),
            [
                (ws, vec!["one", "three", "five"]),
                (ws, vec!["two"]),
                ("make", vec!["four"]),
            ]
        );
        assert_eq!(jobs[0].workdir, a);
    }

    #[test]
    fn debian_env_selects_debian_cargo_and_build_std() {
        let env = debian_env(Some("/root/.cargo/bin:/bin".into()), None, None);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("PATH").unwrap(), "/usr/bin:/root/.cargo/bin:/bin");
        assert_eq!(get("RUSTC").unwrap(), "/usr/bin/rustc");
        assert_eq!(get("RUSTC_BOOTSTRAP").unwrap(), "1");
        assert_eq!(get("CARGO_UNSTABLE_BUILD_STD").unwrap(), "std,panic_abort");
        assert_eq!(
            get("CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS").unwrap(),
            "-C link-self-contained=no -L native=/usr/lib/wasm32-wasi -C link-arg=/usr/lib/wasm32-wasi/crt1-reactor.o"
        );
        assert_eq!(get("RUSTFLAGS"), None);
        assert_eq!(get("CARGO_ENCODED_RUSTFLAGS"), None);

        let env = debian_env(None, Some("-C debuginfo=1".into()), None);
        let rustflags = env.iter().find(|(n, _)| n == "RUSTFLAGS").unwrap();
        assert!(rustflags
            .1
            .to_str()
            .unwrap()
            .starts_with("-C debuginfo=1 -C link-self-contained=no"));

        let env = debian_env(None, Some("-Cx".into()), Some("-Cy".into()));
        let encoded = env
            .iter()
            .find(|(n, _)| n == "CARGO_ENCODED_RUSTFLAGS")
            .unwrap();
        assert!(encoded
            .1
            .to_str()
            .unwrap()
            .starts_with("-Cy\x1f-C\x1flink-self-contained=no"));
        assert!(!env.iter().any(|(n, _)| n == "RUSTFLAGS"));
    }

    #[test]
    fn build_runs_each_distinct_command_once_in_its_workdir() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = "echo run >> log";
        let steps = [step("one", cmd, dir.path()), step("two", cmd, dir.path())];
        let mut messages = Vec::new();
        build(&steps, Toolchain::Rustup, &mut |m| {
            messages.push(m.to_owned())
        })
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("log")).unwrap(),
            "run\n"
        );
        assert!(messages[0].contains("components one, two"), "{messages:?}");
    }

    #[test]
    fn debian_route_environment_reaches_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let steps = [step(
            "env",
            "echo \"$RUSTC $RUSTC_BOOTSTRAP $CARGO_UNSTABLE_BUILD_STD\" > out; command -v cargo >> out",
            dir.path(),
        )];
        build(&steps, Toolchain::DebianBuildStd, &mut |_| {}).unwrap();
        let out = std::fs::read_to_string(dir.path().join("out")).unwrap();
        assert!(
            out.starts_with("/usr/bin/rustc 1 std,panic_abort\n"),
            "{out}"
        );
        if Path::new(DEBIAN_CARGO).exists() {
            assert!(out.ends_with("/usr/bin/cargo\n"), "{out}");
        }
    }

    #[test]
    fn failure_names_the_component_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let steps = [
            step("ok", "true", dir.path()),
            step("broken", "exit 3", dir.path()),
            step("never", "touch never", dir.path()),
        ];
        let err = build(&steps, Toolchain::Rustup, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("component broken"), "{err}");
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(!dir.path().join("never").exists());

        let missing = [step("lost", "true", &dir.path().join("nope"))];
        let err = build(&missing, Toolchain::Rustup, &mut |_| {}).unwrap_err();
        assert!(format!("{err:#}").contains("component lost"), "{err:#}");
    }
}
