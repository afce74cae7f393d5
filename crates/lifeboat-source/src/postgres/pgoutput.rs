//! Decoder for the pgoutput messages (protocol version 1) that carry row changes: Relation,
//! Insert, Update, Delete and Truncate. Begin, Commit and logical messages are decoded by
//! the replication client; Type and Origin are read and ignored.

use lifeboat_core::model::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct RelationColumn {
    pub name: String,
    pub type_oid: u32,
    pub is_key: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    pub id: u32,
    pub namespace: String,
    pub name: String,
    /// The table's replica identity as the stream describes it (`relreplident`): `f` full,
    /// `d` default (the primary key), `i` an index, `n` nothing.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

/// The old row of an update or delete, as sent: the whole row (`O`, replica identity
/// full) or only its key columns, the others NULL (`K`).
#[derive(Debug, Clone, PartialEq)]
pub struct OldTuple {
    pub key_only: bool,
    pub tuple: Tuple,
}

/// One column of a tuple as sent: a value, NULL, or "unchanged TOAST value" (only in the
/// new tuple of an update; the value is the old tuple's).
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    Value(Value),
    Unchanged,
}

pub type Tuple = Vec<Datum>;

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Relation(Relation),
    Insert {
        relation: u32,
        new: Tuple,
    },
    /// `old` is missing when the table's replica identity is not full and the key did not
    /// change.
    Update {
        relation: u32,
        old: Option<OldTuple>,
        new: Tuple,
    },
    Delete {
        relation: u32,
        old: OldTuple,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// Begin, Commit, Type, Origin, Message: nothing for the decoder's caller.
    Other(u8),
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err(format!(
                "truncated message: wanted {n} bytes, {} left",
                self.bytes.len()
            ));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn i16(&mut self) -> Result<i16, String> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<String, String> {
        let end = self
            .bytes
            .iter()
            .position(|&b| b == 0)
            .ok_or("unterminated string")?;
        let s = String::from_utf8(self.bytes[..end].to_vec()).map_err(|e| e.to_string())?;
        self.bytes = &self.bytes[end + 1..];
        Ok(s)
    }

    fn tuple(&mut self) -> Result<Tuple, String> {
        let count = self.i16()?;
        if count < 0 {
            return Err(format!("negative column count {count}"));
        }
        let mut tuple = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let datum = match self.u8()? {
                b'n' => Datum::Value(Value::Null),
                b'u' => Datum::Unchanged,
                b't' => {
                    let len = self.u32()? as usize;
                    let text = std::str::from_utf8(self.take(len)?)
                        .map_err(|e| format!("column value is not UTF-8: {e}"))?;
                    Datum::Value(Value::Text(text.to_string()))
                }
                b'b' => {
                    let len = self.u32()? as usize;
                    Datum::Value(Value::Blob(self.take(len)?.to_vec()))
                }
                other => return Err(format!("unknown tuple column kind {:?}", other as char)),
            };
            tuple.push(datum);
        }
        Ok(tuple)
    }
}

/// Decode one pgoutput message.
pub fn decode(bytes: &[u8]) -> Result<Message, String> {
    let mut r = Reader { bytes };
    let tag = r.u8()?;
    match tag {
        b'R' => {
            let id = r.u32()?;
            let namespace = r.string()?;
            let name = r.string()?;
            let replica_identity = r.u8()?;
            let count = r.i16()?;
            let mut columns = Vec::with_capacity(count.max(0) as usize);
            for _ in 0..count {
                let flags = r.u8()?;
                let column_name = r.string()?;
                let type_oid = r.u32()?;
                let _type_modifier = r.u32()?;
                columns.push(RelationColumn {
                    name: column_name,
                    type_oid,
                    is_key: flags & 1 == 1,
                });
            }
            Ok(Message::Relation(Relation {
                id,
                namespace,
                name,
                replica_identity,
                columns,
            }))
        }
        b'I' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'N' => Ok(Message::Insert {
                    relation,
                    new: r.tuple()?,
                }),
                other => Err(format!("insert: expected 'N', got {:?}", other as char)),
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let mut old = None;
            let mut kind = r.u8()?;
            if kind == b'K' || kind == b'O' {
                old = Some(OldTuple {
                    key_only: kind == b'K',
                    tuple: r.tuple()?,
                });
                kind = r.u8()?;
            }
            if kind != b'N' {
                return Err(format!("update: expected 'N', got {:?}", kind as char));
            }
            Ok(Message::Update {
                relation,
                old,
                new: r.tuple()?,
            })
        }
        b'D' => {
            let relation = r.u32()?;
            match r.u8()? {
                kind @ (b'K' | b'O') => Ok(Message::Delete {
                    relation,
                    old: OldTuple {
                        key_only: kind == b'K',
                        tuple: r.tuple()?,
                    },
                }),
                other => Err(format!(
                    "delete: expected 'K' or 'O', got {:?}",
                    other as char
                )),
            }
        }
        b'T' => {
            let count = r.u32()?;
            let _options = r.u8()?;
            let mut relations = Vec::with_capacity(count.min(1 << 16) as usize);
            for _ in 0..count {
                relations.push(r.u32()?);
            }
            Ok(Message::Truncate { relations })
        }
        other => Ok(Message::Other(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_col(out: &mut Vec<u8>, s: &str) {
        out.push(b't');
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    #[test]
    fn decodes_relation_and_update_with_old_tuple() {
        let mut rel = vec![b'R'];
        rel.extend_from_slice(&16384u32.to_be_bytes());
        rel.extend_from_slice(b"public\0issues\0");
        rel.push(b'f');
        rel.extend_from_slice(&2i16.to_be_bytes());
        for (flags, name) in [(1u8, "id"), (0u8, "title")] {
            rel.push(flags);
            rel.extend_from_slice(name.as_bytes());
            rel.push(0);
            rel.extend_from_slice(&25u32.to_be_bytes());
            rel.extend_from_slice(&u32::MAX.to_be_bytes());
        }
        let Message::Relation(relation) = decode(&rel).expect("relation") else {
            panic!("not a relation");
        };
        assert_eq!(relation.name, "issues");
        assert_eq!(relation.replica_identity, b'f');
        assert!(relation.columns[0].is_key && !relation.columns[1].is_key);

        let mut upd = vec![b'U'];
        upd.extend_from_slice(&16384u32.to_be_bytes());
        upd.push(b'O');
        upd.extend_from_slice(&2i16.to_be_bytes());
        text_col(&mut upd, "1");
        upd.push(b'n');
        upd.push(b'N');
        upd.extend_from_slice(&2i16.to_be_bytes());
        text_col(&mut upd, "1");
        upd.push(b'u');
        let message = decode(&upd).expect("update");
        assert_eq!(
            message,
            Message::Update {
                relation: 16384,
                old: Some(OldTuple {
                    key_only: false,
                    tuple: vec![
                        Datum::Value(Value::Text("1".into())),
                        Datum::Value(Value::Null)
                    ]
                }),
                new: vec![Datum::Value(Value::Text("1".into())), Datum::Unchanged],
            }
        );
    }

    #[test]
    fn a_key_only_old_row_is_told_apart() {
        let mut del = vec![b'D'];
        del.extend_from_slice(&16384u32.to_be_bytes());
        del.push(b'K');
        del.extend_from_slice(&2i16.to_be_bytes());
        text_col(&mut del, "1");
        del.push(b'n');
        let Message::Delete { old, .. } = decode(&del).expect("delete") else {
            panic!("not a delete");
        };
        assert!(old.key_only);
        del[5] = b'O';
        let Message::Delete { old, .. } = decode(&del).expect("delete") else {
            panic!("not a delete");
        };
        assert!(!old.key_only);
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert!(decode(&[b'I', 0, 0]).is_err());
        assert!(decode(&[]).is_err());
    }
}
