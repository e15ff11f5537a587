//! Parsing the replies of the stream commands whose entries redis-rs's
//! typed replies cannot represent.
//!
//! Entries are parsed by hand because an entry deleted from the stream
//! (`XDEL`, `XTRIM`) while it was pending comes back from `XREADGROUP`,
//! `XCLAIM` and `XAUTOCLAIM` as its ID with nil fields. redis-rs's typed
//! stream replies do not tell such an entry apart, and the worker must see
//! it: it has to be acknowledged, or it stays pending for ever. Replies
//! without entries are read with redis-rs's typed replies where they are
//! sent.

use redis::Value;

use super::{AutoClaimed, Delivery};
use crate::entry::Entry;
use crate::error::Error;

pub(crate) fn unexpected(command: &'static str, detail: impl Into<String>) -> Error {
    Error::Reply {
        command,
        detail: detail.into(),
    }
}

fn into_string(command: &'static str, value: Value) -> Result<String, Error> {
    match value {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes).map_err(|_| unexpected(command, "ID is not UTF-8"))
        }
        Value::SimpleString(text) => Ok(text),
        other => Err(unexpected(
            command,
            format!("expected a string, got {other:?}"),
        )),
    }
}

fn into_bytes(command: &'static str, value: Value) -> Result<Vec<u8>, Error> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(text) => Ok(text.into_bytes()),
        Value::Int(number) => Ok(number.to_string().into_bytes()),
        other => Err(unexpected(
            command,
            format!("expected bytes, got {other:?}"),
        )),
    }
}

fn into_array(command: &'static str, value: Value) -> Result<Vec<Value>, Error> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(unexpected(
            command,
            format!("expected an array, got {other:?}"),
        )),
    }
}

/// `XREADGROUP`: nil, or one `[stream, entries]` pair (a map under RESP3).
pub(crate) fn parse_read(reply: Value) -> Result<Vec<Delivery>, Error> {
    let streams = match reply {
        Value::Map(pairs) => pairs.into_iter().map(|(_, entries)| entries).collect(),
        other => into_array("XREADGROUP", other)?
            .into_iter()
            .map(|stream| {
                into_array("XREADGROUP", stream)?
                    .pop()
                    .ok_or_else(|| unexpected("XREADGROUP", "empty stream reply"))
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let mut deliveries = Vec::new();
    for entries in streams {
        deliveries.extend(parse_entries("XREADGROUP", entries)?);
    }
    Ok(deliveries)
}

/// `XRANGE`/`XREVRANGE`: the entries, in the order Redis returned them.
pub(crate) fn parse_range(reply: Value) -> Result<Vec<Entry>, Error> {
    Ok(parse_entries("XRANGE", reply)?
        .into_iter()
        .filter_map(|delivery| match delivery {
            Delivery::Entry(entry) => Some(entry),
            Delivery::Deleted(_) => None,
        })
        .collect())
}

/// A list of `[id, [field, value, ...]]`; the fields are nil for an entry
/// deleted while pending.
pub(crate) fn parse_entries(command: &'static str, reply: Value) -> Result<Vec<Delivery>, Error> {
    into_array(command, reply)?
        .into_iter()
        .filter(|item| !matches!(item, Value::Nil))
        .map(|item| {
            let mut parts = into_array(command, item)?.into_iter();
            let id = into_string(
                command,
                parts
                    .next()
                    .ok_or_else(|| unexpected(command, "entry without ID"))?,
            )?;
            match parts.next() {
                None | Some(Value::Nil) => Ok(Delivery::Deleted(id)),
                Some(fields) => {
                    let mut flat = into_array(command, fields)?.into_iter();
                    let mut pairs = Vec::with_capacity(flat.len() / 2);
                    while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                        pairs.push((into_bytes(command, name)?, into_bytes(command, value)?));
                    }
                    Ok(Delivery::Entry(Entry { id, fields: pairs }))
                }
            }
        })
        .collect()
}

/// `XAUTOCLAIM`: `[next cursor, entries, deleted IDs]`.
pub(crate) fn parse_autoclaim(reply: Value) -> Result<AutoClaimed, Error> {
    let mut parts = into_array("XAUTOCLAIM", reply)?.into_iter();
    let (Some(cursor), Some(entries)) = (parts.next(), parts.next()) else {
        return Err(unexpected("XAUTOCLAIM", "short reply"));
    };
    let mut claimed = AutoClaimed {
        next_cursor: into_string("XAUTOCLAIM", cursor)?,
        ..AutoClaimed::default()
    };
    for id in into_array("XAUTOCLAIM", entries)? {
        claimed.ids.push(into_string("XAUTOCLAIM", id)?);
    }
    if let Some(deleted) = parts.next() {
        for id in into_array("XAUTOCLAIM", deleted)? {
            claimed.deleted.push(into_string("XAUTOCLAIM", id)?);
        }
    }
    Ok(claimed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn parses_a_read_with_a_deleted_entry() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("data"), bulk("{}")]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        assert_eq!(
            parse_read(reply).unwrap(),
            vec![
                Delivery::Entry(Entry::new("1-0", [("data", "{}")])),
                Delivery::Deleted("2-0".into())
            ]
        );
        assert!(parse_read(Value::Nil).unwrap().is_empty());
    }

    #[test]
    fn parses_autoclaim_with_deleted_entries() {
        let reply = Value::Array(vec![
            bulk("5-0"),
            Value::Array(vec![bulk("3-0")]),
            Value::Array(vec![bulk("4-0")]),
        ]);
        let claimed = parse_autoclaim(reply).unwrap();
        assert_eq!(claimed.next_cursor, "5-0");
        assert_eq!(claimed.ids, vec!["3-0".to_string()]);
        assert_eq!(claimed.deleted, vec!["4-0".to_string()]);
    }
}
