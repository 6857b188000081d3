//! The breaker's Lua script (what instances share in Redis) and its Rust
//! twin (`BreakerState`, what an instance keeps alone) make the same
//! decisions: one long pseudo-random sequence of calls, failures, probes
//! and late results goes through both, against a real `redis-server` of
//! the test's own (a free port, no persistence, stopped at the end).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bv_resilience::{BreakerConfig, BreakerState, Permit, State, SCRIPT};

/// A `redis-server` of this test's own.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server (Debian package redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A reply, as far as the script's replies go.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Text(String),
    Int(i64),
    Nil,
    List(Vec<Reply>),
}

/// Just enough of RESP for EVAL.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        Self {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn command(&mut self, args: &[&str]) -> Reply {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend(format!("${}\r\n", a.len()).bytes());
            out.extend(a.bytes());
            out.extend(b"\r\n");
        }
        self.writer.write_all(&out).unwrap();
        self.read()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line.trim_end().to_string()
    }

    fn read(&mut self) -> Reply {
        let line = self.line();
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Reply::Text(rest.to_string()),
            "-" => panic!("redis error: {rest}"),
            ":" => Reply::Int(rest.parse().unwrap()),
            "$" => {
                let len: i64 = rest.parse().unwrap();
                if len < 0 {
                    return Reply::Nil;
                }
                let mut buf = vec![0; len as usize + 2];
                self.reader.read_exact(&mut buf).unwrap();
                buf.truncate(len as usize);
                Reply::Text(String::from_utf8(buf).unwrap())
            }
            "*" => {
                let n: usize = rest.parse().unwrap();
                Reply::List((0..n).map(|_| self.read()).collect())
            }
            other => panic!("unexpected reply type {other}"),
        }
    }

    fn eval(&mut self, key: &str, argv: Vec<String>) -> Vec<Reply> {
        let mut args = vec!["EVAL", SCRIPT, "1", key];
        args.extend(argv.iter().map(String::as_str));
        match self.command(&args) {
            Reply::List(items) => items,
            other => panic!("script answered {other:?}"),
        }
    }

    fn acquire(&mut self, key: &str, c: &BreakerConfig, now: u64) -> Permit {
        let reply = self.eval(key, c.script_argv("acquire", now, false));
        match (&reply[0], &reply[1]) {
            (Reply::Text(t), _) if t == "allow" => Permit::Allow,
            (Reply::Text(t), _) if t == "probe" => Permit::Probe,
            (Reply::Text(t), Reply::Int(ms)) if t == "reject" => Permit::Reject {
                retry_after: Duration::from_millis(*ms as u64),
            },
            _ => panic!("acquire answered {reply:?}"),
        }
    }

    fn record(&mut self, key: &str, c: &BreakerConfig, now: u64, ok: bool, probe: bool) -> State {
        let op = if ok { "success" } else { "failure" };
        match &self.eval(key, c.script_argv(op, now, probe))[0] {
            Reply::Text(s) => State::parse(s).unwrap(),
            other => panic!("record answered {other:?}"),
        }
    }
}

/// xorshift64*: the same sequence on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn run(config: BreakerConfig, seed: u64, steps: u32) -> [u32; 3] {
    let redis = Redis::start();
    let mut client = Client::connect(redis.port);
    let key = format!("breaker:test-{seed}");
    let mut model = BreakerState::default();
    let mut rng = Rng(seed);
    let mut now = 1_750_000_000_000u64;
    let mut seen = [0u32; 3];
    for step in 0..steps {
        now += rng.below(1_500);
        // Phases of health: the failure chance changes every 200 steps.
        let failure_pct = [5, 90, 40, 100, 0, 60][(step / 200) as usize % 6];
        let late = rng.below(10) == 0;
        if late {
            // The result of a call sent before the state changed.
            let ok = rng.below(100) >= failure_pct;
            let expected = model.record(&config, now, ok, false);
            assert_eq!(
                client.record(&key, &config, now, ok, false),
                expected,
                "step {step}"
            );
            continue;
        }
        let permit = model.acquire(&config, now);
        assert_eq!(client.acquire(&key, &config, now), permit, "step {step}");
        let probe = match permit {
            Permit::Allow => false,
            Permit::Probe => true,
            Permit::Reject { .. } => {
                seen[1] += 1;
                continue;
            }
        };
        seen[if probe { 2 } else { 0 }] += 1;
        // Sometimes the probe never reports back.
        if probe && rng.below(5) == 0 {
            continue;
        }
        now += rng.below(300);
        let ok = rng.below(100) >= failure_pct;
        let expected = model.record(&config, now, ok, probe);
        assert_eq!(
            client.record(&key, &config, now, ok, probe),
            expected,
            "step {step}"
        );
    }
    seen
}

#[test]
fn the_lua_script_decides_as_the_rust_model_does() {
    let seen = run(BreakerConfig::DEFAULT, 0x5EED, 3_000);
    eprintln!(
        "default rules: allowed {}, rejected {}, probes {}",
        seen[0], seen[1], seen[2]
    );
    assert!(
        seen.iter().all(|n| *n > 20),
        "every path was taken: {seen:?}"
    );

    let quick = BreakerConfig {
        consecutive_failures: 3,
        min_calls: 4,
        failure_rate_pct: 30,
        window: Duration::from_secs(5),
        open_for: Duration::from_secs(2),
        probe_lease: Duration::from_millis(700),
    };
    let seen = run(quick, 0xC0FFEE, 3_000);
    eprintln!(
        "quick rules: allowed {}, rejected {}, probes {}",
        seen[0], seen[1], seen[2]
    );
    assert!(
        seen.iter().all(|n| *n > 20),
        "every path was taken: {seen:?}"
    );
}
