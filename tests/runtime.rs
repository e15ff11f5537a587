//! The runtime crate (`template/runtime`): the same in every generated
//! project, a crate of this repository in its own right (its tests, its
//! documentation and its package), with a version that is the template's
//! and a layout map in `lib.rs` that tells the truth about its imports.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use common::{RedisServer, VARIANTS, cargo_with_env, generate, generate_with, repo_root};

fn runtime_dir() -> PathBuf {
    repo_root().join("template/runtime")
}

/// Every file below `dir`, by its path relative to `dir`.
fn files_of(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = Vec::new();
    common::walk_files(dir, &mut files);
    files
        .into_iter()
        .map(|file| {
            let bytes = fs::read(&file).unwrap();
            (file.strip_prefix(dir).unwrap().to_owned(), bytes)
        })
        .collect()
}

/// Answer sets beyond the variants: every question answered, in forms that
/// would show up in any file they reached.
const UNUSUAL_ANSWERS: &[(&str, &[(&str, &str)])] = &[
    (
        "Billing_Events2",
        &[
            ("customize", "true"),
            ("worker_name", "Billing_Events2"),
            ("description", "Bills {{ everyone }} {% raw %} & more"),
            ("author", "Zoë O'Brien"),
            ("email", "zoe@example.org"),
            ("redis_url", "rediss://cache.internal:6380/3"),
            ("stream", "{orders}:v1"),
            ("consumer_group", "{orders}-billing"),
            ("consumer_name", "billing-1"),
            ("block_timeout", "250"),
            ("metrics_addr", "[::1]:9100"),
        ],
    ),
    (
        "plain-raw-worker",
        &[
            ("use_serde_validation", "false"),
            ("add_metrics", "false"),
            ("stream", "a"),
            ("consumer_group", "b"),
        ],
    ),
];

/// The runtime folder of every generated project is byte for byte the
/// repository's `template/runtime`: options are features, answers live in
/// the project's own crate.
#[test]
fn the_runtime_folder_is_identical_in_every_variant_and_answer_set() {
    let expected = files_of(&runtime_dir());
    assert!(expected.contains_key(Path::new("src/lib.rs")));
    let mut projects: Vec<(String, common::GeneratedProject)> = VARIANTS
        .iter()
        .map(|variant| (variant.label.to_owned(), generate(variant)))
        .collect();
    for (name, answers) in UNUSUAL_ANSWERS {
        projects.push(((*name).to_owned(), generate_with(name, answers)));
    }
    for (label, project) in &projects {
        let generated = files_of(&project.path().join("runtime"));
        let names = |files: &BTreeMap<PathBuf, Vec<u8>>| -> BTreeSet<PathBuf> {
            files.keys().cloned().collect()
        };
        assert_eq!(
            names(&generated),
            names(&expected),
            "`{label}`: the runtime's files differ"
        );
        for (path, bytes) in &expected {
            assert!(
                generated[path] == *bytes,
                "`{label}`: runtime/{} differs from template/runtime/{}",
                path.display(),
                path.display()
            );
        }
    }
}

/// The runtime's version is the template's: a project says which runtime
/// it carries, and `--version` prints it.
#[test]
fn the_runtime_version_is_the_template_version() {
    let manifest = fs::read_to_string(runtime_dir().join("Cargo.toml")).unwrap();
    let version = manifest
        .lines()
        .find_map(|line| line.strip_prefix("version = "))
        .map(|version| version.trim_matches('"'))
        .expect("a version in template/runtime/Cargo.toml");
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    let pre = fs::read_to_string(repo_root().join("hooks/pre.rhai")).unwrap();
    assert!(
        pre.contains(&format!("const TEMPLATE_VERSION = \"{version}\";")),
        "hooks/pre.rhai's TEMPLATE_VERSION is not {version}"
    );
}

/// `cargo test`, `cargo doc` (no warnings) and `cargo package` of the
/// runtime, in this repository, without generating anything.
#[test]
fn the_runtime_tests_documents_and_packages_here() {
    let redis = RedisServer::start();
    let root = repo_root();
    let output = cargo_with_env(
        root,
        &["test", "-p", "redis-streams-runtime", "--all-features"],
        &[("REDIS_URL", &redis.url())],
    );
    assert!(output.contains("test result: ok"), "{output}");
    cargo_with_env(
        root,
        &[
            "doc",
            "-p",
            "redis-streams-runtime",
            "--no-deps",
            "--all-features",
        ],
        &[("RUSTDOCFLAGS", "-D warnings")],
    );
    // `--allow-dirty`: the suite also runs before a change is committed.
    let output = cargo_with_env(
        root,
        &["package", "-p", "redis-streams-runtime", "--allow-dirty"],
        &[],
    );
    let packaged = output
        .lines()
        .find(|line| line.trim_start().starts_with("Packaged"))
        .unwrap_or_default();
    assert!(!packaged.is_empty(), "{output}");
}

/// The top-level modules of the runtime in the order of `lib.rs`'s layout
/// map, and the modules each one imports (`crate::<module>`, tests left
/// out).
fn layout_and_imports() -> (Vec<String>, BTreeMap<String, BTreeSet<String>>) {
    let src = runtime_dir().join("src");
    let lib = fs::read_to_string(src.join("lib.rs")).unwrap();
    let layout_start = lib
        .find("//! # Layout")
        .expect("a Layout section in lib.rs");
    let order: Vec<String> = lib[layout_start..]
        .lines()
        .take_while(|line| line.starts_with("//!"))
        .filter_map(|line| line.strip_prefix("//! - "))
        // "[`worker`] — ..." or "`metrics` — ...": the first name in backquotes.
        .filter_map(|line| line.split('`').nth(1))
        .map(str::to_owned)
        .collect();
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    common::walk_files(&src, &mut files);
    for file in files
        .iter()
        .filter(|file| file.extension() == Some("rs".as_ref()))
    {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if ["lib", "bin"].contains(&top.as_str()) {
            continue;
        }
        let text = fs::read_to_string(file).unwrap();
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap()
            .lines()
            .map(|line| line.split("//").next().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let mut found = BTreeSet::new();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for name in group.split([',', ' ', '\n']) {
                    let name = name.split("::").next().unwrap().trim();
                    if !name.is_empty() {
                        found.insert(name.to_owned());
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.insert(name);
            }
        }
        found.remove(&top);
        imports.entry(top).or_default().extend(found);
    }
    (order, imports)
}

/// `lib.rs` says that data flows one way, down its layout map: every module
/// is in the map, and none imports a module above it (so none imports one
/// that imports it back).
#[test]
fn the_runtime_layout_map_is_true() {
    let (order, imports) = layout_and_imports();
    let position = |name: &str| order.iter().position(|listed| listed == name);
    let mut wrong = Vec::new();
    for (module, used) in &imports {
        let Some(at) = position(module) else {
            wrong.push(format!("`{module}` is not in the layout map"));
            continue;
        };
        for other in used {
            match position(other) {
                None => wrong.push(format!("`{other}` (used by `{module}`) is not in the map")),
                Some(other_at) if other_at < at => {
                    wrong.push(format!("`{module}` imports `{other}`, which is above it"));
                }
                Some(_) => {}
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "layout map {order:?}:\n{}",
        wrong.join("\n")
    );
}

/// Every version has its entry in CHANGELOG.md (Keep a Changelog: a
/// `## [x.y.z] - date` heading), the current one first.
#[test]
fn the_changelog_has_an_entry_for_this_version() {
    let changelog = fs::read_to_string(repo_root().join("CHANGELOG.md")).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let first = changelog
        .lines()
        .find(|line| line.starts_with("## ["))
        .expect("a version heading in CHANGELOG.md");
    assert!(
        first.starts_with(&format!("## [{version}] - ")),
        "CHANGELOG.md's newest entry is `{first}`, not {version}"
    );
    let date = &first[format!("## [{version}] - ").len()..];
    let parts: Vec<&str> = date.split('-').collect();
    assert!(
        parts.len() == 3 && parts.iter().all(|part| part.parse::<u32>().is_ok()),
        "`{first}`: the date should be YYYY-MM-DD"
    );
}
