//! Project names at the edge of what the pre hook accepts compile: the hook
//! refuses what cannot make this crate (tests/generation.rs), and what it
//! lets through builds, its tests included.

mod common;

use common::{cargo, generate_with};

/// Accepted names that exercise cargo-generate's kebab-case and the crate
/// name derived from it: `(--name, project directory)`.
const EDGE_NAMES: &[(&str, &str)] = &[
    // One letter: the shortest name.
    ("q", "q"),
    // Keywords inside a longer name, with `_`, `-` and case to fold.
    ("Self_Async-fn", "self-async-fn"),
    // Digits after the first letter, and a keyword followed by a digit.
    ("Type2", "type2"),
    // Standard-library and dependency names as parts of a name.
    ("std-redis_tokio", "std-redis-tokio"),
];

#[test]
fn edge_case_names_compile() {
    for (name, directory) in EDGE_NAMES {
        let project = generate_with(name, &[]);
        assert_eq!(
            project.file_name().unwrap().to_string_lossy(),
            *directory,
            "--name {name}"
        );
        cargo(&project, &["check", "--locked", "--all-targets"]);
    }
}
