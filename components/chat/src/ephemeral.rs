//! What the chat keeps in Redis because it may be lost: who is online
//! (each user's open connections), who is typing, and each user's send
//! rate. Losing Redis loses none of the messages, only these.

use bv_service::{Problem, ProblemKind};
use spin_sdk::redis::{Connection, RedisParameter, RedisResult};
use spin_sdk::variables::{self, Error};

/// How many messages a user sends per minute unless
/// `chat_messages_per_minute` says otherwise.
const DEFAULT_MESSAGES_PER_MINUTE: i64 = 30;
/// How long a typing indicator lasts without another keystroke; also the
/// least time between two pushes of it.
const TYPING_MS: i64 = 3_000;
/// A user's set of connections outlives a process that died without
/// closing them by at most this long.
const PRESENCE_TTL_SECONDS: i64 = 24 * 60 * 60;

/// Counts a send in the user's current minute. KEYS: the counter.
/// ARGV: window seconds. Answers the count and the window's seconds left.
const COUNT: &str = r#"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('TTL', KEYS[1])}
"#;

/// How many connections each key's set holds. KEYS: the sets.
const ONLINE: &str = r#"
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('SCARD', key) end
return out
"#;

/// The chat's Redis, for one request.
pub struct Ephemeral {
    conn: Connection,
    prefix: String,
    per_minute: i64,
}

fn bin(s: impl Into<String>) -> RedisParameter {
    RedisParameter::Binary(s.into().into_bytes())
}

fn int(n: i64) -> RedisParameter {
    RedisParameter::Int64(n)
}

fn number(result: &RedisResult) -> i64 {
    match result {
        RedisResult::Int64(n) => *n,
        RedisResult::Binary(b) => String::from_utf8_lossy(b).parse().unwrap_or(0),
        RedisResult::Status(s) => s.parse().unwrap_or(0),
        RedisResult::Nil => 0,
    }
}

fn unavailable(e: spin_sdk::redis::Error) -> Problem {
    eprintln!("chat: redis: {e:?}");
    Problem::unavailable("the chat's presence store is unavailable")
}

async fn optional(name: &str) -> Result<Option<String>, Problem> {
    match variables::get(name).await {
        Ok(value) => Ok(Some(value)),
        Err(Error::Undefined(_)) => Ok(None),
        Err(e) => Err(Problem::internal(format!("variable `{name}`: {e:?}"))),
    }
}

impl Ephemeral {
    /// Connects to `redis_url`; keys start with `chat_key_prefix`.
    pub async fn open() -> Result<Self, Problem> {
        let url = variables::get("redis_url")
            .await
            .map_err(|e| Problem::internal(format!("variable `redis_url`: {e:?}")))?;
        let per_minute = match optional("chat_messages_per_minute").await? {
            None => DEFAULT_MESSAGES_PER_MINUTE,
            Some(raw) => raw.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                Problem::internal(format!(
                    "variable `chat_messages_per_minute` = `{raw}`: not a positive integer"
                ))
            })?,
        };
        Ok(Self {
            conn: Connection::open(&url).await.map_err(unavailable)?,
            prefix: optional("chat_key_prefix").await?.unwrap_or_default(),
            per_minute,
        })
    }

    fn online_key(&self, user: &str) -> String {
        format!("{}chat:online:{user}", self.prefix)
    }

    /// Counts one message of `user`: 429 `rate-limited` past
    /// `chat_messages_per_minute` in the current minute, with
    /// `Retry-After`.
    pub async fn count_send(&self, user: &str) -> Result<(), Problem> {
        let key = format!("{}chat:rate:{user}", self.prefix);
        let reply = self
            .conn
            .execute("EVAL", [bin(COUNT), int(1), bin(key), int(60)])
            .await
            .map_err(unavailable)?;
        let (count, left) = (
            reply.first().map_or(0, number),
            reply.get(1).map_or(60, number).max(1),
        );
        if count > self.per_minute {
            return Err(Problem::new(
                429,
                ProblemKind::RateLimited,
                "Too many messages",
                format!(
                    "at most {} messages a minute; try again in {left} s",
                    self.per_minute
                ),
            )
            .with_header("retry-after", left.to_string()));
        }
        Ok(())
    }

    /// Records `connection` as one of `user`'s open connections.
    pub async fn connected(&self, user: &str, connection: &str) -> Result<(), Problem> {
        let key = self.online_key(user);
        self.conn
            .execute("SADD", [bin(key.clone()), bin(connection)])
            .await
            .map_err(unavailable)?;
        self.conn
            .execute("EXPIRE", [bin(key), int(PRESENCE_TTL_SECONDS)])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Forgets `connection`: whether `user` has none left.
    pub async fn disconnected(&self, user: &str, connection: &str) -> Result<bool, Problem> {
        let key = self.online_key(user);
        self.conn
            .execute("SREM", [bin(key.clone()), bin(connection)])
            .await
            .map_err(unavailable)?;
        let left = self
            .conn
            .execute("SCARD", [bin(key)])
            .await
            .map_err(unavailable)?;
        Ok(left.first().map_or(0, number) == 0)
    }

    /// `user`'s open connections.
    pub async fn connections(&self, user: &str) -> Result<Vec<String>, Problem> {
        let members = self
            .conn
            .execute("SMEMBERS", [bin(self.online_key(user))])
            .await
            .map_err(unavailable)?;
        Ok(members
            .into_iter()
            .filter_map(|m| match m {
                RedisResult::Binary(b) => String::from_utf8(b).ok(),
                _ => None,
            })
            .collect())
    }

    /// Which of `users` have a connection open, in their order.
    pub async fn online(&self, users: &[&str]) -> Result<Vec<bool>, Problem> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut params = vec![bin(ONLINE), int(users.len() as i64)];
        params.extend(users.iter().map(|u| bin(self.online_key(u))));
        let counts = self
            .conn
            .execute("EVAL", params)
            .await
            .map_err(unavailable)?;
        Ok(users
            .iter()
            .enumerate()
            .map(|(i, _)| counts.get(i).map_or(0, number) > 0)
            .collect())
    }

    /// Marks `user` typing in `room`: whether the room should be told
    /// (at most once per [`TYPING_MS`]).
    pub async fn typing(&self, room: &str, user: &str) -> Result<bool, Problem> {
        let key = format!("{}chat:typing:{room}:{user}", self.prefix);
        let set = self
            .conn
            .execute(
                "SET",
                [bin(key), bin("1"), bin("PX"), int(TYPING_MS), bin("NX")],
            )
            .await
            .map_err(unavailable)?;
        Ok(!matches!(set.first(), None | Some(RedisResult::Nil)))
    }
}
