//! Login brute-force protection: failed logins counted in Redis per account
//! and address, per address, and per account.
//!
//! - **Slow down.** From the `slow_after`-th failure of an account from one
//!   address, each further attempt of that pair waits first: 250 ms, then
//!   twice as long each time, at most 2 s.
//! - **Lock.** At `lock_after` failures of the pair (or `address_lock_after`
//!   failures from one address over any accounts: credential stuffing), the
//!   pair (or the address) is refused with 429 `login-throttled` and
//!   `Retry-After` for `lock_seconds`, right password or not.
//! - **Never the account as a whole.** Locking an account on everyone's
//!   failures would let anyone lock its owner out; so an account's owner
//!   logging in from an address without failures is never slowed or
//!   refused. Failures of one account from any address are still counted:
//!   at `account_alert_after` within the window a security event says the
//!   account is targeted (the credential-stuffing alert). The price: a
//!   distributed attack gets `lock_after - 1` guesses per address per lock
//!   period, each one an argon2id verification, behind the runtime's rate
//!   limit per address.
//! - **Unknown accounts look the same.** Counters are keyed by the email as
//!   typed (normalized, hashed), whether or not it has an account: the same
//!   delays, the same 429s, the same Redis calls.
//!
//! Counters expire `window_seconds` after their last failure; a successful
//! login clears its pair's. A lock's record holds its end; the first attempt
//! after the end removes it (the "unlocked" event) and starts the pair (or
//! address) afresh. Every lock and unlock is a log line (account as a hash
//! prefix, address; never a password) and a count in
//! `bv_app_login_lockouts_total{scope, event}`.
//!
//! Redis unreachable (250 ms): the check lets the login through (fail open,
//! `bv_app_login_guard_errors_total`, a warning), like the runtime's rate
//! limits: the argon2id cost and those limits still stand.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// The thresholds (variables of the same names, these are the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures of a pair after which its attempts are slowed.
    pub slow_after: u32,
    /// Failures of a pair that lock it.
    pub lock_after: u32,
    /// Failures from one address (any accounts) that lock it.
    pub address_lock_after: u32,
    /// Failures of one account (any addresses) that raise the alarm.
    pub account_alert_after: u32,
    /// How long a lock lasts.
    pub lock_seconds: u64,
    /// How long a counter lives after its last failure.
    pub window_seconds: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            slow_after: 3,
            lock_after: 10,
            address_lock_after: 30,
            account_alert_after: 50,
            lock_seconds: 15 * 60,
            window_seconds: 15 * 60,
        }
    }
}

/// The most an attempt is delayed.
pub const MAX_DELAY: Duration = Duration::from_secs(2);

impl Policy {
    /// How long an attempt of a pair with `failures` failures waits before
    /// its password is checked.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures < self.slow_after {
            return Duration::ZERO;
        }
        let doublings = (failures - self.slow_after).min(8);
        (Duration::from_millis(250) * 2u32.pow(doublings)).min(MAX_DELAY)
    }
}

/// The client's IP from `spin-client-addr` (`ip:port` or `[ip]:port`);
/// `None` without one (a chained request).
pub fn client_ip(header: Option<&str>) -> Option<IpAddr> {
    let text = header?.trim();
    text.parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| text.parse::<IpAddr>())
        .ok()
}

/// The account's key part: a hash of the normalized email, so that Redis
/// and the logs never hold the address itself.
pub fn account_id(email: &str) -> String {
    let digest = Sha256::digest(format!("bv-login:{email}").as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// The Redis keys of one login attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Failures of the account from the address.
    pub pair: String,
    /// Failures from the address.
    pub address: String,
    /// Failures of the account.
    pub account: String,
    /// The pair's lock record.
    pub pair_lock: String,
    /// The address's lock record.
    pub address_lock: String,
}

impl Keys {
    /// The keys under `prefix` for the account `account` (see
    /// [`account_id`]) and `client`.
    pub fn new(prefix: &str, account: &str, client: Option<IpAddr>) -> Self {
        let client = client.map_or_else(|| "internal".to_string(), |ip| ip.to_string());
        Self {
            pair: format!("{prefix}login:fail:pair:{account}:{client}"),
            address: format!("{prefix}login:fail:addr:{client}"),
            account: format!("{prefix}login:fail:acct:{account}"),
            pair_lock: format!("{prefix}login:lock:pair:{account}:{client}"),
            address_lock: format!("{prefix}login:lock:addr:{client}"),
        }
    }
}

/// Before the password is checked. KEYS: pair lock, address lock, pair
/// failures. ARGV: now (ms). Returns {pair lock ms left, address lock ms
/// left, pair failures}: ms left > 0 while locked, -1 when a lock just
/// ended (its record and its counter are removed), 0 without a lock.
pub const CHECK: &str = r#"
local now = tonumber(ARGV[1])
local out = {}
for i = 1, 2 do
  local untl = tonumber(redis.call('GET', KEYS[i]) or '0')
  if untl == 0 then
    out[i] = 0
  elseif now < untl then
    out[i] = untl - now
  else
    redis.call('DEL', KEYS[i])
    if i == 1 then redis.call('DEL', KEYS[3]) end
    out[i] = -1
  end
end
out[3] = tonumber(redis.call('GET', KEYS[3]) or '0')
return out
"#;

/// After a wrong password. KEYS: pair, address and account failures, pair
/// lock, address lock. ARGV: now (ms), window (ms), lock (ms), lock_after,
/// address_lock_after, how long a lock's record is kept (ms). Returns
/// {pair failures, address failures, account failures, pair locked now
/// (0/1), address locked now (0/1)}.
pub const FAIL: &str = r#"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local lock = tonumber(ARGV[3])
local counts = {}
for i = 1, 3 do
  counts[i] = redis.call('INCR', KEYS[i])
  redis.call('PEXPIRE', KEYS[i], window)
end
local locked = {0, 0}
local limits = {tonumber(ARGV[4]), tonumber(ARGV[5])}
for i = 1, 2 do
  if counts[i] >= limits[i] and redis.call('EXISTS', KEYS[3 + i]) == 0 then
    redis.call('SET', KEYS[3 + i], tostring(now + lock), 'PX', tonumber(ARGV[6]))
    locked[i] = 1
  end
end
return {counts[1], counts[2], counts[3], locked[1], locked[2]}
"#;

/// What the check before the password found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checked {
    /// Seconds until the pair's or the address's lock ends; `None`: not
    /// locked.
    pub locked_for: Option<u64>,
    /// Whether the pair's lock just ended.
    pub pair_unlocked: bool,
    /// Whether the address's lock just ended.
    pub address_unlocked: bool,
    /// The pair's failures so far.
    pub failures: u32,
}

impl Checked {
    /// Reads the [`CHECK`] script's reply.
    pub fn from_reply(pair_ms: i64, address_ms: i64, failures: i64) -> Self {
        let left = pair_ms.max(address_ms);
        Self {
            locked_for: (left > 0).then(|| (left as u64).div_ceil(1000).max(1)),
            pair_unlocked: pair_ms == -1,
            address_unlocked: address_ms == -1,
            failures: failures.clamp(0, u32::MAX as i64) as u32,
        }
    }
}

/// What recording a failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Failed {
    /// The account's failures from any address, in the window.
    pub account_failures: u64,
    /// Whether this failure locked the pair.
    pub pair_locked: bool,
    /// Whether this failure locked the address.
    pub address_locked: bool,
}

/// How long a Redis call of the guard may take before it counts as down.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// A lock's record outlives the lock by this much, so that its end can be
/// noticed (and logged) when the client comes back.
const RECORD_EXTRA_MS: u64 = 24 * 60 * 60 * 1000;

/// The guard of one login attempt.
pub struct Guard {
    redis: Option<String>,
    policy: Policy,
    keys: Keys,
    account: String,
    client: String,
}

impl Guard {
    /// The guard of a login for `email` (normalized) from `client`, with
    /// the component's settings.
    pub async fn new(email: &str, client: Option<IpAddr>) -> Self {
        let redis = variable("redis_url").await.filter(|u| !u.is_empty());
        if redis.is_none() {
            warn_once("login brute-force protection is off: the component has no `redis_url`");
        }
        let prefix = variable("login_key_prefix")
            .await
            .unwrap_or_else(|| "bv:auth:".into());
        let defaults = Policy::default();
        let policy = Policy {
            slow_after: number("login_slow_after", defaults.slow_after as u64).await as u32,
            lock_after: number("login_lock_after", defaults.lock_after as u64).await as u32,
            address_lock_after: number(
                "login_address_lock_after",
                defaults.address_lock_after as u64,
            )
            .await as u32,
            account_alert_after: number(
                "login_account_alert_after",
                defaults.account_alert_after as u64,
            )
            .await as u32,
            lock_seconds: number("login_lock_seconds", defaults.lock_seconds).await,
            window_seconds: number("login_window_seconds", defaults.window_seconds).await,
        };
        let account = account_id(email);
        Self {
            redis,
            policy,
            keys: Keys::new(&prefix, &account, client),
            account,
            client: client.map_or_else(|| "internal".into(), |ip| ip.to_string()),
        }
    }

    /// Before the password: whether the attempt is refused, and how long
    /// it waits. Logs and counts a lock that just ended.
    pub async fn check(&self) -> Checked {
        let keys = [
            &self.keys.pair_lock,
            &self.keys.address_lock,
            &self.keys.pair,
        ];
        let Some(reply) = self.eval(CHECK, &keys, &[now_ms()]).await else {
            return Checked::default();
        };
        let [pair, address, failures] = reply[..] else {
            return Checked::default();
        };
        let checked = Checked::from_reply(pair, address, failures);
        if checked.pair_unlocked {
            self.event("unlocked", "account_address", None);
        }
        if checked.address_unlocked {
            self.event("unlocked", "address", None);
        }
        checked
    }

    /// How long this attempt waits before its password is checked.
    pub fn delay(&self, checked: &Checked) -> Duration {
        self.policy.delay(checked.failures)
    }

    /// After a wrong password (or an unknown account): counts it, locks
    /// what crossed its threshold.
    pub async fn failed(&self) -> Failed {
        let p = &self.policy;
        let keys = [
            &self.keys.pair,
            &self.keys.address,
            &self.keys.account,
            &self.keys.pair_lock,
            &self.keys.address_lock,
        ];
        let args = [
            now_ms(),
            p.window_seconds * 1000,
            p.lock_seconds * 1000,
            p.lock_after as u64,
            p.address_lock_after as u64,
            p.lock_seconds * 1000 + RECORD_EXTRA_MS,
        ];
        let Some(reply) = self.eval(FAIL, &keys, &args).await else {
            return Failed::default();
        };
        let [pair, address, account, pair_locked, address_locked] = reply[..] else {
            return Failed::default();
        };
        let failed = Failed {
            account_failures: account.max(0) as u64,
            pair_locked: pair_locked == 1,
            address_locked: address_locked == 1,
        };
        if failed.pair_locked {
            self.event("locked", "account_address", Some(pair));
        }
        if failed.address_locked {
            self.event("locked", "address", Some(address));
        }
        if failed.account_failures == p.account_alert_after as u64 {
            bv_service::telemetry::counter("login_targeted_accounts", &[], 1);
            log(
                "warn",
                "many failed logins for one account from any addresses",
                &[
                    ("event", "account_targeted".into()),
                    ("account", self.account.clone().into()),
                    ("failures", account.into()),
                    ("windowSeconds", p.window_seconds.into()),
                ],
            );
        }
        failed
    }

    /// After a successful login: the pair starts afresh.
    pub async fn succeeded(&self) {
        let keys = [&self.keys.pair];
        let _ = self
            .eval("return redis.call('DEL', KEYS[1])", &keys, &[])
            .await;
    }

    /// A lock or unlock: a log line and a count.
    fn event(&self, event: &str, scope: &str, failures: Option<i64>) {
        bv_service::telemetry::counter("login_lockouts", &[("scope", scope), ("event", event)], 1);
        let mut fields = vec![
            ("event", format!("login_{event}").into()),
            ("scope", scope.into()),
            ("account", self.account.clone().into()),
            ("client", self.client.clone().into()),
        ];
        if let Some(failures) = failures {
            fields.push(("failures", failures.into()));
            fields.push(("lockSeconds", self.policy.lock_seconds.into()));
        }
        let message = match (event, scope) {
            ("locked", "address") => "logins from an address locked after repeated failures",
            ("locked", _) => "logins to an account from an address locked after repeated failures",
            (_, "address") => "logins from an address unlocked",
            _ => "logins to an account from an address unlocked",
        };
        log("warn", message, &fields);
    }

    /// Runs `script`; `None` (counted, logged) when Redis does not answer.
    async fn eval(&self, script: &str, keys: &[&String], args: &[u64]) -> Option<Vec<i64>> {
        use spin_sdk::redis::{Connection, RedisParameter, RedisResult};
        let url = self.redis.as_ref()?;
        let mut params = vec![
            RedisParameter::Binary(script.as_bytes().to_vec()),
            RedisParameter::Int64(keys.len() as i64),
        ];
        params.extend(
            keys.iter()
                .map(|k| RedisParameter::Binary(k.as_bytes().to_vec())),
        );
        params.extend(
            args.iter()
                .map(|a| RedisParameter::Binary(a.to_string().into_bytes())),
        );
        let run = async {
            let conn = Connection::open(url).await?;
            conn.execute("EVAL", params).await
        };
        let error = match bv_resilience::within(run, spin_sdk::time::sleep(REDIS_TIMEOUT)).await {
            Ok(Ok(reply)) => {
                return Some(
                    reply
                        .iter()
                        .map(|r| match r {
                            RedisResult::Int64(n) => *n,
                            _ => 0,
                        })
                        .collect(),
                )
            }
            Ok(Err(e)) => format!("{e:?}"),
            Err(_) => format!("no answer within {} ms", REDIS_TIMEOUT.as_millis()),
        };
        bv_service::telemetry::counter("login_guard_errors", &[], 1);
        log(
            "warn",
            "login brute-force protection cannot reach Redis; the attempt is let through",
            &[("error", error.into())],
        );
        None
    }
}

async fn variable(name: &str) -> Option<String> {
    spin_sdk::variables::get(name).await.ok()
}

async fn number(name: &str, default: u64) -> u64 {
    match variable(name).await {
        Some(text) => match text.trim().parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => {
                warn_once(&format!(
                    "variable {name} is not a positive whole number; using {default}"
                ));
                default
            }
        },
        None => default,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One log line as a JSON object (`level`, `msg` and `fields`), which bv
/// logs with its fields.
fn log(level: &str, message: &str, fields: &[(&str, serde_json::Value)]) {
    let mut line = serde_json::Map::new();
    line.insert("level".into(), level.into());
    line.insert("msg".into(), message.into());
    for (name, value) in fields {
        line.insert((*name).into(), value.clone());
    }
    println!("{}", serde_json::Value::Object(line));
}

fn warn_once(message: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        log("warn", message, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_slow_down_progressively_and_stay_bounded() {
        let policy = Policy::default();
        let ms = |n| policy.delay(n).as_millis();
        assert_eq!([ms(0), ms(1), ms(2)], [0, 0, 0]);
        assert_eq!([ms(3), ms(4), ms(5), ms(6)], [250, 500, 1000, 2000]);
        assert_eq!(ms(9), 2000);
        assert_eq!(ms(u32::MAX), 2000);
    }

    #[test]
    fn the_client_is_the_address_without_its_port() {
        assert_eq!(
            client_ip(Some("203.0.113.9:4711")),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(
            client_ip(Some("[2001:db8::1]:443")),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(client_ip(Some("::1")), Some("::1".parse().unwrap()));
        assert_eq!(client_ip(Some("garbage")), None);
        assert_eq!(client_ip(None), None);
    }

    #[test]
    fn keys_name_neither_email_nor_password() {
        let account = account_id("alice@example.com");
        assert_eq!(account.len(), 24);
        assert_ne!(account, account_id("bob@example.com"));
        let keys = Keys::new("p:", &account, client_ip(Some("192.0.2.1:5")));
        assert_eq!(keys.pair, format!("p:login:fail:pair:{account}:192.0.2.1"));
        assert_eq!(keys.address_lock, "p:login:lock:addr:192.0.2.1");
        for key in [&keys.pair, &keys.address, &keys.account, &keys.pair_lock] {
            assert!(!key.contains("alice"), "{key}");
        }
        assert_eq!(
            Keys::new("p:", &account, None).address,
            "p:login:fail:addr:internal"
        );
    }

    #[test]
    fn check_replies_read_as_locks_and_unlocks() {
        assert_eq!(Checked::from_reply(0, 0, 4).locked_for, None);
        assert_eq!(Checked::from_reply(0, 0, 4).failures, 4);
        assert_eq!(Checked::from_reply(1500, 0, 10).locked_for, Some(2));
        assert_eq!(Checked::from_reply(0, 1, 0).locked_for, Some(1));
        let ended = Checked::from_reply(-1, 0, 0);
        assert!(ended.pair_unlocked && !ended.address_unlocked);
        assert_eq!(ended.locked_for, None);
    }
}
