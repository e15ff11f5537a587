//! Keeping Redis credentials out of everything a person or a collector
//! reads: `config`, `status`, error messages, log lines, `Debug` prints.
//!
//! [`redact_url`] is the one place that knows where a Redis URL keeps its
//! password, for every form the redis crate accepts (and a few it does
//! not, in case someone tries them): the userinfo of `redis://` and
//! `rediss://`, the `pass`/`password` query parameter of `unix://` and
//! `redis+unix://`, and several comma-separated URLs. The user name stays
//! visible, because "which user" is what an operator needs to know.
//!
//! [`Redactor`] is the second line: it knows the secrets themselves (as
//! written and percent-decoded, and the contents of a password file) and
//! replaces them in any text, whatever produced it. The log writer and the
//! binary's error output go through it, so a library error that echoes a
//! URL or a password cannot leak either.

use std::borrow::Cow;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Query parameters that carry a secret. `pass` is the redis crate's name
/// for a unix socket's password; the others are common guesses that must
/// not leak when someone tries them.
const SECRET_PARAMETERS: &[&str] = &["pass", "password", "passwd", "pwd", "token", "secret"];

/// `url` with every password replaced by `***`, user names kept.
///
/// ```
/// # use redis_streams_runtime::redact::redact_url;
/// assert_eq!(redact_url("redis://app:s3cret@db:6379/0"), "redis://app:***@db:6379/0");
/// assert_eq!(
///     redact_url("unix:///run/redis.sock?user=app&pass=s3cret"),
///     "unix:///run/redis.sock?user=app&pass=***"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let redacted = seeds(url)
        .into_iter()
        .map(redact_one)
        .collect::<Vec<_>>()
        .join(",");
    // Where the seeds were cut wrongly after all, the password read from
    // the whole text is hidden too: more than needed, never less.
    match password_before_last_at(url) {
        Some(password) if !password.is_empty() && redacted.contains(password) => {
            redacted.replace(password, MASK)
        }
        _ => redacted,
    }
}

/// The URLs of a comma-separated seed list (`redis://a:7000,b:7000`),
/// where a comma inside a password (`redis://app:pa,ss@db`) or a query
/// value (`?password=a,b`) separates nothing. A comma separates two seeds
/// when a scheme follows it, or when the text before it is a whole URL:
/// no query or fragment begun, no `user:password` cut short (a userinfo
/// whose `@` only comes after the comma, or a "port" that is no number).
pub fn seeds(url: &str) -> Vec<&str> {
    let mut seeds = Vec::new();
    let mut start = 0;
    for (comma, _) in url.match_indices(',') {
        if separates(&url[start..comma], &url[comma + 1..]) {
            seeds.push(&url[start..comma]);
            start = comma + 1;
        }
    }
    seeds.push(&url[start..]);
    seeds
}

/// Whether the comma between `before` (the current seed so far) and
/// `after` (the rest of the text) ends the seed.
fn separates(before: &str, after: &str) -> bool {
    if starts_with_scheme(after) {
        return true;
    }
    let rest = before.split_once("://").map_or(before, |(_, rest)| rest);
    if rest.contains(['?', '#']) {
        // A query or a fragment runs on up to the next scheme.
        return false;
    }
    if rest.contains('@') {
        // A whole userinfo and its host.
        return true;
    }
    let next_seed = after
        .match_indices(',')
        .find(|(comma, _)| starts_with_scheme(&after[comma + 1..]))
        .map_or(after, |(comma, _)| &after[..comma]);
    if next_seed
        .split_once('@')
        .is_some_and(|(userinfo, _)| !userinfo.contains(':'))
    {
        // The `@` that ends this seed's userinfo comes after the comma
        // (the text before it is no `user:password` of its own): the
        // comma is part of the password.
        return false;
    }
    match rest.rsplit_once(':') {
        // A host and port, or a `user:password` cut by the comma.
        Some((_, port)) => port.bytes().all(|byte| byte.is_ascii_digit()),
        None => true,
    }
}

/// Whether `text` begins with a URL scheme and `://`.
fn starts_with_scheme(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'-' | b'.'))
    })
}

/// The passwords in `url`, each as written and, if different, decoded from
/// percent-encoding (the form a library error would show).
pub fn secrets_in_url(url: &str) -> Vec<String> {
    let mut secrets: Vec<String> = password_before_last_at(url)
        .map(str::to_owned)
        .into_iter()
        .collect();
    for part in seeds(url) {
        let parts = Parts::of(part);
        if let Some(password) = parts.password {
            secrets.push(password.to_owned());
        }
        if let Some(password) = password_before_last_at(part) {
            secrets.push(password.to_owned());
        }
        for (name, value) in parts.query_pairs() {
            if is_secret_parameter(name) && !value.is_empty() {
                secrets.push(value.to_owned());
            }
        }
    }
    let decoded: Vec<String> = secrets
        .iter()
        .map(|secret| percent_decode(secret))
        .filter(|decoded| !secrets.contains(decoded))
        .collect();
    secrets.extend(decoded);
    secrets.retain(|secret| !secret.is_empty());
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    secrets.dedup();
    secrets
}

/// Replaces known secrets in any text.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor for these secrets; empty ones are ignored.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|secret| !secret.is_empty())
            .collect();
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        secrets.dedup();
        Self { secrets }
    }

    /// `text` with every secret replaced by `***`.
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = Cow::Owned(text.replace(secret.as_str(), MASK));
            }
        }
        text
    }
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

/// One URL cut where its secrets can be.
struct Parts<'a> {
    /// Everything up to and including `://`, or empty.
    scheme: &'a str,
    /// The user name of the userinfo, if there is a userinfo.
    user: Option<&'a str>,
    /// The password of the userinfo.
    password: Option<&'a str>,
    /// Host, port and path.
    location: &'a str,
    /// The query without `?`.
    query: Option<&'a str>,
    /// `#` and what follows.
    fragment: &'a str,
}

impl<'a> Parts<'a> {
    fn of(url: &'a str) -> Self {
        let (scheme, rest) = match url.find("://") {
            Some(end) => url.split_at(end + 3),
            None => ("", url),
        };
        let (rest, fragment) = match rest.find('#') {
            Some(start) => rest.split_at(start),
            None => (rest, ""),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        // The last `@` ends the userinfo, so a password holding an
        // unencoded `@` (or `/`) is still taken whole.
        let (user, password, location) = match rest.rsplit_once('@') {
            Some((userinfo, location)) => match userinfo.split_once(':') {
                Some((user, password)) => (Some(user), Some(password), location),
                None => (Some(userinfo), None, location),
            },
            None => (None, None, rest),
        };
        Self {
            scheme,
            user,
            password,
            location,
            query,
            fragment,
        }
    }

    fn query_pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.query
            .into_iter()
            .flat_map(|query| query.split('&'))
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
    }
}

fn redact_one(url: &str) -> String {
    let parts = Parts::of(url);
    let mut redacted = String::with_capacity(url.len());
    redacted.push_str(parts.scheme);
    match (parts.user, parts.password) {
        (Some(user), Some(_)) => {
            redacted.push_str(user);
            redacted.push(':');
            redacted.push_str(MASK);
            redacted.push('@');
        }
        (Some(user), None) => {
            redacted.push_str(user);
            redacted.push('@');
        }
        (None, _) => {}
    }
    redacted.push_str(parts.location);
    if parts.query.is_some() {
        let pairs: Vec<String> = parts
            .query_pairs()
            .map(|(name, value)| {
                if is_secret_parameter(name) {
                    format!("{name}={MASK}")
                } else if value.is_empty() {
                    name.to_owned()
                } else {
                    format!("{name}={value}")
                }
            })
            .collect();
        redacted.push('?');
        redacted.push_str(&pairs.join("&"));
    }
    redacted.push_str(parts.fragment);
    match password_before_last_at(url) {
        Some(password) if !password.is_empty() && redacted.contains(password) => {
            redacted.replace(password, MASK)
        }
        _ => redacted,
    }
}

/// The password if the userinfo ran to the last `@`, the way a password
/// holding an unencoded `?` or `#` was meant (`redis://app:pa#ss@db`), which
/// [`Parts::of`] reads as a query or a fragment. Where the two readings
/// differ, both passwords are hidden: more than needed, never less.
fn password_before_last_at(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (userinfo, _) = rest.rsplit_once('@')?;
    userinfo.split_once(':').map(|(_, password)| password)
}

fn is_secret_parameter(name: &str) -> bool {
    SECRET_PARAMETERS
        .iter()
        .any(|secret| secret.eq_ignore_ascii_case(name))
}

/// `%40` to `@` and so on; invalid sequences stay as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                decoded.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_url_form_loses_its_password_and_keeps_its_user() {
        let cases = [
            ("redis://user:pw1@h:6379/0", "redis://user:***@h:6379/0"),
            ("redis://:pw1@h", "redis://:***@h"),
            (
                "rediss://admin:pw1@h:6380/2#insecure",
                "rediss://admin:***@h:6380/2#insecure",
            ),
            (
                "redis://h?password=pw1&protocol=3",
                "redis://h?password=***&protocol=3",
            ),
            (
                "unix:///tmp/r.sock?user=app&pass=pw1&db=1",
                "unix:///tmp/r.sock?user=app&pass=***&db=1",
            ),
            (
                "unix:///tmp/r.sock?password=pw1",
                "unix:///tmp/r.sock?password=***",
            ),
            (
                "redis+unix:///tmp/r.sock?pass=pw1",
                "redis+unix:///tmp/r.sock?pass=***",
            ),
            ("redis://u:p@w@h", "redis://u:***@h"),
            ("redis://app:pa#ss@db:6379", "redis://app:***@db:6379"),
            ("redis://app:p?ss@db", "redis://app:***@db"),
            ("redis://h:6379?password=a@b", "redis://h:6379?password=***"),
            ("redis://h:1", "redis://h:1"),
            ("redis://user@h", "redis://user@h"),
            (
                "redis://a:pw1@h1:7000,redis://b:pw2@h2:7001",
                "redis://a:***@h1:7000,redis://b:***@h2:7001",
            ),
            ("redis://app:pa,ss@db:6379", "redis://app:***@db:6379"),
            ("redis://app:1,2,3@db:6379", "redis://app:***@db:6379"),
            ("redis://:a,b@db", "redis://:***@db"),
            ("redis://h?password=a,b", "redis://h?password=***"),
            (
                "redis://h?password=a,b&protocol=3",
                "redis://h?password=***&protocol=3",
            ),
            (
                "redis://a:pw,1@h1:7000,h2:7001",
                "redis://a:***@h1:7000,h2:7001",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }

    #[test]
    fn the_secrets_are_found_as_written_and_decoded() {
        let secrets = secrets_in_url("redis://u:p%40ss@h,unix:///s?pass=two&user=u");
        assert!(secrets.contains(&"p%40ss".to_owned()), "{secrets:?}");
        assert!(secrets.contains(&"p@ss".to_owned()), "{secrets:?}");
        assert!(secrets.contains(&"two".to_owned()), "{secrets:?}");
        assert!(!secrets.contains(&"u".to_owned()), "{secrets:?}");
        assert!(secrets_in_url("redis://127.0.0.1:6379").is_empty());
        let secrets = secrets_in_url("redis://app:pa#ss@db");
        assert!(secrets.contains(&"pa#ss".to_owned()), "{secrets:?}");
    }

    #[test]
    fn a_comma_separates_seeds_only_between_whole_urls() {
        let cases: [(&str, &[&str]); 7] = [
            ("redis://a:7000,b:7001", &["redis://a:7000", "b:7001"]),
            (
                "redis://u:p@a:7000,rediss://b:7001",
                &["redis://u:p@a:7000", "rediss://b:7001"],
            ),
            ("redis://app:pa,ss@db:6379", &["redis://app:pa,ss@db:6379"]),
            (
                "redis://app:1,2@db,b:7001",
                &["redis://app:1,2@db", "b:7001"],
            ),
            ("redis://h?password=a,b", &["redis://h?password=a,b"]),
            (
                "redis://a:7000,u:p@b:7001",
                &["redis://a:7000", "u:p@b:7001"],
            ),
            (
                "redis://a:7000?protocol=3,redis://b:7001",
                &["redis://a:7000?protocol=3", "redis://b:7001"],
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(seeds(url), expected, "{url}");
        }
    }

    #[test]
    fn a_password_with_commas_is_a_secret_whole() {
        let secrets = secrets_in_url("redis://app:pa,ss@db:6379");
        assert!(secrets.contains(&"pa,ss".to_owned()), "{secrets:?}");
        let secrets = secrets_in_url("redis://h?password=a,b");
        assert!(secrets.contains(&"a,b".to_owned()), "{secrets:?}");
    }

    #[test]
    fn a_redactor_replaces_every_secret_anywhere() {
        let redactor = Redactor::new(["s3cret".to_owned(), "s3cret-longer".to_owned()]);
        assert_eq!(
            redactor.scrub("auth s3cret-longer then s3cret"),
            "auth *** then ***"
        );
        assert!(matches!(redactor.scrub("nothing here"), Cow::Borrowed(_)));
        assert!(!format!("{redactor:?}").contains("s3cret"));
    }
}
