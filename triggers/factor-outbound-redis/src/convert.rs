//! Between Redis replies and errors and their WIT forms.

use redis::{ErrorKind, Value};

use crate::wit::{Error as WitError, RedisResult};

/// A failed command as the guest sees it: wrong-type replies and values that
/// are not integers are `type-error` (as the WIT documents for `incr`),
/// everything else `other` with the server's or client's message.
pub(crate) fn error(e: redis::RedisError) -> WitError {
    let not_integer = e.kind() == ErrorKind::ResponseError
        && e.detail()
            .is_some_and(|d| d.contains("not an integer") || d.contains("not a valid float"));
    if e.kind() == ErrorKind::TypeError || not_integer || e.code() == Some("WRONGTYPE") {
        return WitError::TypeError;
    }
    WitError::Other(e.to_string())
}

/// The reply of `execute` as a flat list, as Spin returns it: arrays, sets
/// and maps are flattened in order (a map as key, value, key, value, ...),
/// simple strings become `status`, integers and booleans `int64`, bulk
/// strings, doubles and big numbers `binary` (their text), `nil` stays `nil`.
pub(crate) fn results(value: Value) -> Result<Vec<RedisResult>, WitError> {
    let mut out = Vec::new();
    append(&mut out, value)?;
    Ok(out)
}

fn append(out: &mut Vec<RedisResult>, value: Value) -> Result<(), WitError> {
    match value {
        Value::Nil => out.push(RedisResult::Nil),
        Value::Int(i) => out.push(RedisResult::Int64(i)),
        Value::BulkString(bytes) => out.push(RedisResult::Binary(bytes)),
        Value::SimpleString(s) => out.push(RedisResult::Status(s)),
        Value::Okay => out.push(RedisResult::Status("OK".to_string())),
        Value::Array(values) | Value::Set(values) => {
            for v in values {
                append(out, v)?;
            }
        }
        Value::Map(pairs) => {
            for (k, v) in pairs {
                append(out, k)?;
                append(out, v)?;
            }
        }
        Value::Attribute { data, .. } => append(out, *data)?,
        Value::Double(d) => out.push(RedisResult::Binary(d.to_string().into_bytes())),
        Value::Boolean(b) => out.push(RedisResult::Int64(b as i64)),
        Value::VerbatimString { text, .. } => out.push(RedisResult::Binary(text.into_bytes())),
        Value::BigNumber(n) => out.push(RedisResult::Binary(n.to_string().into_bytes())),
        Value::Push { .. } => {
            return Err(WitError::Other(
                "unexpected push message in a command reply".to_string(),
            ))
        }
        Value::ServerError(e) => {
            return Err(error(redis::RedisError::from(e)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_replies_flatten_in_order() {
        let value = Value::Array(vec![
            Value::Int(1),
            Value::Nil,
            Value::Array(vec![Value::BulkString(b"x".to_vec()), Value::Okay]),
            Value::SimpleString("PONG".into()),
            Value::Boolean(true),
            Value::Double(1.5),
        ]);
        let got = results(value).unwrap();
        assert!(matches!(got[0], RedisResult::Int64(1)));
        assert!(matches!(got[1], RedisResult::Nil));
        assert!(matches!(&got[2], RedisResult::Binary(b) if b == b"x"));
        assert!(matches!(&got[3], RedisResult::Status(s) if s == "OK"));
        assert!(matches!(&got[4], RedisResult::Status(s) if s == "PONG"));
        assert!(matches!(got[5], RedisResult::Int64(1)));
        assert!(matches!(&got[6], RedisResult::Binary(b) if b == b"1.5"));
    }
}
