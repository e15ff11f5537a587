//! Generation itself, without building anything: what the pre hook refuses
//! (and what a refusal leaves behind), and what the defaults render.

mod common;

use std::path::Path;

use common::{generate_with, note, try_generate, unrendered_liquid, walk_files};

/// Generates `my-worker` with one bad answer and returns the error text,
/// after checking that the refusal wrote no file.
fn refusal(key: &str, value: &str) -> String {
    let destination = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let result = try_generate("my-worker", &[(key, value)], destination.path());
    let Err(error) = result else {
        panic!("{key}={value:?} was accepted");
    };
    assert_nothing_written(destination.path());
    error
}

/// No file below `destination`. cargo-generate 0.23 creates the project
/// directory before the pre hook runs, so a refusal may leave it behind,
/// empty; anything more would be a half-written project.
fn assert_nothing_written(destination: &Path) {
    let mut files = Vec::new();
    walk_files(destination, &mut files);
    assert!(files.is_empty(), "a refused generation wrote {files:?}");
    let left: Vec<_> = std::fs::read_dir(destination)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty() || left == ["my-worker"],
        "a refused generation left {left:?}"
    );
}

/// Asserts that the hook refused `key=value` with `rule`, naming both.
fn assert_refused(key: &str, value: &str, rule: &str) {
    let error = refusal(key, value);
    let expected = format!("invalid value for `{key}`: \"{value}\" ({rule})");
    assert!(
        error.contains(&expected),
        "{key}={value:?}: expected the error to contain\n  {expected}\ngot:\n  {error}"
    );
}

const KEY_RULE: &str = "only letters, digits and : . _ - / { } are allowed";
const BLOCK_RULE: &str = "must be a whole number of milliseconds from 1 to 300000";

#[test]
fn a_stream_with_a_space_is_refused() {
    assert_refused("stream", "my stream", KEY_RULE);
}

#[test]
fn a_consumer_group_with_a_quote_is_refused() {
    assert_refused("consumer_group", "billing'workers", KEY_RULE);
    assert_refused("consumer_group", "billing\"workers", KEY_RULE);
}

#[test]
fn a_block_timeout_that_is_not_a_number_is_refused() {
    assert_refused("block_timeout", "abc", BLOCK_RULE);
}

#[test]
fn a_block_timeout_of_zero_is_refused() {
    assert_refused("block_timeout", "0", BLOCK_RULE);
}

#[test]
fn a_redis_url_of_another_scheme_is_refused() {
    assert_refused(
        "redis_url",
        "http://localhost:6379",
        "must start with redis:// or rediss://",
    );
}

#[test]
fn a_worker_name_starting_with_a_digit_is_refused() {
    assert_refused("worker_name", "2fast", "must start with a letter");
}

#[test]
fn an_email_without_at_is_refused() {
    assert_refused(
        "email",
        "developer.example.com",
        "must look like name@example.com",
    );
}

#[test]
fn a_description_with_a_double_quote_is_refused() {
    assert_refused(
        "description",
        "The \"best\" worker",
        "must not contain double quotes, backslashes or line breaks",
    );
}

#[test]
fn a_refusal_leaves_at_most_an_empty_project_directory() {
    let destination = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let result = try_generate("my-worker", &[("stream", "my stream")], destination.path());
    assert!(result.is_err());
    assert_nothing_written(destination.path());
    let project = destination.path().join("my-worker");
    if project.exists() {
        note(format!(
            "note: cargo-generate left an empty {} after refusing (it creates the project \
             directory before the pre hook runs)",
            project.display()
        ));
    }
}

#[test]
fn the_defaults_render_a_typed_message_named_after_the_project() {
    let project = generate_with("my-redis-worker", &[]);
    let leftovers = unrendered_liquid(&project);
    assert!(
        leftovers.is_empty(),
        "unrendered Liquid:\n{}",
        leftovers.join("\n")
    );

    let business_logic = project.read("src/business_logic.rs");
    assert!(
        business_logic.contains("pub struct MyRedisWorkerMessage"),
        "src/business_logic.rs:\n{business_logic}"
    );
    // The answers are the defaults the project hands to the runtime.
    let defaults = project.read("src/lib.rs");
    for line in [
        r#"worker_name: "my-redis-worker","#,
        r#"redis_url: "redis://127.0.0.1:6379","#,
        r#"stream: "my-stream","#,
        r#"consumer_group: "my-group","#,
        r#"consumer_name: "","#,
        "block_timeout_ms: 1000,",
        r#"metrics_addr: "127.0.0.1:9464","#,
    ] {
        assert!(defaults.contains(line), "src/lib.rs lacks {line}");
    }
    let manifest = project.read("Cargo.toml");
    assert!(
        manifest.contains(r#"name = "my-redis-worker""#),
        "{manifest}"
    );
    assert!(
        manifest.contains(r#"features = ["metrics", "validation"]"#),
        "{manifest}"
    );
    assert!(!project.has("src/business_logic_raw.rs"));
}

#[test]
fn without_serde_validation_there_is_no_message_type() {
    let project = generate_with("my-redis-worker", &[("use_serde_validation", "false")]);
    let leftovers = unrendered_liquid(&project);
    assert!(
        leftovers.is_empty(),
        "unrendered Liquid:\n{}",
        leftovers.join("\n")
    );

    let business_logic = project.read("src/business_logic.rs");
    let message_types: Vec<&str> = business_logic
        .lines()
        .filter(|line| {
            line.contains("Message") && (line.contains("struct ") || line.contains("type "))
        })
        .collect();
    assert!(message_types.is_empty(), "message types: {message_types:?}");
    assert!(!project.has("src/business_logic_raw.rs"));
    assert!(!project.has("tests/validation.rs"));
    assert!(!business_logic.contains("validation"));
    let manifest = project.read("Cargo.toml");
    assert!(!manifest.contains("chrono"), "{manifest}");
    assert!(manifest.contains(r#"features = ["metrics"]"#), "{manifest}");
}

#[test]
fn unusual_names_reach_every_case() {
    let project = generate_with(
        "Billing_Events2",
        &[
            ("worker_name", "Billing_Events2"),
            ("stream", "{orders}:v1"),
            ("consumer_group", "{billing}-workers"),
            ("consumer_name", "billing-1"),
            ("block_timeout", "250"),
        ],
    );
    assert_eq!(project.file_name().unwrap(), "billing-events2");
    assert!(
        project
            .read("Cargo.toml")
            .contains(r#"name = "billing-events2""#)
    );
    assert!(
        project
            .read("src/business_logic.rs")
            .contains("pub struct BillingEvents2Message")
    );
    assert!(
        project
            .read("src/main.rs")
            .contains("use billing_events2::")
    );
    let defaults = project.read("src/lib.rs");
    for line in [
        r#"worker_name: "Billing_Events2","#,
        r#"stream: "{orders}:v1","#,
        r#"consumer_group: "{billing}-workers","#,
        r#"consumer_name: "billing-1","#,
        "block_timeout_ms: 250,",
    ] {
        assert!(defaults.contains(line), "src/lib.rs lacks {line}");
    }
}

const NAME_RULES: &[(&str, &str)] = &[
    ("async", "`async` is a Rust keyword and cannot name a crate"),
    ("Self", "`self` is a Rust keyword and cannot name a crate"),
    ("crate", "`crate` is a Rust keyword and cannot name a crate"),
    ("super", "`super` is a Rust keyword and cannot name a crate"),
    ("gen", "`gen` is a Rust keyword and cannot name a crate"),
    ("core", "`core` is part of Rust's standard library"),
    ("std", "`std` is part of Rust's standard library"),
    ("alloc", "`alloc` is part of Rust's standard library"),
    (
        "proc-macro",
        "`proc_macro` is part of Rust's standard library",
    ),
    ("test", "conflicts with Rust's built-in test library"),
    ("deps", "conflicts with cargo's build directory names"),
    ("nul", "a reserved Windows file name"),
    (
        "redis",
        "the generated project depends on a crate of that name",
    ),
];

#[test]
fn names_that_cannot_make_this_crate_are_refused_with_the_rule() {
    for (name, rule) in NAME_RULES {
        let destination = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let Err(error) = try_generate(name, &[], destination.path()) else {
            panic!("the project name {name:?} was accepted");
        };
        let project_name = name.to_lowercase();
        let expected = format!("invalid value for `project name`: \"{project_name}\" ({rule})");
        assert!(
            error.contains(&expected),
            "{name:?}: expected the error to contain\n  {expected}\ngot:\n  {error}"
        );
    }
}

/// The pre hook refuses project names that clash with a crate of the
/// generated workspace: the dependencies of both crates, the runtime itself
/// and its binary. Its list must follow template/Cargo.toml.liquid and
/// template/runtime/Cargo.toml.
#[test]
fn every_dependency_of_the_generated_crate_is_a_refused_name() {
    let mut dependencies = vec!["redis_streams_runtime".to_owned(), "echo_worker".to_owned()];
    for manifest in ["template/Cargo.toml.liquid", "template/runtime/Cargo.toml"] {
        let manifest = std::fs::read_to_string(common::repo_root().join(manifest)).unwrap();
        let mut in_dependencies = false;
        for line in manifest.lines() {
            if line.starts_with('[') {
                in_dependencies = line == "[dependencies]";
                continue;
            }
            if !in_dependencies || line.starts_with("{%") || line.starts_with('#') {
                continue;
            }
            if let Some((name, _)) = line.split_once('=') {
                let name = name.trim().replace('-', "_");
                if !dependencies.contains(&name) {
                    dependencies.push(name);
                }
            }
        }
    }
    for expected in ["tokio", "axum", "chrono", "redis_streams_runtime"] {
        assert!(
            dependencies.contains(&expected.to_owned()),
            "{dependencies:?}"
        );
    }
    for dependency in dependencies {
        let destination = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let result = try_generate(&dependency, &[], destination.path());
        let Err(error) = result else {
            panic!(
                "the project name {dependency:?} (a dependency of the generated crate) was accepted"
            );
        };
        assert!(
            error.contains("the generated project depends on a crate of that name"),
            "{dependency:?}: {error}"
        );
    }
}

#[test]
fn a_redis_url_with_credentials_is_refused_without_repeating_them() {
    for url in [
        "redis://:s3cret-pw@127.0.0.1:6379",
        "redis://app:s3cret-pw@db.internal:6379/0",
        "rediss://app:s3cret-pw@db.internal:6380",
        "redis://db.internal:6379?password=s3cret-pw",
        "redis://db.internal:6379?protocol=3&token=s3cret-pw",
        "http://app:s3cret-pw@db.internal",
    ] {
        let error = refusal("redis_url", url);
        assert!(
            error.contains("invalid value for `redis_url`: the URL holds credentials")
                && error.contains("REDIS_URL")
                && error.contains("REDIS_PASSWORD_FILE"),
            "{url}: the refusal does not say how to give them at run time:\n{error}"
        );
        assert!(
            !error.contains("s3cret-pw"),
            "{url}: the refusal repeats the password:\n{error}"
        );
    }
}

#[test]
fn a_metrics_address_that_is_not_an_ip_and_port_is_refused() {
    let rule = "must be an IP address and a port, such as 127.0.0.1:9464 or [::1]:9464";
    for value in [
        "localhost:9464",
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:65536",
        "256.0.0.1:9464",
        "1.2.3:9464",
        "[::1:9464",
        "[fe80::g]:9464",
        "[:::1]:9464",
        "[1::2::3]:9464",
        "[12345::1]:9464",
        "[1:2:3:4:5:6:7]:9464",
        "[1:2:3:4:5:6:7:8:9]:9464",
    ] {
        assert_refused("metrics_addr", value, rule);
    }
}

#[test]
fn ip_addresses_and_ports_are_accepted_as_the_metrics_address() {
    for value in [
        "0.0.0.0:0",
        "255.255.255.255:65535",
        "[::]:9464",
        "[fe80::1]:9464",
        "[1:2:3:4:5:6:7:8]:9464",
        "[::ffff:a00:1]:9464",
    ] {
        let destination = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let result = try_generate("my-worker", &[("metrics_addr", value)], destination.path());
        assert!(
            result.is_ok(),
            "metrics_addr={value:?} was refused: {result:?}"
        );
    }
}

#[test]
fn the_metrics_address_reaches_the_edge_files() {
    let project = generate_with("my-worker", &[("metrics_addr", "[::1]:9100")]);
    assert!(
        project
            .read("config.yaml")
            .contains(r#"addr: "[::1]:9100""#),
        "{}",
        project.read("config.yaml")
    );
    assert!(
        project
            .read(".env.example")
            .contains("METRICS_ADDR=[::1]:9100")
    );
    // The compiled-in default, used when neither a config file nor the
    // environment sets the address: the project hands it to the runtime.
    assert!(
        project
            .read("src/lib.rs")
            .contains(r#"metrics_addr: "[::1]:9100","#),
        "{}",
        project.read("src/lib.rs")
    );
    assert!(
        project
            .read("README.md")
            .contains("| `metrics.addr` | `METRICS_ADDR` | `[::1]:9100` |")
    );
}

/// The defaults of the questions behind `customize`, as cargo-generate.toml
/// shows them at the prompts: `(key, default)`.
fn prompted_defaults() -> Vec<(String, String)> {
    let config = std::fs::read_to_string(common::repo_root().join("cargo-generate.toml")).unwrap();
    let mut key = None;
    let mut defaults = Vec::new();
    for line in config.lines() {
        if line.starts_with("[conditional.") {
            key = line
                .trim_end_matches(']')
                .rsplit_once(".placeholders.")
                .map(|(_, key)| key.to_owned());
        } else if let (Some(current), Some(value)) = (&key, line.strip_prefix("default = ")) {
            defaults.push((current.clone(), value.trim_matches('"').to_owned()));
        }
    }
    defaults
}

/// A question that is not asked gets from the pre hook the default its
/// prompt shows; template-values.toml records it.
#[test]
fn unasked_questions_get_the_defaults_their_prompts_show() {
    let defaults = prompted_defaults();
    assert!(defaults.len() >= 9, "{defaults:?}");
    let project = generate_with("my-worker", &[]);
    let recorded = recorded_values(&project.read("template-values.toml"));
    for (key, default) in defaults {
        let value = recorded
            .iter()
            .find(|(recorded_key, _)| *recorded_key == key)
            .map(|(_, value)| value.as_str());
        assert_eq!(value, Some(default.as_str()), "`{key}`");
    }
}

/// The `key = value` lines of template-values.toml's `[values]`, strings
/// unquoted.
fn recorded_values(text: &str) -> Vec<(String, String)> {
    text.lines()
        .skip_while(|line| *line != "[values]")
        .skip(1)
        .filter_map(|line| line.split_once(" = "))
        .map(|(key, value)| (key.to_owned(), value.trim_matches('"').to_owned()))
        .collect()
}

#[test]
fn the_project_records_the_template_version_and_its_answers() {
    let answers = [
        ("stream", "orders:v1"),
        ("consumer_group", "billing-workers"),
        ("block_timeout", "250"),
        ("author", "Ada Lovelace"),
        ("use_serde_validation", "false"),
        ("add_metrics", "false"),
        ("metrics_addr", "[::1]:9100"),
    ];
    let project = generate_with("recorded-worker", &answers);
    let version = env!("CARGO_PKG_VERSION");
    let manifest = project.read("Cargo.toml");
    assert!(
        manifest.contains(&format!(
            "[package.metadata.template]\nname = \"redis-streams-worker\"\nversion = \"{version}\"\n"
        )),
        "{manifest}"
    );
    let values = project.read("template-values.toml");
    assert!(values.contains(&format!("version {version}")), "{values}");
    let recorded = recorded_values(&values);
    for (key, value) in answers {
        assert!(
            recorded.contains(&(key.to_owned(), value.to_owned())),
            "`{key}` = {value:?} not recorded:\n{values}"
        );
    }
}
