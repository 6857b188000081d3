//! Values in both directions: guest [`ParameterValue`]s are bound (never
//! spliced into the SQL) through a [`ToSql`] that looks at the type the server
//! inferred for each placeholder; result cells are decoded by column type into
//! [`DbValue`]s. NUMERIC and INTERVAL have their own binary codecs so no
//! precision is lost (NUMERIC travels as a base-10 string, as the WIT says).

use std::error::Error as StdError;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use postgres_protocol::types as pgt;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, Kind, ToSql, Type};

use crate::bindings::spin::postgres::postgres::{
    DbDataType, DbValue, Interval, ParameterValue, RangeBoundKind,
};

type BoxErr = Box<dyn StdError + Sync + Send>;

/// A parameter the guest passed that cannot be sent as the placeholder's type.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ParamError(pub String);

/// A result cell that has no faithful WIT value (e.g. text that is not UTF-8).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

fn wrong(value: &ParameterValue, ty: &Type) -> BoxErr {
    Box::new(ParamError(format!(
        "a {} value cannot be bound to a parameter of type {}",
        param_kind(value),
        ty.name()
    )))
}

fn bad(msg: impl Into<String>) -> BoxErr {
    Box::new(ParamError(msg.into()))
}

/// The WIT case name of a parameter, for error messages.
pub fn param_kind(value: &ParameterValue) -> &'static str {
    match value {
        ParameterValue::Boolean(_) => "boolean",
        ParameterValue::Int8(_) => "int8",
        ParameterValue::Int16(_) => "int16",
        ParameterValue::Int32(_) => "int32",
        ParameterValue::Int64(_) => "int64",
        ParameterValue::Floating32(_) => "floating32",
        ParameterValue::Floating64(_) => "floating64",
        ParameterValue::Str(_) => "str",
        ParameterValue::Binary(_) => "binary",
        ParameterValue::Date(_) => "date",
        ParameterValue::Time(_) => "time",
        ParameterValue::Datetime(_) => "datetime",
        ParameterValue::Timestamp(_) => "timestamp",
        ParameterValue::Uuid(_) => "uuid",
        ParameterValue::Jsonb(_) => "jsonb",
        ParameterValue::Decimal(_) => "decimal",
        ParameterValue::RangeInt32(_) => "range-int32",
        ParameterValue::RangeInt64(_) => "range-int64",
        ParameterValue::RangeDecimal(_) => "range-decimal",
        ParameterValue::ArrayInt32(_) => "array-int32",
        ParameterValue::ArrayInt64(_) => "array-int64",
        ParameterValue::ArrayDecimal(_) => "array-decimal",
        ParameterValue::ArrayStr(_) => "array-str",
        ParameterValue::Interval(_) => "interval",
        ParameterValue::DbNull => "db-null",
    }
}

/// Types whose binary form is the UTF-8 text itself.
fn is_textual(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    ) || matches!(ty.kind(), Kind::Enum(_))
        || ty.name() == "citext"
}

/// One guest parameter, bound by the type the server inferred for it.
#[derive(Debug)]
pub struct Param<'a>(pub &'a ParameterValue);

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxErr> {
        use ParameterValue as P;
        let v = self.0;
        match v {
            P::DbNull => return Ok(IsNull::Yes),
            P::Boolean(b) if *ty == Type::BOOL => pgt::bool_to_sql(*b, out),
            P::Int8(_) | P::Int16(_) | P::Int32(_) | P::Int64(_) => {
                let n: i64 = match v {
                    P::Int8(n) => (*n).into(),
                    P::Int16(n) => (*n).into(),
                    P::Int32(n) => (*n).into(),
                    P::Int64(n) => *n,
                    _ => unreachable!(),
                };
                let range = |lo: i64, hi: i64| {
                    if n < lo || n > hi {
                        Err(bad(format!("{n} is out of range for type {}", ty.name())))
                    } else {
                        Ok(())
                    }
                };
                match *ty {
                    Type::CHAR => {
                        range(i8::MIN.into(), i8::MAX.into())?;
                        pgt::char_to_sql(n as i8, out)
                    }
                    Type::INT2 => {
                        range(i16::MIN.into(), i16::MAX.into())?;
                        pgt::int2_to_sql(n as i16, out)
                    }
                    Type::INT4 => {
                        range(i32::MIN.into(), i32::MAX.into())?;
                        pgt::int4_to_sql(n as i32, out)
                    }
                    Type::INT8 => pgt::int8_to_sql(n, out),
                    Type::NUMERIC => numeric_to_sql(&n.to_string(), out)?,
                    _ => return Err(wrong(v, ty)),
                }
            }
            P::Floating32(f) if *ty == Type::FLOAT4 => pgt::float4_to_sql(*f, out),
            P::Floating32(f) if *ty == Type::FLOAT8 => pgt::float8_to_sql((*f).into(), out),
            P::Floating64(f) if *ty == Type::FLOAT8 => pgt::float8_to_sql(*f, out),
            P::Floating64(f) if *ty == Type::FLOAT4 => pgt::float4_to_sql(*f as f32, out),
            P::Str(s) if is_textual(ty) => pgt::text_to_sql(s, out),
            P::Str(s) if *ty == Type::JSON => pgt::text_to_sql(s, out),
            P::Str(s) if *ty == Type::JSONB => {
                out.put_u8(1);
                pgt::text_to_sql(s, out)
            }
            P::Str(s) | P::Uuid(s) if *ty == Type::UUID => {
                let id = uuid::Uuid::parse_str(s)
                    .map_err(|e| bad(format!("`{s}` is not a UUID: {e}")))?;
                pgt::uuid_to_sql(*id.as_bytes(), out)
            }
            P::Str(s) | P::Decimal(s) if *ty == Type::NUMERIC => numeric_to_sql(s, out)?,
            P::Uuid(s) | P::Decimal(s) if is_textual(ty) => pgt::text_to_sql(s, out),
            P::Binary(b) if *ty == Type::BYTEA => pgt::bytea_to_sql(b, out),
            P::Binary(b) if is_textual(ty) => {
                let s = std::str::from_utf8(b).map_err(|e| {
                    bad(format!(
                        "binary value bound to {} is not valid UTF-8: {e}",
                        ty.name()
                    ))
                })?;
                pgt::text_to_sql(s, out)
            }
            P::Date((y, m, d)) if *ty == Type::DATE => {
                return date(*y, *m, *d)?.to_sql(ty, out);
            }
            P::Time((h, m, s, ns)) if *ty == Type::TIME => {
                return time(*h, *m, *s, *ns)?.to_sql(ty, out);
            }
            P::Datetime((y, mo, d, h, mi, s, ns))
                if *ty == Type::TIMESTAMP || *ty == Type::TIMESTAMPTZ =>
            {
                let dt = date(*y, *mo, *d)?.and_time(time(*h, *mi, *s, *ns)?);
                return timestamp_to_sql(dt, ty, out);
            }
            P::Timestamp(secs) if *ty == Type::INT8 => pgt::int8_to_sql(*secs, out),
            P::Timestamp(secs) if *ty == Type::TIMESTAMP || *ty == Type::TIMESTAMPTZ => {
                let dt = DateTime::<Utc>::from_timestamp(*secs, 0)
                    .ok_or_else(|| bad(format!("timestamp {secs} is out of range")))?;
                return timestamp_to_sql(dt.naive_utc(), ty, out);
            }
            P::Jsonb(bytes) if *ty == Type::JSONB || *ty == Type::JSON || is_textual(ty) => {
                let s = std::str::from_utf8(bytes)
                    .map_err(|e| bad(format!("jsonb value is not valid UTF-8: {e}")))?;
                if *ty == Type::JSONB {
                    out.put_u8(1);
                }
                pgt::text_to_sql(s, out)
            }
            P::RangeInt32((lo, hi)) if *ty == Type::INT4_RANGE => {
                range_to_sql(lo, hi, out, |n, out| {
                    pgt::int4_to_sql(*n, out);
                    Ok(())
                })?
            }
            P::RangeInt64((lo, hi)) if *ty == Type::INT8_RANGE => {
                range_to_sql(lo, hi, out, |n, out| {
                    pgt::int8_to_sql(*n, out);
                    Ok(())
                })?
            }
            P::RangeDecimal((lo, hi)) if *ty == Type::NUM_RANGE => {
                range_to_sql(lo, hi, out, |s, out| numeric_to_sql(s, out))?
            }
            P::ArrayInt32(a) if *ty == Type::INT4_ARRAY => return a.to_sql(ty, out),
            P::ArrayInt32(a) if *ty == Type::INT8_ARRAY => {
                let wide: Vec<Option<i64>> = a.iter().map(|n| n.map(i64::from)).collect();
                return wide.to_sql(ty, out);
            }
            P::ArrayInt64(a) if *ty == Type::INT8_ARRAY => return a.to_sql(ty, out),
            P::ArrayStr(a) if matches!(ty.kind(), Kind::Array(m) if is_textual(m)) => {
                return a.to_sql(ty, out);
            }
            P::ArrayDecimal(a) if *ty == Type::NUMERIC_ARRAY => {
                let nums: Vec<Option<Numeric<'_>>> =
                    a.iter().map(|s| s.as_deref().map(Numeric)).collect();
                return nums.to_sql(ty, out);
            }
            P::Interval(i) if *ty == Type::INTERVAL => {
                out.put_i64(i.micros);
                out.put_i32(i.days);
                out.put_i32(i.months);
            }
            _ => return Err(wrong(v, ty)),
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        // Checked per value in `to_sql`, where the error can say what was
        // given and what the server wanted.
        true
    }

    to_sql_checked!();
}

fn date(y: i32, m: u8, d: u8) -> Result<NaiveDate, BoxErr> {
    NaiveDate::from_ymd_opt(y, m.into(), d.into())
        .ok_or_else(|| bad(format!("{y:04}-{m:02}-{d:02} is not a valid date")))
}

fn time(h: u8, m: u8, s: u8, ns: u32) -> Result<NaiveTime, BoxErr> {
    NaiveTime::from_hms_nano_opt(h.into(), m.into(), s.into(), ns)
        .ok_or_else(|| bad(format!("{h:02}:{m:02}:{s:02}.{ns:09} is not a valid time")))
}

fn timestamp_to_sql(dt: NaiveDateTime, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxErr> {
    if *ty == Type::TIMESTAMPTZ {
        dt.and_utc().to_sql(ty, out)
    } else {
        dt.to_sql(ty, out)
    }
}

type Bound<T> = Option<(T, RangeBoundKind)>;

fn range_to_sql<T>(
    lo: &Bound<T>,
    hi: &Bound<T>,
    out: &mut BytesMut,
    put: impl Fn(&T, &mut BytesMut) -> Result<(), BoxErr>,
) -> Result<(), BoxErr> {
    let bound = |b: &Bound<T>,
                 buf: &mut BytesMut|
     -> Result<pgt::RangeBound<postgres_protocol::IsNull>, BoxErr> {
        Ok(match b {
            None => pgt::RangeBound::Unbounded,
            Some((v, kind)) => {
                put(v, buf)?;
                match kind {
                    RangeBoundKind::Inclusive => {
                        pgt::RangeBound::Inclusive(postgres_protocol::IsNull::No)
                    }
                    RangeBoundKind::Exclusive => {
                        pgt::RangeBound::Exclusive(postgres_protocol::IsNull::No)
                    }
                }
            }
        })
    };
    pgt::range_to_sql(|buf| bound(lo, buf), |buf| bound(hi, buf), out)
}

/// A NUMERIC given as a base-10 string.
#[derive(Debug)]
struct Numeric<'a>(&'a str);

impl ToSql for Numeric<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxErr> {
        numeric_to_sql(self.0, out)?;
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
    to_sql_checked!();
}

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

/// Encodes a decimal string (`-12.5`, `1e3` is not accepted, `NaN`,
/// `Infinity`) in NUMERIC's binary form: base-10000 digit groups.
pub fn numeric_to_sql(s: &str, out: &mut BytesMut) -> Result<(), BoxErr> {
    let special = |sign: u16, out: &mut BytesMut| {
        out.put_i16(0);
        out.put_i16(0);
        out.put_u16(sign);
        out.put_u16(0);
    };
    let t = s.trim();
    match t.to_ascii_lowercase().as_str() {
        "nan" => {
            special(NUMERIC_NAN, out);
            return Ok(());
        }
        "infinity" | "+infinity" | "inf" => {
            special(NUMERIC_PINF, out);
            return Ok(());
        }
        "-infinity" | "-inf" => {
            special(NUMERIC_NINF, out);
            return Ok(());
        }
        _ => {}
    }
    let invalid = || bad(format!("`{s}` is not a decimal number"));
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid());
    }
    if frac.len() > 0x3FFF || int.len() > 131072 {
        return Err(bad(format!("`{s}` has too many digits for NUMERIC")));
    }
    let int = int.trim_start_matches('0');
    let dscale = frac.len() as u16;
    let int_pad = (4 - int.len() % 4) % 4;
    let frac_pad = (4 - frac.len() % 4) % 4;
    let digits_str: String = "0".repeat(int_pad) + int + frac + &"0".repeat(frac_pad);
    let mut groups: Vec<i16> = digits_str
        .as_bytes()
        .chunks(4)
        .map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + i16::from(d - b'0')))
        .collect();
    let mut weight = ((int_pad + int.len()) / 4) as i32 - 1;
    let leading = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..leading);
    weight -= leading as i32;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    out.put_i16(groups.len() as i16);
    out.put_i16(weight as i16);
    out.put_u16(if neg && !groups.is_empty() {
        NUMERIC_NEG
    } else {
        NUMERIC_POS
    });
    out.put_u16(dscale);
    for g in groups {
        out.put_i16(g);
    }
    Ok(())
}

/// Decodes NUMERIC's binary form into its exact base-10 text.
pub fn numeric_from_sql(raw: &[u8]) -> Result<String, BoxErr> {
    let short = || -> BoxErr { Box::new(DecodeError("truncated NUMERIC value".into())) };
    if raw.len() < 8 {
        return Err(short());
    }
    let rd = |i: usize| u16::from_be_bytes([raw[i], raw[i + 1]]);
    let ndigits = rd(0) as usize;
    let weight = rd(2) as i16 as i32;
    let sign = rd(4);
    let dscale = rd(6) as usize;
    match sign {
        NUMERIC_NAN => return Ok("NaN".into()),
        NUMERIC_PINF => return Ok("Infinity".into()),
        NUMERIC_NINF => return Ok("-Infinity".into()),
        _ => {}
    }
    if raw.len() < 8 + 2 * ndigits {
        return Err(short());
    }
    let digit = |i: i32| -> u16 {
        if i >= 0 && (i as usize) < ndigits {
            rd(8 + 2 * i as usize)
        } else {
            0
        }
    };
    let mut s = String::new();
    if sign == NUMERIC_NEG && ndigits > 0 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                s.push_str(&digit(i).to_string());
            } else {
                s.push_str(&format!("{:04}", digit(i)));
            }
        }
    }
    if dscale > 0 {
        s.push('.');
        let mut frac = String::new();
        let mut i = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(i)));
            i += 1;
        }
        frac.truncate(dscale);
        s.push_str(&frac);
    }
    Ok(s)
}

/// The WIT data type of a column.
pub fn data_type(ty: &Type) -> DbDataType {
    match *ty {
        Type::BOOL => DbDataType::Boolean,
        Type::CHAR => DbDataType::Int8,
        Type::INT2 => DbDataType::Int16,
        Type::INT4 => DbDataType::Int32,
        Type::INT8 => DbDataType::Int64,
        Type::FLOAT4 => DbDataType::Floating32,
        Type::FLOAT8 => DbDataType::Floating64,
        Type::BYTEA => DbDataType::Binary,
        Type::DATE => DbDataType::Date,
        Type::TIME => DbDataType::Time,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => DbDataType::Datetime,
        Type::UUID => DbDataType::Uuid,
        Type::JSON | Type::JSONB => DbDataType::Jsonb,
        Type::NUMERIC => DbDataType::Decimal,
        Type::INT4_RANGE => DbDataType::RangeInt32,
        Type::INT8_RANGE => DbDataType::RangeInt64,
        Type::NUM_RANGE => DbDataType::RangeDecimal,
        Type::INT4_ARRAY => DbDataType::ArrayInt32,
        Type::INT8_ARRAY => DbDataType::ArrayInt64,
        Type::NUMERIC_ARRAY => DbDataType::ArrayDecimal,
        Type::INTERVAL => DbDataType::Interval,
        _ if is_textual(ty) => DbDataType::Str,
        _ if matches!(ty.kind(), Kind::Array(m) if is_textual(m)) => DbDataType::ArrayStr,
        _ => DbDataType::Other(ty.name().to_string()),
    }
}

/// One result cell, decoded by its column type.
pub struct Cell(pub DbValue);

fn text(ty: &Type, raw: &[u8]) -> Result<String, BoxErr> {
    String::from_utf8(raw.to_vec()).map_err(|e| {
        Box::new(DecodeError(format!(
            "a {} value is not valid UTF-8 ({e}); read it as bytea instead",
            ty.name()
        ))) as BoxErr
    })
}

fn range_from_sql<T>(
    raw: &[u8],
    zero: impl Fn() -> T,
    decode: impl Fn(&[u8]) -> Result<T, BoxErr>,
) -> Result<(Bound<T>, Bound<T>), BoxErr> {
    let conv = |b: pgt::RangeBound<Option<&[u8]>>| -> Result<Bound<T>, BoxErr> {
        Ok(match b {
            pgt::RangeBound::Unbounded => None,
            pgt::RangeBound::Inclusive(Some(v)) => Some((decode(v)?, RangeBoundKind::Inclusive)),
            pgt::RangeBound::Exclusive(Some(v)) => Some((decode(v)?, RangeBoundKind::Exclusive)),
            _ => return Err(Box::new(DecodeError("NULL range bound".into()))),
        })
    };
    Ok(match pgt::range_from_sql(raw)? {
        // The WIT has no empty range: `[0, 0)` is empty and reads back as such.
        pgt::Range::Empty => (
            Some((zero(), RangeBoundKind::Exclusive)),
            Some((zero(), RangeBoundKind::Exclusive)),
        ),
        pgt::Range::Nonempty(lo, hi) => (conv(lo)?, conv(hi)?),
    })
}

struct NumericText(String);

impl<'a> FromSql<'a> for NumericText {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxErr> {
        numeric_from_sql(raw).map(NumericText)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

struct Text(String);

impl<'a> FromSql<'a> for Text {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxErr> {
        text(ty, raw).map(Text)
    }
    fn accepts(ty: &Type) -> bool {
        is_textual(ty)
    }
}

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxErr> {
        let v = match *ty {
            Type::BOOL => DbValue::Boolean(pgt::bool_from_sql(raw)?),
            Type::CHAR => DbValue::Int8(pgt::char_from_sql(raw)?),
            Type::INT2 => DbValue::Int16(pgt::int2_from_sql(raw)?),
            Type::INT4 => DbValue::Int32(pgt::int4_from_sql(raw)?),
            Type::INT8 => DbValue::Int64(pgt::int8_from_sql(raw)?),
            Type::FLOAT4 => DbValue::Floating32(pgt::float4_from_sql(raw)?),
            Type::FLOAT8 => DbValue::Floating64(pgt::float8_from_sql(raw)?),
            Type::BYTEA => DbValue::Binary(raw.to_vec()),
            Type::DATE => {
                let d = NaiveDate::from_sql(ty, raw)?;
                DbValue::Date((d.year(), d.month() as u8, d.day() as u8))
            }
            Type::TIME => {
                let t = NaiveTime::from_sql(ty, raw)?;
                DbValue::Time(hms(&t))
            }
            Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                let dt = if *ty == Type::TIMESTAMP {
                    NaiveDateTime::from_sql(ty, raw)?
                } else {
                    DateTime::<Utc>::from_sql(ty, raw)?.naive_utc()
                };
                let (h, mi, s, ns) = hms(&dt.time());
                DbValue::Datetime((dt.year(), dt.month() as u8, dt.day() as u8, h, mi, s, ns))
            }
            Type::UUID => {
                DbValue::Uuid(uuid::Uuid::from_bytes(pgt::uuid_from_sql(raw)?).to_string())
            }
            Type::JSON => DbValue::Jsonb(raw.to_vec()),
            Type::JSONB => match raw.split_first() {
                Some((1, json)) => DbValue::Jsonb(json.to_vec()),
                _ => return Err(Box::new(DecodeError("unknown jsonb version".into()))),
            },
            Type::NUMERIC => DbValue::Decimal(numeric_from_sql(raw)?),
            Type::INT4_RANGE => DbValue::RangeInt32(range_from_sql(raw, || 0, pgt::int4_from_sql)?),
            Type::INT8_RANGE => DbValue::RangeInt64(range_from_sql(raw, || 0, pgt::int8_from_sql)?),
            Type::NUM_RANGE => {
                DbValue::RangeDecimal(range_from_sql(raw, || "0".to_string(), numeric_from_sql)?)
            }
            Type::INT4_ARRAY => DbValue::ArrayInt32(Vec::<Option<i32>>::from_sql(ty, raw)?),
            Type::INT8_ARRAY => DbValue::ArrayInt64(Vec::<Option<i64>>::from_sql(ty, raw)?),
            Type::NUMERIC_ARRAY => DbValue::ArrayDecimal(
                Vec::<Option<NumericText>>::from_sql(ty, raw)?
                    .into_iter()
                    .map(|n| n.map(|n| n.0))
                    .collect(),
            ),
            Type::INTERVAL => {
                if raw.len() != 16 {
                    return Err(Box::new(DecodeError("malformed interval".into())));
                }
                DbValue::Interval(Interval {
                    micros: i64::from_be_bytes(raw[0..8].try_into().unwrap()),
                    days: i32::from_be_bytes(raw[8..12].try_into().unwrap()),
                    months: i32::from_be_bytes(raw[12..16].try_into().unwrap()),
                })
            }
            _ if is_textual(ty) => DbValue::Str(text(ty, raw)?),
            _ if matches!(ty.kind(), Kind::Array(m) if is_textual(m)) => DbValue::ArrayStr(
                Vec::<Option<Text>>::from_sql(ty, raw)?
                    .into_iter()
                    .map(|t| t.map(|t| t.0))
                    .collect(),
            ),
            _ => DbValue::Unsupported(raw.to_vec()),
        };
        Ok(Cell(v))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxErr> {
        Ok(Cell(DbValue::DbNull))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn hms(t: &NaiveTime) -> (u8, u8, u8, u32) {
    (
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
        t.nanosecond(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(s: &str) -> String {
        let mut b = BytesMut::new();
        numeric_to_sql(s, &mut b).unwrap();
        numeric_from_sql(&b).unwrap()
    }

    #[test]
    fn numeric_round_trips_exactly() {
        for (input, expected) in [
            ("0", "0"),
            ("0.00", "0.00"),
            ("12345.6789", "12345.6789"),
            ("-1", "-1"),
            ("-0.001", "-0.001"),
            ("100000000", "100000000"),
            ("0.00000001", "0.00000001"),
            (
                "123456789012345678901234567890.123456789",
                "123456789012345678901234567890.123456789",
            ),
            ("007.50", "7.50"),
            ("NaN", "NaN"),
            ("-Infinity", "-Infinity"),
        ] {
            assert_eq!(round(input), expected, "{input}");
        }
    }

    #[test]
    fn numeric_rejects_garbage() {
        let mut b = BytesMut::new();
        for s in ["", "1e5", "1.2.3", "abc", "-", "1;DROP TABLE x"] {
            assert!(numeric_to_sql(s, &mut b).is_err(), "{s}");
        }
    }
}
