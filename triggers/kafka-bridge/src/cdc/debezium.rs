//! Row changes in Debezium's change-event envelope, so tools that read a
//! Debezium PostgreSQL connector's topics read the bridge's.
//!
//! As the connector does with the JSON converter and `schemas.enable =
//! false`: the key is the row's key columns as a JSON object; the value is
//! `{before, after, source, op, ts_ms, transaction}` with `op` `c`, `u` or
//! `d`; a delete is followed by a tombstone (the same key, no value) so a
//! compacted topic can forget the row. Values keep PostgreSQL's text form
//! except integers and floats (JSON numbers) and booleans; `numeric` is a
//! string, as with `decimal.handling.mode = string`; an unchanged TOASTed
//! value the WAL does not carry is `__debezium_unavailable_value`.

use serde_json::{json, Map, Value as Json};

use super::pgoutput::{Relation, Value};
use crate::binding::Record;

/// What Debezium puts where the WAL does not carry a value.
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_UNIX_SECONDS: i64 = 946_684_800;

/// The kind of a change (Debezium's `op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `c`: a row inserted.
    Create,
    /// `u`: a row updated.
    Update,
    /// `d`: a row deleted.
    Delete,
}

impl Op {
    fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
        }
    }
}

/// Where a change happened (Debezium's `source` block).
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    /// The logical server name: the topics' prefix.
    pub name: &'a str,
    /// The database.
    pub db: &'a str,
    /// The transaction.
    pub xid: u32,
    /// The commit's time, microseconds since 2000-01-01 UTC.
    pub commit_time: i64,
    /// The change's LSN.
    pub lsn: u64,
}

/// One row change.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    /// Its kind.
    pub op: Op,
    /// The table, its `key` columns being the record key's.
    pub relation: &'a Relation,
    /// The row before (what the WAL has of it: the whole row under replica
    /// identity `FULL`, else the key of a deleted row or none).
    pub before: Option<&'a [Value]>,
    /// The row after (none for a delete).
    pub after: Option<&'a [Value]>,
}

/// The topic of a table's changes: `<prefix>.<schema>.<table>`, as
/// Debezium names them.
pub fn topic(prefix: &str, relation: &Relation) -> String {
    format!("{prefix}.{}.{}", relation.schema, relation.name)
}

/// The Kafka records of `change`: its event, and for a delete the
/// tombstone after it.
pub fn records(change: &Change<'_>, origin: &Origin<'_>, now_ms: i64) -> Vec<Record> {
    let row = |values: Option<&[Value]>| match values {
        Some(values) => Json::Object(row_object(change.relation, values, |_| true)),
        None => Json::Null,
    };
    let key_source = change.after.or(change.before);
    let key = key_source.and_then(|values| {
        let key = row_object(change.relation, values, |c| c.key);
        (!key.is_empty()).then(|| serde_json::to_vec(&Json::Object(key)).unwrap())
    });
    let ts_ms = origin.commit_time.div_euclid(1000) + PG_EPOCH_UNIX_SECONDS * 1000;
    let value = json!({
        "before": row(change.before),
        "after": row(change.after),
        "source": {
            "version": env!("CARGO_PKG_VERSION"),
            "connector": "postgresql",
            "name": origin.name,
            "ts_ms": ts_ms,
            "snapshot": "false",
            "db": origin.db,
            "schema": change.relation.schema,
            "table": change.relation.name,
            "txId": origin.xid,
            "lsn": origin.lsn,
        },
        "op": change.op.code(),
        "ts_ms": now_ms,
        "transaction": null,
    });
    let mut out = vec![Record {
        key: key.clone(),
        value: Some(serde_json::to_vec(&value).unwrap()),
        headers: Vec::new(),
    }];
    if change.op == Op::Delete && key.is_some() {
        out.push(Record {
            key,
            value: None,
            headers: Vec::new(),
        });
    }
    out
}

fn row_object(
    relation: &Relation,
    values: &[Value],
    take: impl Fn(&super::pgoutput::Column) -> bool,
) -> Map<String, Json> {
    relation
        .columns
        .iter()
        .zip(values)
        .filter(|(column, _)| take(column))
        .map(|(column, value)| (column.name.clone(), json_value(column.type_oid, value)))
        .collect()
}

/// A column's value as JSON, by its type (OIDs of PostgreSQL's built-in
/// types, which are fixed).
pub fn json_value(type_oid: u32, value: &Value) -> Json {
    const BOOL: u32 = 16;
    const INT8: u32 = 20;
    const INT2: u32 = 21;
    const INT4: u32 = 23;
    const OID: u32 = 26;
    const FLOAT4: u32 = 700;
    const FLOAT8: u32 = 701;
    let text = match value {
        Value::Null => return Json::Null,
        Value::Unchanged => return Json::String(UNAVAILABLE.into()),
        Value::Text(text) => text,
    };
    let typed = match type_oid {
        BOOL => Some(Json::Bool(text == "t")),
        INT2 | INT4 | INT8 | OID => text.parse::<i64>().ok().map(Json::from),
        FLOAT4 | FLOAT8 => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Json::Number),
        _ => None,
    };
    // NaN, infinities and anything unparsable stay text.
    typed.unwrap_or_else(|| Json::String(text.clone()))
}

#[cfg(test)]
mod tests {
    use super::super::pgoutput::Column;
    use super::*;

    fn orders() -> Relation {
        let column = |name: &str, type_oid, key| Column {
            key,
            name: name.into(),
            type_oid,
        };
        Relation {
            id: 1,
            schema: "public".into(),
            name: "orders".into(),
            replica_identity: b'd',
            columns: vec![
                column("id", 20, true),
                column("total", 1700, false),
                column("paid", 16, false),
                column("note", 25, false),
            ],
        }
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    const ORIGIN: Origin<'static> = Origin {
        name: "bv.cdc",
        db: "shop",
        xid: 900,
        commit_time: 1_000_000,
        lsn: 0x1234,
    };

    #[test]
    fn an_insert_is_op_c_with_typed_values_and_the_key_as_key() {
        let relation = orders();
        let after = [text("7"), text("12.50"), text("t"), Value::Null];
        let change = Change {
            op: Op::Create,
            relation: &relation,
            before: None,
            after: Some(&after),
        };
        let records = records(&change, &ORIGIN, 99);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].key.as_deref(), Some(&br#"{"id":7}"#[..]));
        let value: Json = serde_json::from_slice(records[0].value.as_ref().unwrap()).unwrap();
        assert_eq!(value["op"], "c");
        assert_eq!(value["before"], Json::Null);
        assert_eq!(
            value["after"],
            json!({"id": 7, "total": "12.50", "paid": true, "note": null})
        );
        assert_eq!(value["source"]["table"], "orders");
        assert_eq!(value["source"]["lsn"], 0x1234);
        assert_eq!(value["source"]["txId"], 900);
        // One second after 2000-01-01T00:00:00Z.
        assert_eq!(value["source"]["ts_ms"], 946_684_801_000i64);
        assert_eq!(value["ts_ms"], 99);
    }

    #[test]
    fn a_delete_is_op_d_then_a_tombstone() {
        let relation = orders();
        let before = [text("7"), Value::Null, Value::Null, Value::Unchanged];
        let change = Change {
            op: Op::Delete,
            relation: &relation,
            before: Some(&before),
            after: None,
        };
        let records = records(&change, &ORIGIN, 0);
        assert_eq!(records.len(), 2);
        let value: Json = serde_json::from_slice(records[0].value.as_ref().unwrap()).unwrap();
        assert_eq!(value["op"], "d");
        assert_eq!(value["after"], Json::Null);
        assert_eq!(value["before"]["note"], UNAVAILABLE);
        assert_eq!(records[1].key, records[0].key);
        assert_eq!(records[1].value, None);
    }

    #[test]
    fn values_that_json_cannot_hold_as_numbers_stay_text() {
        assert_eq!(json_value(701, &text("NaN")), json!("NaN"));
        assert_eq!(json_value(701, &text("1.5")), json!(1.5));
        assert_eq!(json_value(20, &text("-3")), json!(-3));
        assert_eq!(json_value(3802, &text(r#"{"a":1}"#)), json!(r#"{"a":1}"#));
        assert_eq!(json_value(16, &text("f")), json!(false));
    }
}
