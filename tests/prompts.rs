//! cargo-generate's own command line (the `cargo-generate` binary of this
//! package), as a user runs it: the interactive questions answered on a
//! pseudo-terminal, where a refused answer is asked again and the project
//! that comes out is the one `--silent` generates from the same answers; and
//! a project generated again from its recorded `template-values.toml`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{generate_with, repo_root, walk_files};
use rexpect::reader::Options;
use rexpect::session::PtySession;

/// How long one prompt may take to appear (the first one follows a copy of
/// the template).
const PROMPT_TIMEOUT_MS: u64 = 60_000;

/// The answers typed at the prompts, as `-d` pairs, for the `--silent` twin.
/// `customize` opens the questions that are not asked by default.
const ANSWERS: &[(&str, &str)] = &[
    ("use_serde_validation", "true"),
    ("add_metrics", "true"),
    ("stream", "orders:v1"),
    ("consumer_group", "billing-workers"),
    ("consumer_name", "billing-1"),
    ("block_timeout", "250"),
    ("author", "Ada Lovelace"),
    ("metrics_addr", "0.0.0.0:9100"),
];

#[test]
fn a_refused_answer_is_asked_again_and_the_project_matches_the_silent_one() {
    let work = tempfile::Builder::new()
        .prefix("template-prompts-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let destination = work.path().join("out");
    let mut command = cargo_generate(work.path(), "prompted-worker", &destination);
    command.env("TERM", "xterm");
    let options = Options::new()
        .timeout_ms(Some(PROMPT_TIMEOUT_MS))
        .strip_ansi_escape_codes(true);
    let mut session = rexpect::session::spawn_with_options(command, options).unwrap();
    let mut seen = String::new();

    // The three questions everyone is asked (bools: a menu, Enter takes
    // the highlighted default, `j` moves down to `true`).
    choose(
        &mut session,
        &mut seen,
        "Validate entries into a typed message",
        "\r",
    );
    choose(&mut session, &mut seen, "Serve Prometheus metrics", "\r");
    choose(&mut session, &mut seen, "Change the other settings?", "j\r");

    answer(
        &mut session,
        &mut seen,
        "Redis URL (redis:// or rediss://",
        "",
    );
    answer(&mut session, &mut seen, "Stream to consume (", "my stream");
    expect(
        &mut session,
        &mut seen,
        "\"my stream\" is not a valid value for stream",
    );
    answer(&mut session, &mut seen, "Stream to consume (", "orders:v1");
    answer(
        &mut session,
        &mut seen,
        "Consumer group (",
        "billing-workers",
    );
    answer(&mut session, &mut seen, "Consumer name (", "billing-1");
    answer(
        &mut session,
        &mut seen,
        "block timeout in milliseconds",
        "250",
    );
    answer(&mut session, &mut seen, "Description (", "");
    answer(&mut session, &mut seen, "Author (", "Ada Lovelace");
    answer(&mut session, &mut seen, "Author email (", "");
    answer(&mut session, &mut seen, "Metrics address:", "0.0.0.0:9100");
    expect(&mut session, &mut seen, "New project created");
    let rest = session.exp_eof().unwrap();
    seen.push_str(&rest);

    let prompted = destination.join("prompted-worker");
    let silent = generate_with("prompted-worker", ANSWERS);
    assert_same_tree(silent.path(), &prompted);
    // The answers really were taken (not the defaults on both sides).
    let defaults = silent.read("src/lib.rs");
    assert!(defaults.contains(r#"stream: "orders:v1","#), "{defaults}");
    assert!(silent.read("config.yaml").contains("0.0.0.0:9100"));
}

#[test]
fn a_project_generated_again_from_its_recorded_answers_is_the_same() {
    let answers = [
        ("stream", "orders:v1"),
        ("consumer_name", "billing-1"),
        ("author", "Ada Lovelace"),
        ("use_serde_validation", "false"),
        ("metrics_addr", "[::1]:9100"),
    ];
    let first = generate_with("recorded-worker", &answers);

    // As the README's update path runs it.
    let work = tempfile::Builder::new()
        .prefix("template-values-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let destination = work.path().join("update");
    let mut command = cargo_generate(work.path(), "recorded-worker", &destination);
    command
        .arg("--silent")
        .arg("--values-file")
        .arg(first.path().join("template-values.toml"));
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "cargo-generate --values-file failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_same_tree(first.path(), &destination.join("recorded-worker"));
}

/// `cargo-generate generate` for the project `name` from a copy of the
/// repository made under `work`, into `destination` (created), with the
/// harness's own empty configuration and no `CARGO_GENERATE_*` values from
/// the environment.
fn cargo_generate(work: &Path, name: &str, destination: &Path) -> Command {
    let source = work.join("template-repo");
    copy_source(repo_root(), &source);
    let app_config = work.join("cargo-generate-app.toml");
    fs::write(&app_config, "").unwrap();
    fs::create_dir(destination).unwrap();

    let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-generate"));
    command
        .arg("generate")
        .arg("--path")
        .arg(&source)
        .arg("template")
        .args(["--name", name, "--vcs", "none", "--no-workspace"])
        .arg("--config")
        .arg(&app_config)
        .arg("--destination")
        .arg(destination)
        .env_remove("CARGO_GENERATE_TEMPLATE_VALUES_FILE");
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_GENERATE_VALUE_") {
            command.env_remove(key);
        }
    }
    command
}

/// The same files with the same bytes under `expected` and `actual`.
fn assert_same_tree(expected: &Path, actual: &Path) {
    let expected_files = relative_files(expected);
    assert_eq!(
        expected_files,
        relative_files(actual),
        "{} and {} have different files",
        expected.display(),
        actual.display()
    );
    for file in &expected_files {
        let want = fs::read(expected.join(file)).unwrap();
        let got = fs::read(actual.join(file)).unwrap();
        assert!(
            want == got,
            "{} differs:\n--- {}\n{}\n--- {}\n{}",
            file.display(),
            expected.display(),
            String::from_utf8_lossy(&want),
            actual.display(),
            String::from_utf8_lossy(&got),
        );
    }
}

/// Waits for `needle` in the session's output, which is kept in `seen` so
/// that a failure shows everything the prompts printed.
fn expect(session: &mut PtySession, seen: &mut String, needle: &str) {
    match session.exp_string(needle) {
        Ok(before) => {
            seen.push_str(&before);
            seen.push_str(needle);
        }
        Err(error) => panic!("waiting for {needle:?}: {error}\nthe terminal so far:\n{seen}"),
    }
}

/// Answers a yes/no menu once it is drawn: `keys` go to the menu, not to
/// the line the question was printed on.
fn choose(session: &mut PtySession, seen: &mut String, question: &str, keys: &str) {
    expect(session, seen, question);
    expect(session, seen, "true\r\n");
    session.send(keys).unwrap();
    session.flush().unwrap();
}

/// Types `text` and Enter at a question once its prompt, which ends with
/// the default in brackets, is complete.
fn answer(session: &mut PtySession, seen: &mut String, question: &str, text: &str) {
    expect(session, seen, question);
    expect(session, seen, "]: ");
    session.send(text).unwrap();
    session.send("\r").unwrap();
    session.flush().unwrap();
}

/// Every file under `dir`, relative to it, sorted.
fn relative_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    walk_files(dir, &mut files);
    let mut files: Vec<PathBuf> = files
        .into_iter()
        .map(|file| file.strip_prefix(dir).unwrap().to_owned())
        .collect();
    files.sort();
    files
}

/// Copies the template repository without `.git` and `target`, as a clone
/// would have it: cargo-generate copies the whole `--path` directory.
fn copy_source(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == ".git" || name == "target" {
            continue;
        }
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_source(&entry.path(), &to.join(&name));
        } else if kind.is_file() {
            fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}
