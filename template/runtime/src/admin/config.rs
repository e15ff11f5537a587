//! `config`: the effective settings, one `key = value` line each, with
//! where the value came from; the Redis password redacted.

use std::fmt;

use crate::settings::{Loaded, LogicSettings};

/// What `config` prints.
#[derive(Debug)]
pub struct ConfigReport<'a, L = crate::settings::NoLogicSettings>(pub &'a Loaded<L>);

impl<L: LogicSettings> fmt::Display for ConfigReport<'_, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tree = self.0.tree();
        let mut lines = Vec::new();
        flatten("", &tree, &mut lines);
        let width = lines
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .max()
            .unwrap_or(0);
        for (key, value) in lines {
            let pad = width - key.len() - value.len();
            writeln!(
                f,
                "{key} = {value}{:pad$}   # {}",
                "",
                self.0.source_of(&key)
            )?;
        }
        Ok(())
    }
}

/// Every leaf of `value` as a dotted key and its text.
fn flatten(prefix: &str, value: &serde_json::Value, lines: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&key, value, lines);
            }
        }
        serde_json::Value::Null => lines.push((prefix.to_owned(), "(unset)".to_owned())),
        serde_json::Value::String(text) => lines.push((prefix.to_owned(), text.clone())),
        other => lines.push((prefix.to_owned(), other.to_string())),
    }
}
