//! A decoder of PostgreSQL's `pgoutput` logical replication messages,
//! protocol version 1 (PostgreSQL's "Logical Replication Message Formats"):
//! the part change data capture needs — transactions, relations and row
//! changes with their values in text form.
//!
//! Small enough to own: the Rust crates for it either bring their own
//! replication client (some on libpq) or are young; the bridge reads the
//! messages through SQL (`pg_logical_slot_peek_binary_changes`), so it only
//! needs the bytes decoded.

use std::fmt;

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A transaction starts.
    Begin {
        /// The commit's LSN.
        final_lsn: u64,
        /// Commit time, microseconds since 2000-01-01 UTC.
        commit_time: i64,
        /// The transaction id.
        xid: u32,
    },
    /// The transaction committed.
    Commit {
        /// The commit's LSN.
        commit_lsn: u64,
        /// The end of the commit record: where decoding resumes.
        end_lsn: u64,
        /// Commit time, microseconds since 2000-01-01 UTC.
        commit_time: i64,
    },
    /// A table's shape, sent before its first change in a session.
    Relation(Relation),
    /// A row was inserted.
    Insert {
        /// The table.
        relation: u32,
        /// The new row.
        new: Vec<Value>,
    },
    /// A row was updated.
    Update {
        /// The table.
        relation: u32,
        /// The old row (replica identity `FULL`) or its old key (when the
        /// key changed); none otherwise.
        old: Option<Vec<Value>>,
        /// The new row.
        new: Vec<Value>,
    },
    /// A row was deleted.
    Delete {
        /// The table.
        relation: u32,
        /// The old row (replica identity `FULL`) or its key.
        old: Vec<Value>,
    },
    /// Tables were truncated.
    Truncate {
        /// The tables.
        relations: Vec<u32>,
    },
    /// Anything else (origin, type, logical message): not needed here.
    Other(u8),
}

/// A table as the publication sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    /// Its OID.
    pub id: u32,
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// Its replica identity: `d` (primary key), `n` (nothing), `f` (full
    /// row) or `i` (an index).
    pub replica_identity: u8,
    /// Its columns, in order.
    pub columns: Vec<Column>,
}

/// A column of a [`Relation`].
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Whether it is part of the replica identity (under `FULL`, every
    /// column is).
    pub key: bool,
    /// Its name.
    pub name: String,
    /// Its type's OID.
    pub type_oid: u32,
}

/// A column's value in a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// An unchanged TOASTed value the message does not carry.
    Unchanged,
    /// The value in PostgreSQL's text form.
    Text(String),
}

/// A message that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pgoutput message: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one message.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader(bytes);
    let tag = r.u8()?;
    let message = match tag {
        b'B' => Message::Begin {
            final_lsn: r.u64()?,
            commit_time: r.i64()?,
            xid: r.u32()?,
        },
        b'C' => {
            let _flags = r.u8()?;
            Message::Commit {
                commit_lsn: r.u64()?,
                end_lsn: r.u64()?,
                commit_time: r.i64()?,
            }
        }
        b'R' => {
            let id = r.u32()?;
            let schema = r.string()?;
            let name = r.string()?;
            let replica_identity = r.u8()?;
            let count = r.u16()?;
            let mut columns = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let flags = r.u8()?;
                let name = r.string()?;
                let type_oid = r.u32()?;
                let _type_modifier = r.u32()?;
                columns.push(Column {
                    key: flags & 1 == 1,
                    name,
                    type_oid,
                });
            }
            Message::Relation(Relation {
                id,
                schema,
                name,
                replica_identity,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32()?;
            r.expect(b'N')?;
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let old = match r.u8()? {
                b'K' | b'O' => {
                    let old = r.tuple()?;
                    r.expect(b'N')?;
                    Some(old)
                }
                b'N' => None,
                other => return Err(DecodeError(format!("update: unexpected part {other:#04x}"))),
            };
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'K' | b'O' => {}
                other => return Err(DecodeError(format!("delete: unexpected part {other:#04x}"))),
            }
            Message::Delete {
                relation,
                old: r.tuple()?,
            }
        }
        b'T' => {
            let count = r.u32()?;
            let _options = r.u8()?;
            let relations = (0..count).map(|_| r.u32()).collect::<Result<_, _>>()?;
            Message::Truncate { relations }
        }
        other => Message::Other(other),
    };
    Ok(message)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError(format!(
                "ends early: {n} more bytes expected, {} left",
                self.0.len()
            )));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn expect(&mut self, want: u8) -> Result<(), DecodeError> {
        let got = self.u8()?;
        if got != want {
            return Err(DecodeError(format!(
                "expected {:?}, found {got:#04x}",
                want as char
            )));
        }
        Ok(())
    }

    /// A NUL-terminated string.
    fn string(&mut self) -> Result<String, DecodeError> {
        let end = self
            .0
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| DecodeError("a string has no terminating NUL".into()))?;
        let s = String::from_utf8(self.0[..end].to_vec())
            .map_err(|_| DecodeError("a name is not UTF-8".into()))?;
        self.0 = &self.0[end + 1..];
        Ok(s)
    }

    fn tuple(&mut self) -> Result<Vec<Value>, DecodeError> {
        let count = self.u16()?;
        let mut values = Vec::with_capacity(count as usize);
        for _ in 0..count {
            values.push(match self.u8()? {
                b'n' => Value::Null,
                b'u' => Value::Unchanged,
                b't' => {
                    let len = self.u32()? as usize;
                    let text = String::from_utf8(self.take(len)?.to_vec())
                        .map_err(|_| DecodeError("a text value is not UTF-8".into()))?;
                    Value::Text(text)
                }
                other => {
                    return Err(DecodeError(format!(
                        "a column value of kind {other:#04x} (only text form is asked for)"
                    )))
                }
            });
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(values: &[Option<&str>]) -> Vec<u8> {
        let mut b = (values.len() as u16).to_be_bytes().to_vec();
        for v in values {
            match v {
                None => b.push(b'n'),
                Some(text) => {
                    b.push(b't');
                    b.extend((text.len() as u32).to_be_bytes());
                    b.extend(text.as_bytes());
                }
            }
        }
        b
    }

    #[test]
    fn decodes_a_relation_and_its_changes() {
        let mut rel = vec![b'R'];
        rel.extend(16384u32.to_be_bytes());
        rel.extend(b"public\0orders\0");
        rel.push(b'f');
        rel.extend(2u16.to_be_bytes());
        rel.push(1);
        rel.extend(b"id\0");
        rel.extend(20u32.to_be_bytes());
        rel.extend((-1i32).to_be_bytes());
        rel.push(0);
        rel.extend(b"note\0");
        rel.extend(25u32.to_be_bytes());
        rel.extend((-1i32).to_be_bytes());
        let Message::Relation(relation) = decode(&rel).unwrap() else {
            panic!()
        };
        assert_eq!(
            (relation.schema.as_str(), relation.name.as_str()),
            ("public", "orders")
        );
        assert!(relation.columns[0].key && !relation.columns[1].key);
        assert_eq!(relation.columns[1].type_oid, 25);

        let mut insert = vec![b'I'];
        insert.extend(16384u32.to_be_bytes());
        insert.push(b'N');
        insert.extend(tuple(&[Some("7"), None]));
        assert_eq!(
            decode(&insert).unwrap(),
            Message::Insert {
                relation: 16384,
                new: vec![Value::Text("7".into()), Value::Null]
            }
        );

        let mut update = vec![b'U'];
        update.extend(16384u32.to_be_bytes());
        update.push(b'O');
        update.extend(tuple(&[Some("7"), None]));
        update.push(b'N');
        update.extend(tuple(&[Some("7"), Some("é")]));
        let Message::Update { old, new, .. } = decode(&update).unwrap() else {
            panic!()
        };
        assert_eq!(old.unwrap()[1], Value::Null);
        assert_eq!(new[1], Value::Text("é".into()));

        let mut delete = vec![b'D'];
        delete.extend(16384u32.to_be_bytes());
        delete.push(b'K');
        delete.extend(tuple(&[Some("7"), None]));
        assert!(matches!(decode(&delete).unwrap(), Message::Delete { .. }));
    }

    #[test]
    fn decodes_transaction_bounds() {
        let mut begin = vec![b'B'];
        begin.extend(0x0100u64.to_be_bytes());
        begin.extend(5i64.to_be_bytes());
        begin.extend(742u32.to_be_bytes());
        assert_eq!(
            decode(&begin).unwrap(),
            Message::Begin {
                final_lsn: 0x100,
                commit_time: 5,
                xid: 742
            }
        );
        let mut commit = vec![b'C', 0];
        commit.extend(0x0100u64.to_be_bytes());
        commit.extend(0x0130u64.to_be_bytes());
        commit.extend(5i64.to_be_bytes());
        assert_eq!(
            decode(&commit).unwrap(),
            Message::Commit {
                commit_lsn: 0x100,
                end_lsn: 0x130,
                commit_time: 5
            }
        );
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let mut insert = vec![b'I'];
        insert.extend(16384u32.to_be_bytes());
        insert.push(b'N');
        insert.extend(tuple(&[Some("12345")]));
        for cut in 0..insert.len() {
            if cut == 0 {
                continue;
            }
            assert!(decode(&insert[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(b"").is_err());
    }
}
