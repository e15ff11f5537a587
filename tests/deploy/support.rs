//! What tests/deploy.rs needs besides the shared helpers: the outside tools
//! it runs (each one required, with a message naming how to install it),
//! YAML values turned into JSON for node, a minimal HTTP/1.0 client for
//! Prometheus's API, and PromQL expressions taken apart into the operands
//! that must each return data.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_norway::Value;

use crate::common::repo_root;

/// Runs `program args` and returns its output; panics, naming `install`, if
/// the program cannot be started at all (missing).
pub fn run_tool(program: &str, args: &[&str], install: &str) -> Output {
    let mut command = Command::new(program);
    command.args(args);
    run_command(program, &mut command, install)
}

/// Runs `command` (of `program`); panics, naming `install`, if it cannot
/// be started.
pub fn run_command(program: &str, command: &mut Command, install: &str) -> Output {
    command.output().unwrap_or_else(|error| {
        panic!(
            "cannot run `{program}` ({error}): this test needs it; {install} (.ci/run installs it)"
        )
    })
}

/// Panics with the tool's output unless it exited with success.
pub fn expect_success(what: &str, output: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{text}",
        output.status
    );
    text
}

/// The `node_modules` folder holding `@kubernetes-models/keda` and
/// `@kubernetes-models/prometheus-operator`: `DEPLOY_NODE_MODULES`, or the
/// one .ci/run installs into, `target/deploy-tools/node_modules`.
pub fn node_modules() -> PathBuf {
    let folder = std::env::var_os("DEPLOY_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/deploy-tools/node_modules"));
    for package in ["keda", "prometheus-operator"] {
        let path = folder.join("@kubernetes-models").join(package);
        assert!(
            path.is_dir(),
            "no {}: install the models with `npm install --prefix target/deploy-tools --no-save \
             @kubernetes-models/keda@2.0.0 @kubernetes-models/prometheus-operator@6.0.0` \
             (.ci/run does), or point DEPLOY_NODE_MODULES at a node_modules that has them",
            path.display()
        );
    }
    folder
}

/// `value` as JSON text (YAML's tags and non-string keys do not occur in
/// manifests).
pub fn to_json(value: &Value) -> String {
    let mut out = String::new();
    write_json(value, &mut out);
    out
}

fn write_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write!(out, "{n}").unwrap(),
        Value::String(s) => write_json_string(s, out),
        Value::Sequence(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::Mapping(map) => {
            out.push('{');
            for (index, (key, item)) in map.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                let key = match key {
                    Value::String(s) => s.clone(),
                    other => serde_norway::to_string(other).unwrap().trim().to_owned(),
                };
                write_json_string(&key, out);
                out.push(':');
                write_json(item, out);
            }
            out.push('}');
        }
        Value::Tagged(tagged) => write_json(&tagged.value, out),
    }
}

fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `text` percent-encoded for a query string.
pub fn url_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            write!(out, "%{byte:02X}").unwrap();
        }
    }
    out
}

/// `GET path` on 127.0.0.1:`port` as HTTP/1.0 (so the answer is neither
/// chunked nor kept alive): the status code and the body.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|error| format!("connect {addr}: {error}"))?;
    let timeout = Some(Duration::from_secs(20));
    stream.set_read_timeout(timeout).unwrap();
    stream.set_write_timeout(timeout).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .map_err(|error| format!("send GET {path}: {error}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|error| format!("read the answer to GET {path}: {error}"))?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {response:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// Prometheus's JSON answer at `path` (`/api/v1/...`), its `data` member;
/// panics unless the status is 200 and `"status": "success"`.
pub fn prometheus_api(port: u16, path: &str) -> Value {
    let (status, body) =
        http_get(port, path).unwrap_or_else(|error| panic!("Prometheus {path}: {error}"));
    assert_eq!(status, 200, "Prometheus {path} answered {status}: {body}");
    let value: Value = serde_norway::from_str(&body)
        .unwrap_or_else(|error| panic!("Prometheus {path}: not JSON ({error}): {body}"));
    assert_eq!(
        value["status"].as_str(),
        Some("success"),
        "Prometheus {path}: {body}"
    );
    value["data"].clone()
}

/// The operands of a PromQL expression that must each return data when the
/// worker runs: the expression split at its top-level comparisons and set
/// operators (`>`, `==`, `and`, `unless`, ...; with their `on (...)`,
/// `bool` and `group_left` modifiers), numbers dropped, outer parentheses
/// removed, and `absent(x)` replaced by `x` (absent() returns data only
/// when there is none).
pub fn operands(expr: &str) -> Vec<String> {
    let mut found = Vec::new();
    collect_operands(expr, &mut found);
    found
}

fn collect_operands(expr: &str, found: &mut Vec<String>) {
    let expr = strip_parens(expr.trim());
    if expr.is_empty() || expr.parse::<f64>().is_ok() {
        return;
    }
    for operators in [
        &["or"][..],
        &["and", "unless"][..],
        &["==", "!=", ">=", "<=", ">", "<"][..],
    ] {
        if let Some((start, end)) = top_level_operator(expr, operators) {
            collect_operands(&expr[..start], found);
            collect_operands(skip_modifiers(&expr[end..]), found);
            return;
        }
    }
    if let Some(inner) = expr
        .strip_prefix("absent(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        collect_operands(inner, found);
        return;
    }
    found.push(expr.to_owned());
}

/// `expr` without parentheses that enclose all of it.
fn strip_parens(mut expr: &str) -> &str {
    while expr.starts_with('(') && expr.ends_with(')') {
        let mut depth = 0i32;
        let mut encloses = true;
        for (index, c) in expr.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth == 0 && index < expr.len() - 1 {
                encloses = false;
                break;
            }
        }
        if !encloses {
            break;
        }
        expr = expr[1..expr.len() - 1].trim();
    }
    expr
}

/// The first of `operators` at depth 0 (outside parentheses, brackets,
/// braces and strings), as a byte range; word operators only as words.
fn top_level_operator(expr: &str, operators: &[&str]) -> Option<(usize, usize)> {
    let bytes = expr.as_bytes();
    let mut depth = 0i32;
    let mut quote: Option<u8> = None;
    let mut index = 0;
    while index < bytes.len() {
        let c = bytes[index];
        if let Some(q) = quote {
            if c == b'\\' {
                index += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
            index += 1;
            continue;
        }
        match c {
            b'"' | b'\'' | b'`' => quote = Some(c),
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ if depth == 0 => {
                for operator in operators {
                    let op = operator.as_bytes();
                    if !bytes[index..].starts_with(op) {
                        continue;
                    }
                    let end = index + op.len();
                    if op[0].is_ascii_alphabetic() {
                        let before = index == 0 || !is_word(bytes[index - 1]);
                        let after = end == bytes.len() || !is_word(bytes[end]);
                        if before && after {
                            return Some((index, end));
                        }
                    } else {
                        // `>` and `<` must not be the start of `>=`/`<=`
                        // (listed first) nor part of `=~`, `!~`.
                        return Some((index, end));
                    }
                }
            }
            _ => {}
        }
        index += 1;
    }
    None
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// `rest` without the binary operator's modifiers at its start.
fn skip_modifiers(mut rest: &str) -> &str {
    loop {
        rest = rest.trim_start();
        let mut matched = false;
        for word in ["bool", "on", "ignoring", "group_left", "group_right"] {
            if let Some(after) = rest.strip_prefix(word) {
                if after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                    continue;
                }
                let after = after.trim_start();
                rest = if after.starts_with('(') {
                    let close = after.find(')').map_or(after.len(), |i| i + 1);
                    &after[close..]
                } else {
                    after
                };
                matched = true;
                break;
            }
        }
        if !matched {
            return rest;
        }
    }
}

/// The metric names a PromQL expression selects (`worker_*` and `up`).
pub fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        if is_word(bytes[index]) && (index == 0 || !is_word(bytes[index - 1])) {
            let start = index;
            while index < bytes.len() && is_word(bytes[index]) {
                index += 1;
            }
            let word = &expr[start..index];
            if (word.starts_with("worker_") || word == "up") && !names.iter().any(|n| n == word) {
                names.push(word.to_owned());
            }
        } else {
            index += 1;
        }
    }
    names
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operands_of_alert_expressions() {
        assert_eq!(
            operands(r#"up{job=~"(.*/)?x"} == 0"#),
            [r#"up{job=~"(.*/)?x"}"#]
        );
        assert_eq!(operands(r#"absent(up{job=~"x"})"#), [r#"up{job=~"x"}"#]);
        assert_eq!(
            operands(
                "(max by (stream, group) (worker_group_lag) > 0) and on (stream, group) \
                 (sum by (stream, group) (rate(a[10m]) + rate(b[10m])) == 0)"
            ),
            [
                "max by (stream, group) (worker_group_lag)",
                "sum by (stream, group) (rate(a[10m]) + rate(b[10m]))"
            ]
        );
        assert_eq!(
            operands("sum(rate(a_sum[10m])) / sum(rate(a_count[10m])) > 24"),
            ["sum(rate(a_sum[10m])) / sum(rate(a_count[10m]))"]
        );
        assert_eq!(operands(r#"x{a!="b"} >= bool 3"#), [r#"x{a!="b"}"#]);
    }

    #[test]
    fn json_of_yaml() {
        let value: Value =
            serde_norway::from_str("a: [1, \"x\\\"y\", true, null]\nb: {c: d}").unwrap();
        assert_eq!(
            to_json(&value),
            r#"{"a":[1,"x\"y",true,null],"b":{"c":"d"}}"#
        );
    }
}
