//! `bv-load chaos proxy` in front of the machine's Redis (127.0.0.1:6379):
//! commands on its standard input change what a real client sees.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends a PING and waits up to `wait` for the whole `+PONG\r\n`.
fn ping(stream: &mut TcpStream, wait: Duration) -> std::io::Result<String> {
    stream.set_read_timeout(Some(wait))?;
    stream.write_all(b"PING\r\n")?;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(b"\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

#[test]
fn commands_on_stdin_slow_hold_cut_and_refuse_a_real_redis_connection() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bv-load"))
        .args([
            "chaos",
            "proxy",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream",
            "127.0.0.1:6379",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut answers = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut say = |line: &str| -> String {
        writeln!(stdin, "{line}").unwrap();
        answers.next().unwrap().unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the proxy does not listen: {e}"),
        }
    };
    assert_eq!(
        ping(&mut conn, Duration::from_secs(5)).unwrap(),
        "+PONG\r\n"
    );

    let answer = say("latency 300");
    assert!(answer.starts_with("ok latency=300ms"), "{answer}");
    let start = Instant::now();
    assert_eq!(
        ping(&mut conn, Duration::from_secs(5)).unwrap(),
        "+PONG\r\n"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(550),
        "{:?}",
        start.elapsed()
    );

    say("latency 0");
    assert!(say("blackhole on").contains("blackhole=on"));
    assert!(
        ping(&mut conn, Duration::from_millis(500)).is_err(),
        "a blackhole answers nothing"
    );
    assert!(say("blackhole off").contains("open=1"));
    // The held PING is delivered now: its answer comes, then this one's.
    let mut late = String::new();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    while late.len() < "+PONG\r\n".len() {
        let n = conn.read(&mut buf).unwrap();
        late.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(late.starts_with("+PONG\r\n"), "{late:?}");

    assert!(say("reset").starts_with("ok"));
    assert!(
        ping(&mut conn, Duration::from_secs(2)).is_err(),
        "a reset connection is gone"
    );

    say("refuse on");
    let mut refused = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert!(
        ping(&mut refused, Duration::from_secs(2)).is_err(),
        "refused"
    );
    say("clear");
    let mut fresh = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(
        ping(&mut fresh, Duration::from_secs(5)).unwrap(),
        "+PONG\r\n"
    );

    let bad = say("latency soon");
    assert!(bad.starts_with("error latency: `soon`"), "{bad}");
    let unknown = say("explode");
    assert!(unknown.starts_with("error unknown command"), "{unknown}");

    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
