//! `config`: the effective settings, one `key = value` line each, with
//! where the value came from; the Redis password redacted.

use std::fmt;

use crate::settings::Loaded;

/// What `config` prints.
#[derive(Debug, Clone, Copy)]
pub struct ConfigReport<'a>(pub &'a Loaded);

impl fmt::Display for ConfigReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tree = serde_json::to_value(&self.0.settings).map_err(|_| fmt::Error)?;
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
