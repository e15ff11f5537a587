//! The generated project's `deploy/` folder, checked with the real tools:
//!
//! - `every_variant_renders_valid_manifests`: for every variant, the
//!   kustomize base and each overlay rendered with `kubectl kustomize`;
//!   the Kubernetes objects validated with `kubernetes-validate --strict`
//!   (PyPI), KEDA's ScaledObject and TriggerAuthentication and the
//!   Prometheus Operator's PodMonitor with the `@kubernetes-models` packages
//!   (npm, tests/deploy/validate-models.mjs), and the rules the worker
//!   depends on: no `replicas` and no HorizontalPodAutoscaler beside KEDA,
//!   a grace period longer than the shutdown deadline, probes on `/healthz`
//!   and `/readyz` (or `healthcheck`), the config file from the ConfigMap,
//!   the password and TLS files from Secrets that KEDA reads too, one
//!   consumer name per pod, and the KEDA trigger's metadata against the keys
//!   and values KEDA documents for `redis-streams` and
//!   `redis-cluster-streams`; and deploy/README.md's commands that need no
//!   cluster (`kubectl kustomize`, `promtool check rules`) run as written.
//! - `alert_rules_pass_promtool`: `promtool check rules`, and `promtool test
//!   rules` with tests/deploy/alerts.test.yaml, which must fire and silence
//!   every alert of the rules file; and the dashboard's JSON is one Grafana
//!   imports (strict JSON, uid, grid, data source variable, queries).
//! - `a_real_prometheus_sees_every_panel_and_alert`: a generated worker (the
//!   default variant with the fault-injecting logic of
//!   tests/fixtures/fault_business_logic.rs) runs with the manifests' config
//!   file against a redis-server of its own while entries flow, fail, are
//!   retried and dead-lettered and Redis restarts once; a `prometheus`
//!   server on loopback scrapes it and loads the rules. The Deployment's
//!   probe paths answer 200; every dashboard panel's query and every part
//!   of every alert expression returns data through Prometheus's HTTP API;
//!   every rule evaluates without error, and DeadLetters fires with its
//!   annotations rendered. The panels' data becomes a picture,
//!   `target/deploy/dashboard.png` (with `DEPLOY_UPDATE_PNG=1` also
//!   `template/deploy/grafana/dashboard.png`, shown by the generated
//!   README), and that picture must survive generation byte for byte.
//!
//! - `the_exec_probe_passes_for_a_running_worker_without_metrics`: the
//!   no-metrics variant's Deployment probes with `healthcheck`; its exact
//!   command (binary and config path mapped to this machine) fails with no
//!   worker and passes once a worker runs with the pods' config file.
//!
//! Every tool is required: a missing one fails the test with how to
//! install it (.ci/run installs them all).

mod common;
#[path = "deploy/support.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_norway::Value;

use common::{
    GeneratedProject, Process, RedisOptions, RedisServer, VARIANTS, Variant, cargo, debug_binary,
    generate, generate_with, note, repo_root, scrub_env, selected, unrendered_liquid, unused_port,
    variant, wait_until,
};
use support::{
    expect_success, http_get, metric_names, node_modules, operands, prometheus_api, run_tool,
    to_json, url_encode, write_file,
};

/// The kustomizations every generated project has, under deploy/kubernetes.
const KUSTOMIZATIONS: &[&str] = &["base", "overlays/cluster", "overlays/tls"];

/// Metadata keys KEDA documents for its `redis-streams` scaler
/// (https://keda.sh/docs/2.16/scalers/redis-streams/, "Trigger
/// Specification" and "Parameter list").
const REDIS_STREAMS_KEYS: &[&str] = &[
    "address",
    "host",
    "port",
    "usernameFromEnv",
    "passwordFromEnv",
    "stream",
    "consumerGroup",
    "pendingEntriesCount",
    "streamLength",
    "lagCount",
    "activationLagCount",
    "enableTLS",
    "unsafeSsl",
    "databaseIndex",
    "addressFromEnv",
    "hostFromEnv",
    "portFromEnv",
];

/// Metadata keys KEDA documents for `redis-cluster-streams`
/// (https://keda.sh/docs/2.16/scalers/redis-cluster-streams/).
const REDIS_CLUSTER_STREAMS_KEYS: &[&str] = &[
    "addresses",
    "hosts",
    "ports",
    "usernameFromEnv",
    "passwordFromEnv",
    "stream",
    "consumerGroup",
    "pendingEntriesCount",
    "streamLength",
    "lagCount",
    "activationLagCount",
    "enableTLS",
    "unsafeSsl",
    "databaseIndex",
    "addressesFromEnv",
    "hostsFromEnv",
    "portsFromEnv",
];

/// TriggerAuthentication parameters both scalers document ("Authentication
/// Parameters": TLS and username/password).
const AUTH_PARAMETERS: &[&str] = &[
    "username",
    "password",
    "tls",
    "ca",
    "cert",
    "key",
    "keyPassword",
];

/// The kinds the manifests hold; KEDA's and the Operator's are validated by
/// the npm models, since kubernetes-validate has no schema for them.
const CUSTOM_KINDS: &[&str] = &["ScaledObject", "TriggerAuthentication", "PodMonitor"];

// ---------------------------------------------------------------------------
// Manifests

#[test]
fn every_variant_renders_valid_manifests() {
    let modules = node_modules();
    for variant in VARIANTS.iter().filter(|variant| selected(variant.label)) {
        let started = Instant::now();
        let project = generate(variant);
        let leftovers: Vec<String> = unrendered_liquid(&project)
            .into_iter()
            .filter(|line| line.starts_with("deploy/"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{}: Liquid left in deploy/:\n{}",
            variant.label,
            leftovers.join("\n")
        );
        let kubernetes = project.join("deploy/kubernetes");
        let mut found: Vec<String> = Vec::new();
        for entry in ["base", "overlays"] {
            let dir = kubernetes.join(entry);
            if entry == "base" {
                found.push("base".into());
            } else {
                for overlay in std::fs::read_dir(&dir).unwrap() {
                    found.push(format!(
                        "overlays/{}",
                        overlay.unwrap().file_name().to_string_lossy()
                    ));
                }
            }
        }
        found.sort();
        assert_eq!(
            found, KUSTOMIZATIONS,
            "{}: kustomizations under deploy/kubernetes",
            variant.label
        );

        let work = tempfile::tempdir().unwrap();
        for kustomization in KUSTOMIZATIONS {
            let what = format!("{} {kustomization}", variant.label);
            let rendered = kustomize(&kubernetes.join(kustomization));
            let file = write_file(
                work.path(),
                &format!("{}.yaml", kustomization.replace('/', "-")),
                &rendered,
            );
            let objects = parse_documents(&rendered, &what);
            kubernetes_validate(&file, &objects, &what);
            validate_models(&modules, work.path(), &objects, &what);
            check_manifests(variant, &project, kustomization, &objects);
        }
        run_readme_offline_commands(variant, &project);
        note(format!(
            "  deploy manifests ({}): {} kustomizations rendered and valid in {:.1}s",
            variant.label,
            KUSTOMIZATIONS.len(),
            started.elapsed().as_secs_f64()
        ));
    }
}

/// The commands of deploy/README.md that need no cluster (`kubectl
/// kustomize`, `promtool check`) run as written, from the project's
/// directory; the others (docker, `kubectl create`/`apply`) need what the
/// tests do not have.
fn run_readme_offline_commands(variant: &Variant, project: &GeneratedProject) {
    let readme = project.read("deploy/README.md");
    let mut in_block = false;
    let mut ran = Vec::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_block = line == "```bash";
            continue;
        }
        let command = line.split(" #").next().unwrap().trim();
        if !in_block
            || !(command.starts_with("kubectl kustomize ")
                || command.starts_with("promtool check "))
        {
            continue;
        }
        let mut shell = Command::new("sh");
        shell.args(["-c", command]).current_dir(project.path());
        let output = support::run_command(command, &mut shell, "see .ci/run");
        expect_success(
            &format!("{}: `{command}` from deploy/README.md", variant.label),
            &output,
        );
        ran.push(command.to_owned());
    }
    assert!(
        ran.iter()
            .any(|command| command.starts_with("kubectl kustomize ")),
        "{}: deploy/README.md shows no `kubectl kustomize` to run",
        variant.label
    );
    if variant.add_metrics {
        assert!(
            ran.iter()
                .any(|command| command.starts_with("promtool check rules ")),
            "{}: deploy/README.md shows no `promtool check rules` to run",
            variant.label
        );
    }
}

/// `kubectl kustomize dir`: the rendered manifests.
fn kustomize(dir: &Path) -> String {
    let output = run_tool(
        "kubectl",
        &["kustomize", &dir.to_string_lossy()],
        "kubectl is not in Debian's archive: install it from https://dl.k8s.io or your distribution's Kubernetes packages (1.32 renders these)",
    );
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn parse_documents(text: &str, what: &str) -> Vec<Value> {
    let mut objects = Vec::new();
    // kubectl separates the objects with `---` lines.
    for document in text.split("\n---\n") {
        let value: Value = serde_norway::from_str(document)
            .unwrap_or_else(|error| panic!("{what}: rendered YAML does not parse: {error}"));
        if !value.is_null() {
            objects.push(value);
        }
    }
    assert!(!objects.is_empty(), "{what}: nothing rendered");
    objects
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// `kubernetes-validate --strict`: every built-in object passes against
/// the bundled schemas, and the only objects without a schema are KEDA's
/// and the Operator's.
fn kubernetes_validate(file: &Path, objects: &[Value], what: &str) {
    let output = run_tool(
        "kubernetes-validate",
        &["--strict", &file.to_string_lossy()],
        "install it with `python3 -m pip install kubernetes-validate`",
    );
    let text = expect_success(&format!("{what}: kubernetes-validate --strict"), &output);
    for object in objects {
        let kind = kind(object);
        let line = format!(
            "passed for resource {}/{}",
            kind.to_lowercase(),
            name(object)
        );
        if CUSTOM_KINDS.contains(&kind) {
            assert!(
                text.contains(&format!("Couldn't find schema for kind {kind}")),
                "{what}: kubernetes-validate has a schema for {kind} now: check it there too\n{text}"
            );
        } else {
            assert!(
                text.contains(&line),
                "{what}: no `{line}` from kubernetes-validate:\n{text}"
            );
        }
    }
    for line in text.lines() {
        let known_gap = CUSTOM_KINDS
            .iter()
            .any(|kind| line.contains(&format!("Couldn't find schema for kind {kind} ")));
        assert!(
            line.starts_with("INFO ") && line.contains(" passed for resource ") || known_gap,
            "{what}: kubernetes-validate says: {line}\n{text}"
        );
    }
}

/// The custom objects, with tests/deploy/validate-models.mjs.
fn validate_models(modules: &Path, work: &Path, objects: &[Value], what: &str) {
    let custom: Vec<&Value> = objects
        .iter()
        .filter(|object| CUSTOM_KINDS.contains(&kind(object)))
        .collect();
    let json = format!(
        "[{}]",
        custom
            .iter()
            .map(|object| to_json(object))
            .collect::<Vec<_>>()
            .join(",")
    );
    let file = write_file(work, "custom-objects.json", &json);
    let script = repo_root().join("tests/deploy/validate-models.mjs");
    let output = run_tool(
        "node",
        &[
            &script.to_string_lossy(),
            &modules.to_string_lossy(),
            &file.to_string_lossy(),
        ],
        "install Node.js (`apt-get install nodejs npm`)",
    );
    let text = expect_success(&format!("{what}: validate-models.mjs"), &output);
    for object in custom {
        let line = format!("valid {}/{}", kind(object), name(object));
        assert!(
            text.lines().any(|l| l == line),
            "{what}: no `{line}` in:\n{text}"
        );
    }
}

/// The one object of `kind`; panics if there is none or more.
fn only<'a>(objects: &'a [Value], kind_name: &str, what: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| kind(o) == kind_name).collect();
    assert_eq!(
        found.len(),
        1,
        "{what}: expected one {kind_name}, found {}",
        found.len()
    );
    found[0]
}

/// What the pods' worker is configured with: the ConfigMap's config file
/// and the container's environment, which wins over it.
struct Effective {
    config: Value,
    env: Vec<(String, Value)>,
}

impl Effective {
    /// The setting's value as a string: its environment variable if set,
    /// else the config file's, else `default`.
    fn get(&self, dotted: &str, default: &str) -> String {
        let variable = dotted.replace('.', "_").to_uppercase();
        if let Some((_, entry)) = self.env.iter().find(|(name, _)| *name == variable) {
            return entry["value"].as_str().unwrap_or_default().to_owned();
        }
        let mut value = &self.config;
        for part in dotted.split('.') {
            value = &value[part];
        }
        match value {
            Value::Null => default.to_owned(),
            Value::String(s) => s.clone(),
            other => serde_norway::to_string(other).unwrap().trim().to_owned(),
        }
    }

    fn env(&self, variable: &str) -> Option<&Value> {
        self.env
            .iter()
            .find(|(name, _)| name == variable)
            .map(|(_, entry)| entry)
    }
}

/// A file the container reads at `path`: the Secret (name, key) mounted
/// there, or a failure naming what is missing.
fn secret_file(pod: &Value, container: &Value, path: &str, what: &str) -> (String, String) {
    let (dir, file) = path
        .rsplit_once('/')
        .unwrap_or_else(|| panic!("{what}: {path} is no path"));
    let mount = container["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|mount| mount["mountPath"].as_str() == Some(dir))
        .unwrap_or_else(|| panic!("{what}: nothing is mounted at {dir} for {path}"));
    let volume_name = mount["name"].as_str().unwrap();
    let volume = pod["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|volume| volume["name"].as_str() == Some(volume_name))
        .unwrap_or_else(|| panic!("{what}: no volume {volume_name}"));
    let secret = &volume["secret"];
    let secret_name = secret["secretName"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {path} is not on a Secret volume: {volume:?}"));
    let key = match secret["items"].as_sequence() {
        Some(items) => items
            .iter()
            .find(|item| item["path"].as_str() == Some(file))
            .and_then(|item| item["key"].as_str())
            .unwrap_or_else(|| panic!("{what}: Secret volume {volume_name} has no item at {file}"))
            .to_owned(),
        None => file.to_owned(),
    };
    (secret_name.to_owned(), key)
}

/// `host:port` of each node of a Redis URL (comma-separated on a cluster);
/// panics if it holds a password.
fn url_addresses(url: &str, what: &str) -> Vec<String> {
    let rest = url
        .strip_prefix("rediss://")
        .or_else(|| url.strip_prefix("redis://"))
        .unwrap_or_else(|| panic!("{what}: the Redis URL {url} is not redis:// or rediss://"));
    rest.split(',')
        .map(|node| {
            let node = node
                .trim()
                .trim_start_matches("redis://")
                .trim_start_matches("rediss://");
            let authority = node.split('/').next().unwrap();
            if let Some((user, _)) = authority.split_once('@') {
                assert!(
                    !user.contains(':'),
                    "{what}: a password in the Redis URL {url}"
                );
            }
            authority.rsplit('@').next().unwrap().to_owned()
        })
        .collect()
}

fn check_manifests(
    variant: &Variant,
    project: &GeneratedProject,
    kustomization: &str,
    objects: &[Value],
) {
    let what = format!("{} {kustomization}", variant.label);
    let what = what.as_str();
    let kinds: BTreeSet<&str> = objects.iter().map(kind).collect();
    let mut expected: BTreeSet<&str> = [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "ScaledObject",
        "TriggerAuthentication",
    ]
    .into();
    if variant.add_metrics {
        expected.insert("PodMonitor");
    }
    assert_eq!(kinds, expected, "{what}: kinds rendered");
    assert!(
        !kinds.contains("HorizontalPodAutoscaler"),
        "{what}: KEDA refuses a second autoscaler"
    );

    let deployment = only(objects, "Deployment", what);
    assert_eq!(
        name(deployment),
        variant.project_name,
        "{what}: the Deployment's name"
    );
    let spec = &deployment["spec"];
    assert!(
        spec["replicas"].is_null(),
        "{what}: `replicas` fights KEDA, which owns the count"
    );
    let pod_labels = &spec["template"]["metadata"]["labels"];
    assert_selects(
        &spec["selector"],
        pod_labels,
        &format!("{what}: Deployment selector"),
    );
    let pod = &spec["template"]["spec"];
    let containers = pod["containers"].as_sequence().expect("containers");
    assert_eq!(containers.len(), 1, "{what}: one container");
    let container = &containers[0];

    // The image, its user and its binary, as the project's Dockerfile makes them.
    let dockerfile = project.read("Dockerfile");
    let user = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("USER in the Dockerfile");
    let uid: i64 = user.split(':').next().unwrap().trim().parse().unwrap();
    let binary = format!("/usr/local/bin/{}", variant.project_name);
    assert!(
        dockerfile.contains(&format!("ENTRYPOINT [\"{binary}\"]")),
        "{what}: the Dockerfile's entrypoint is not {binary}"
    );
    let image = container["image"].as_str().unwrap();
    assert!(
        image == variant.project_name || image.starts_with(&format!("{}:", variant.project_name)),
        "{what}: image {image}, not the one `docker build -t {}` makes",
        variant.project_name
    );
    let pod_security = &pod["securityContext"];
    assert_eq!(
        pod_security["runAsNonRoot"].as_bool(),
        Some(true),
        "{what}: runAsNonRoot"
    );
    assert_eq!(
        pod_security["runAsUser"].as_i64(),
        Some(uid),
        "{what}: runAsUser, the Dockerfile's USER"
    );
    let security = &container["securityContext"];
    assert_eq!(
        security["readOnlyRootFilesystem"].as_bool(),
        Some(true),
        "{what}: readOnlyRootFilesystem"
    );
    assert_eq!(
        security["allowPrivilegeEscalation"].as_bool(),
        Some(false),
        "{what}: allowPrivilegeEscalation"
    );
    for side in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][side][resource].as_str().is_some(),
                "{what}: no resources.{side}.{resource}"
            );
        }
    }

    // The config file: `--config` names a file of the ConfigMap's volume.
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|arg| arg.as_str().unwrap())
        .collect();
    assert_eq!(args.first(), Some(&"run"), "{what}: args {args:?}");
    let config_path = args
        .windows(2)
        .find(|pair| pair[0] == "--config")
        .map(|pair| pair[1])
        .unwrap_or_else(|| panic!("{what}: no --config in {args:?}"));
    let (config_dir, config_file) = config_path.rsplit_once('/').unwrap();
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|mount| mount["mountPath"].as_str() == Some(config_dir))
        .unwrap_or_else(|| panic!("{what}: nothing mounted at {config_dir}"));
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|volume| volume["name"] == mount["name"])
        .unwrap();
    let config_map = only(objects, "ConfigMap", what);
    assert_eq!(
        volume["configMap"]["name"].as_str(),
        Some(name(config_map)),
        "{what}: the config volume is not the generated ConfigMap"
    );
    let config_text = config_map["data"][config_file]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: the ConfigMap has no {config_file}"));
    assert_eq!(
        config_text,
        project.read("deploy/kubernetes/base/config.yaml"),
        "{what}: the ConfigMap is not deploy/kubernetes/base/config.yaml"
    );
    let effective = Effective {
        config: serde_norway::from_str(config_text).unwrap(),
        env: container["env"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|entry| (entry["name"].as_str().unwrap().to_owned(), entry.clone()))
            .collect(),
    };

    // Stopping: the grace period outlasts the worker's shutdown deadline.
    let shutdown_ms: i64 = effective
        .get("worker.shutdown_timeout_ms", "30000")
        .parse()
        .unwrap();
    let grace = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap_or_else(|| {
            panic!(
                "{what}: no terminationGracePeriodSeconds (the default 30 s is the deadline itself)"
            )
        });
    assert!(
        grace * 1000 >= shutdown_ms + 5000,
        "{what}: terminationGracePeriodSeconds {grace} is not 5 s longer than worker.shutdown_timeout_ms {shutdown_ms}"
    );

    // The password: a file of a Secret, never in the URL.
    let password_file = effective
        .env("REDIS_PASSWORD_FILE")
        .and_then(|entry| entry["value"].as_str())
        .unwrap_or_else(|| panic!("{what}: no REDIS_PASSWORD_FILE"));
    let password = secret_file(pod, container, password_file, what);
    let url = effective.get("redis.url", "");
    let addresses = url_addresses(&url, what);
    let cluster = effective.get("redis.cluster", "false") == "true";
    let tls = url.starts_with("rediss://");
    assert!(!(cluster && addresses.is_empty()), "{what}: no seed node");
    let mut tls_files = Vec::new();
    for (variable, parameter) in [
        ("REDIS_TLS_CA_FILE", "ca"),
        ("REDIS_TLS_CERT_FILE", "cert"),
        ("REDIS_TLS_KEY_FILE", "key"),
    ] {
        if let Some(path) = effective
            .env(variable)
            .and_then(|entry| entry["value"].as_str())
        {
            assert!(tls, "{what}: {variable} without rediss://");
            tls_files.push((parameter, secret_file(pod, container, path, what)));
        }
    }
    if tls {
        assert!(
            tls_files.iter().any(|(parameter, _)| *parameter == "ca"),
            "{what}: rediss:// without REDIS_TLS_CA_FILE from a Secret"
        );
    }

    // One consumer name per pod.
    assert!(
        effective.config["redis"]["consumer_name"].is_null(),
        "{what}: a consumer name in the config file is one name for every pod"
    );
    match effective.env("REDIS_CONSUMER_NAME") {
        None => assert!(
            variant.consumer_name.is_none(),
            "{what}: the built-in consumer name {:?} is one name for every pod: set REDIS_CONSUMER_NAME to the pod's name",
            variant.consumer_name
        ),
        Some(entry) => assert_eq!(
            entry["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
            Some("metadata.name"),
            "{what}: REDIS_CONSUMER_NAME must be the pod's own name: {entry:?}"
        ),
    }

    // Probes.
    if variant.add_metrics {
        let metrics_addr = effective.get("metrics.addr", "");
        let (host, port) = metrics_addr.rsplit_once(':').unwrap();
        assert!(
            host == "0.0.0.0" || host == "[::]",
            "{what}: metrics.addr {metrics_addr} is not reachable by the kubelet and Prometheus"
        );
        let port: i64 = port.parse().unwrap();
        let port_name = container["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|p| p["containerPort"].as_i64() == Some(port))
            .and_then(|p| p["name"].as_str())
            .unwrap_or_else(|| panic!("{what}: no named containerPort {port}"));
        for (probe, path) in [
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"].as_str(), Some(path), "{what}: {probe} path");
            assert!(
                get["port"].as_str() == Some(port_name) || get["port"].as_i64() == Some(port),
                "{what}: {probe} port {:?} is not the metrics port",
                get["port"]
            );
        }
        let annotations = &spec["template"]["metadata"]["annotations"];
        assert_eq!(
            annotations["prometheus.io/scrape"].as_str(),
            Some("true"),
            "{what}: scrape annotation"
        );
        assert_eq!(
            annotations["prometheus.io/port"].as_str(),
            Some(port.to_string().as_str()),
            "{what}: port annotation"
        );
        assert_eq!(
            annotations["prometheus.io/path"].as_str(),
            Some("/metrics"),
            "{what}: path annotation"
        );
        let monitor = only(objects, "PodMonitor", what);
        assert_selects(
            &monitor["spec"]["selector"],
            pod_labels,
            &format!("{what}: PodMonitor selector"),
        );
        let endpoints = monitor["spec"]["podMetricsEndpoints"]
            .as_sequence()
            .unwrap();
        assert!(
            endpoints
                .iter()
                .any(|e| e["port"].as_str() == Some(port_name)
                    && e["path"].as_str() == Some("/metrics")),
            "{what}: the PodMonitor does not scrape {port_name} /metrics"
        );
    } else {
        let expected = [binary.as_str(), "--config", config_path, "healthcheck"];
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let command: Vec<&str> = container[probe]["exec"]["command"]
                .as_sequence()
                .unwrap_or_else(|| panic!("{what}: {probe} is no exec probe"))
                .iter()
                .map(|arg| arg.as_str().unwrap())
                .collect();
            assert_eq!(command, expected, "{what}: {probe}");
        }
        // The heartbeat file is written: it must be on a writable volume.
        let heartbeat = effective.get("heartbeat.file", "");
        let (dir, _) = heartbeat.rsplit_once('/').unwrap();
        let mount = container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|mount| mount["mountPath"].as_str() == Some(dir))
            .unwrap_or_else(|| {
                panic!("{what}: heartbeat file {heartbeat} is on the read-only root filesystem")
            });
        let volume = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|volume| volume["name"] == mount["name"])
            .unwrap();
        assert!(
            !volume["emptyDir"].is_null(),
            "{what}: the heartbeat's volume is not an emptyDir"
        );
    }

    // The PodDisruptionBudget covers the pods.
    let budget = only(objects, "PodDisruptionBudget", what);
    assert_selects(
        &budget["spec"]["selector"],
        pod_labels,
        &format!("{what}: PodDisruptionBudget selector"),
    );

    // KEDA.
    let scaled = only(objects, "ScaledObject", what);
    let target = &scaled["spec"]["scaleTargetRef"];
    assert_eq!(
        target["name"].as_str(),
        Some(variant.project_name),
        "{what}: scaleTargetRef"
    );
    assert!(
        target["kind"].is_null() || target["kind"].as_str() == Some("Deployment"),
        "{what}: scaleTargetRef kind"
    );
    let min = scaled["spec"]["minReplicaCount"]
        .as_i64()
        .expect("minReplicaCount");
    let max = scaled["spec"]["maxReplicaCount"]
        .as_i64()
        .expect("maxReplicaCount");
    assert!(
        0 <= min && min <= max && max >= 2,
        "{what}: replicas {min}..{max}"
    );
    let triggers = scaled["spec"]["triggers"].as_sequence().unwrap();
    assert_eq!(triggers.len(), 1, "{what}: one trigger");
    let trigger = &triggers[0];
    let (trigger_type, documented, address_key) = if cluster {
        (
            "redis-cluster-streams",
            REDIS_CLUSTER_STREAMS_KEYS,
            "addresses",
        )
    } else {
        ("redis-streams", REDIS_STREAMS_KEYS, "address")
    };
    assert_eq!(
        trigger["type"].as_str(),
        Some(trigger_type),
        "{what}: trigger type for redis.cluster={cluster}"
    );
    let metadata = trigger["metadata"].as_mapping().expect("trigger metadata");
    for (key, value) in metadata {
        let key = key.as_str().unwrap();
        assert!(
            documented.contains(&key),
            "{what}: `{key}` is not a metadata key KEDA documents for {trigger_type}"
        );
        assert!(
            value.is_string(),
            "{what}: metadata {key} must be a string, is {value:?}"
        );
    }
    let meta = |key: &str| metadata.get(key).and_then(Value::as_str);
    assert_eq!(
        meta("stream"),
        Some(effective.get("redis.stream", "").as_str()),
        "{what}: trigger stream"
    );
    assert_eq!(
        meta("consumerGroup"),
        Some(effective.get("redis.consumer_group", "").as_str()),
        "{what}: trigger consumerGroup"
    );
    for key in ["lagCount", "activationLagCount"] {
        let count = meta(key).unwrap_or_else(|| {
            panic!(
                "{what}: no {key}: KEDA scales on the lag only with lagCount and activationLagCount"
            )
        });
        assert!(
            count.parse::<u64>().is_ok(),
            "{what}: {key} {count:?} is not a whole number"
        );
    }
    assert!(
        meta("lagCount").unwrap().parse::<u64>().unwrap() > 0,
        "{what}: lagCount 0"
    );
    for other in ["pendingEntriesCount", "streamLength"] {
        assert!(
            meta(other).is_none(),
            "{what}: {other} switches KEDA away from the lag"
        );
    }
    let trigger_addresses: Vec<String> = meta(address_key)
        .unwrap_or_else(|| panic!("{what}: no {address_key}"))
        .split(',')
        .map(|a| a.trim().to_owned())
        .collect();
    assert_eq!(
        trigger_addresses, addresses,
        "{what}: KEDA's {address_key} is not where the pods connect ({url})"
    );
    for key in ["enableTLS", "unsafeSsl"] {
        // TLS comes from the TriggerAuthentication, which KEDA does not
        // combine with these.
        assert!(
            meta(key).is_none(),
            "{what}: {key} beside the TriggerAuthentication's TLS"
        );
    }
    let auth_name = trigger["authenticationRef"]["name"]
        .as_str()
        .expect("authenticationRef");
    let auth = only(objects, "TriggerAuthentication", what);
    assert_eq!(name(auth), auth_name, "{what}: authenticationRef");
    let refs = auth["spec"]["secretTargetRef"]
        .as_sequence()
        .expect("secretTargetRef");
    let reference = |parameter: &str| {
        refs.iter()
            .find(|r| r["parameter"].as_str() == Some(parameter))
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_owned(),
                    r["key"].as_str().unwrap().to_owned(),
                )
            })
    };
    for r in refs {
        let parameter = r["parameter"].as_str().unwrap();
        assert!(
            AUTH_PARAMETERS.contains(&parameter),
            "{what}: `{parameter}` is no parameter KEDA documents"
        );
    }
    assert_eq!(
        reference("password"),
        Some(password.clone()),
        "{what}: KEDA's password is not the pods' Secret"
    );
    if tls {
        let (secret, key) = reference("tls")
            .unwrap_or_else(|| panic!("{what}: rediss:// but KEDA's `tls` is not set"));
        assert!(!secret.is_empty() && !key.is_empty());
        for (parameter, file) in &tls_files {
            assert_eq!(
                reference(parameter).as_ref(),
                Some(file),
                "{what}: KEDA's {parameter} is not the pods' file"
            );
        }
    } else {
        for parameter in ["tls", "ca", "cert", "key"] {
            assert!(
                reference(parameter).is_none(),
                "{what}: `{parameter}` without rediss://"
            );
        }
    }
}

/// `selector.matchLabels` all present with the same values in `labels`.
fn assert_selects(selector: &Value, labels: &Value, what: &str) {
    let match_labels = selector["matchLabels"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{what}: no matchLabels"));
    assert!(!match_labels.is_empty(), "{what}: empty selector");
    for (key, value) in match_labels {
        assert_eq!(
            &labels[key.as_str().unwrap()],
            value,
            "{what}: label {key:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Alert rules

#[test]
fn alert_rules_pass_promtool() {
    for variant in VARIANTS
        .iter()
        .filter(|variant| variant.add_metrics && selected(variant.label))
    {
        let project = generate(variant);
        let rules_path = project.join("deploy/prometheus/alerts.yaml");
        let output = run_tool(
            "promtool",
            &["check", "rules", &rules_path.to_string_lossy()],
            "install Debian's `prometheus` package, which has promtool",
        );
        expect_success(&format!("{}: promtool check rules", variant.label), &output);

        let rules: Value =
            serde_norway::from_str(&project.read("deploy/prometheus/alerts.yaml")).unwrap();
        let alerts = alert_rules(&rules);
        assert!(
            alerts.len() >= 8,
            "{}: only {} alerts",
            variant.label,
            alerts.len()
        );
        for alert in &alerts {
            let alert_name = alert["alert"].as_str().unwrap();
            let what = format!("{}: {alert_name}", variant.label);
            for annotation in ["summary", "description"] {
                let text = alert["annotations"][annotation]
                    .as_str()
                    .unwrap_or_else(|| panic!("{what}: no {annotation}"));
                for (index, _) in text.match_indices("{{") {
                    assert!(
                        text[index..].starts_with("{{ $"),
                        "{what}: {annotation} holds a template that is not Prometheus's: {text}"
                    );
                }
            }
            let description = alert["annotations"]["description"].as_str().unwrap();
            assert!(
                ["status", "dlq list", "config"]
                    .iter()
                    .any(|command| description
                        .contains(&format!("`{} {command}", variant.project_name))),
                "{what}: the description names no command of the binary for the on-call: {description}"
            );
        }

        // The unit tests run against the rules without annotations: promtool
        // compares annotations word for word.
        let work = tempfile::tempdir().unwrap();
        let mut stripped = rules.clone();
        for group in stripped["groups"].as_sequence_mut().unwrap() {
            for rule in group["rules"].as_sequence_mut().unwrap() {
                rule.as_mapping_mut().unwrap().remove("annotations");
            }
        }
        let stripped_path = write_file(
            work.path(),
            "alerts.yaml",
            &serde_norway::to_string(&stripped).unwrap(),
        );
        let tests_text = std::fs::read_to_string(repo_root().join("tests/deploy/alerts.test.yaml"))
            .unwrap()
            .replace("PROJECT", variant.project_name)
            .replace("RULES", &stripped_path.to_string_lossy());
        let tests_path = write_file(work.path(), "alerts.test.yaml", &tests_text);
        let output = run_tool(
            "promtool",
            &["test", "rules", &tests_path.to_string_lossy()],
            "install Debian's `prometheus` package, which has promtool",
        );
        expect_success(&format!("{}: promtool test rules", variant.label), &output);

        // Every alert is tested both ways.
        let tests: Value = serde_norway::from_str(&tests_text).unwrap();
        for alert in &alerts {
            let alert_name = alert["alert"].as_str().unwrap();
            let cases: Vec<&Value> = tests["tests"]
                .as_sequence()
                .unwrap()
                .iter()
                .flat_map(|test| test["alert_rule_test"].as_sequence().unwrap().iter())
                .filter(|case| case["alertname"].as_str() == Some(alert_name))
                .collect();
            let firing = cases
                .iter()
                .any(|c| c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty()));
            let silent = cases
                .iter()
                .any(|c| c["exp_alerts"].as_sequence().is_some_and(|a| a.is_empty()));
            assert!(
                firing && silent,
                "{}: alerts.test.yaml must test {alert_name} firing and silent (firing: {firing}, silent: {silent})",
                variant.label
            );
        }
        check_dashboard(variant, &project);
        note(format!(
            "  alert rules ({}): {} alerts checked and unit-tested by promtool",
            variant.label,
            alerts.len()
        ));
    }
}

/// The dashboard imports into Grafana: strict JSON (Python's parser), a
/// title and a uid Grafana accepts, panels with unique ids on the 24-column
/// grid without overlaps, queries with unique refIds on the Prometheus data
/// source the dashboard asks for at import.
fn check_dashboard(variant: &Variant, project: &GeneratedProject) {
    let path = project.join("deploy/grafana/dashboard.json");
    let output = run_tool(
        "python3",
        &["-m", "json.tool", &path.to_string_lossy()],
        "install Python 3",
    );
    expect_success(
        &format!("{}: dashboard.json is strict JSON", variant.label),
        &output,
    );
    let what = format!("{}: dashboard.json", variant.label);
    let dashboard: Value =
        serde_norway::from_str(&project.read("deploy/grafana/dashboard.json")).unwrap();
    assert!(
        dashboard["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{what}: no title"
    );
    let uid = dashboard["uid"].as_str().unwrap_or_default();
    assert!(
        !uid.is_empty()
            && uid.len() <= 40
            && uid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{what}: uid {uid:?} is not one Grafana accepts"
    );
    assert!(
        dashboard["schemaVersion"].as_u64().is_some(),
        "{what}: no schemaVersion"
    );
    let variables = dashboard["templating"]["list"]
        .as_sequence()
        .expect("templating.list");
    assert!(
        variables
            .iter()
            .any(|v| v["name"].as_str() == Some("datasource")
                && v["type"].as_str() == Some("datasource")
                && v["query"].as_str() == Some("prometheus")),
        "{what}: no `datasource` variable of Prometheus data sources"
    );
    let panels = dashboard["panels"].as_sequence().expect("panels");
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "{what}: panel id repeated ({title})"
        );
        let grid = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| {
            grid[k]
                .as_u64()
                .unwrap_or_else(|| panic!("{what}: {title}: gridPos.{k}"))
        });
        assert!(
            w > 0 && h > 0 && x + w <= 24,
            "{what}: {title} is off the 24-column grid"
        );
        for column in x..x + w {
            for row in y..y + h {
                assert!(
                    cells.insert((column, row)),
                    "{what}: {title} overlaps another panel"
                );
            }
        }
        assert_eq!(
            panel["datasource"]["uid"].as_str(),
            Some("${datasource}"),
            "{what}: {title}: data source"
        );
        let mut refs = BTreeSet::new();
        let targets = panel["targets"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{what}: {title}: no targets"));
        assert!(!targets.is_empty(), "{what}: {title}: no queries");
        for target in targets {
            assert!(
                refs.insert(target["refId"].as_str().expect("refId")),
                "{what}: {title}: refId repeated"
            );
            assert!(
                target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{what}: {title}: empty query"
            );
            assert_eq!(
                target["datasource"]["uid"].as_str(),
                Some("${datasource}"),
                "{what}: {title}: query data source"
            );
        }
    }
}

/// Every alerting rule of a rules file.
fn alert_rules(rules: &Value) -> Vec<Value> {
    rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_sequence().unwrap().iter())
        .filter(|rule| rule["alert"].is_string())
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------
// A real scrape

/// How long entries flow before the queries.
const TRAFFIC: Duration = Duration::from_secs(75);

/// How long the worker and Prometheus may take to start.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// What `$__rate_interval` becomes in the panels' queries (scrapes are 1 s
/// apart here).
const RATE_INTERVAL: &str = "20s";

#[test]
fn a_real_prometheus_sees_every_panel_and_alert() {
    if !selected("default") {
        return;
    }
    let started = Instant::now();
    let project_name = "deploy-scrape";
    let project = generate_with(project_name, variant("default").defines);
    let logic = project.join("src/business_logic.rs");
    std::fs::copy(
        repo_root().join("tests/fixtures/fault_business_logic.rs"),
        &logic,
    )
    .unwrap();
    cargo(&project, &["build"]);
    let binary = debug_binary(project_name);

    let work = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start_on(unused_port(), RedisOptions { appendonly: true });
    let metrics_port = unused_port();

    // The worker with the pods' own config file (deploy/kubernetes/base/
    // config.yaml), on loopback instead of 0.0.0.0, against this Redis.
    let config = project.join("deploy/kubernetes/base/config.yaml");
    let mut command = Command::new(&binary);
    command.current_dir(project.path());
    scrub_env(&mut command);
    command
        .args(["run", "--config", &config.to_string_lossy()])
        .env("REDIS_URL", redis.url())
        .env("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        // Slower than the producer's bursts, so the lag shows.
        .env("WORKER_CONCURRENCY", "8")
        .env("WORKER_RETRY_BACKOFF_MS", "200")
        .env("WORKER_RETRY_BACKOFF_MAX_MS", "1000")
        .env("WORKER_MAX_DELIVERIES", "3");
    let mut worker = Process::spawn(project_name, command);

    // The Deployment's probe paths answer 200 on the running worker.
    let rendered = kustomize(&project.join("deploy/kubernetes/base"));
    let objects = parse_documents(&rendered, "deploy-scrape base");
    let deployment = only(&objects, "Deployment", "deploy-scrape base");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let path = container[probe]["httpGet"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{probe} has no httpGet path"));
        wait_until(
            START_DEADLINE,
            &format!("the {probe} path {path} to answer 200"),
            || {
                worker.assert_running();
                match http_get(metrics_port, path)? {
                    (200, _) => Ok(()),
                    (status, body) => Err(format!("{status}: {body}")),
                }
            },
        );
    }

    // Prometheus on loopback: scrapes the worker every second and loads the rules.
    let prometheus_port = unused_port();
    let rules = project.join("deploy/prometheus/alerts.yaml");
    let prometheus_config = write_file(
        work.path(),
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: {project_name}\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n",
            rules.display()
        ),
    );
    let mut command = Command::new("prometheus");
    command.args([
        format!("--config.file={}", prometheus_config.display()),
        format!("--storage.tsdb.path={}", work.path().join("data").display()),
        format!("--web.listen-address=127.0.0.1:{prometheus_port}"),
        "--log.level=warn".to_owned(),
    ]);
    let output = run_tool(
        "prometheus",
        &["--version"],
        "install Debian's `prometheus` package (without starting its service)",
    );
    expect_success("prometheus --version", &output);
    let mut prometheus = Process::spawn("prometheus", command);
    wait_until(START_DEADLINE, "Prometheus to be ready", || {
        prometheus.assert_running();
        match http_get(prometheus_port, "/-/ready")? {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status}: {body}")),
        }
    });
    let traffic_start = unix_now();

    // Entries flow: successes of various lengths, failures retried once,
    // permanent failures and invalid data (dead letters), in bursts larger
    // than the worker keeps up with; Redis restarts once in the middle.
    let stream = variant("default").stream;
    let mut sent = 0usize;
    let mut restarted = false;
    let mut burst = 0usize;
    while unix_now() - traffic_start < TRAFFIC.as_secs_f64() {
        worker.assert_running();
        prometheus.assert_running();
        let elapsed = unix_now() - traffic_start;
        if !restarted && elapsed > 30.0 {
            redis.kill();
            thread::sleep(Duration::from_secs(2));
            redis.restart();
            restarted = true;
            continue;
        }
        let size = if burst.is_multiple_of(10) { 1500 } else { 40 };
        let data: Vec<String> = (0..size)
            .map(|i| {
                let n = sent + i;
                match n % 50 {
                    0 => format!(r#"{{"n":{n},"fail":"permanent"}}"#),
                    1 => "not json".to_owned(),
                    2..=5 => format!(r#"{{"n":{n},"fail":"times:1","sleep_ms":5}}"#),
                    _ => format!(r#"{{"n":{n},"sleep_ms":{}}}"#, 1 + n % 40),
                }
            })
            .collect();
        redis.xadd_data(stream, &data);
        sent += size;
        burst += 1;
        thread::sleep(Duration::from_millis(500));
    }

    // Every panel's query returns data.
    let dashboard: Value = serde_norway::from_str(&project.read("deploy/grafana/dashboard.json"))
        .expect("dashboard.json is JSON");
    let panels = dashboard["panels"].as_sequence().expect("panels");
    assert!(panels.len() >= 7, "{} panels", panels.len());
    let now = unix_now();
    let mut picture_panels = Vec::new();
    let mut blind = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        let mut series_json = Vec::new();
        for target in panel["targets"].as_sequence().expect("targets") {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", RATE_INTERVAL);
            assert!(!expr.contains('$'), "{title}: a variable left in {expr}");
            let result = query(prometheus_port, &expr);
            if result.is_empty() {
                blind.push(format!("panel `{title}`: {expr}"));
            }
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            let range = prometheus_api(
                prometheus_port,
                &format!(
                    "/api/v1/query_range?query={}&start={traffic_start:.3}&end={now:.3}&step=1",
                    url_encode(&expr)
                ),
            );
            for series in range["result"].as_sequence().unwrap() {
                let mut label = legend.to_owned();
                if let Some(metric) = series["metric"].as_mapping() {
                    for (key, value) in metric {
                        label = label.replace(
                            &format!("{{{{{}}}}}", key.as_str().unwrap()),
                            value.as_str().unwrap_or_default(),
                        );
                    }
                }
                let points: Vec<String> = series["values"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|pair| {
                        let t = pair[0].as_f64().unwrap() - traffic_start;
                        let v = pair[1].as_str().unwrap();
                        format!(
                            "[{t:.1},{}]",
                            if v.parse::<f64>().is_ok_and(f64::is_finite) {
                                v
                            } else {
                                "null"
                            }
                        )
                    })
                    .collect();
                series_json.push(format!(
                    r#"{{"label":{},"points":[{}]}}"#,
                    to_json(&Value::String(label)),
                    points.join(",")
                ));
            }
        }
        picture_panels.push(format!(
            r#"{{"title":{},"unit":{},"series":[{}]}}"#,
            to_json(&Value::String(title.to_owned())),
            to_json(&panel["fieldConfig"]["defaults"]["unit"]),
            series_json.join(",")
        ));
    }

    // Every part of every alert expression returns data.
    let rules_value: Value =
        serde_norway::from_str(&project.read("deploy/prometheus/alerts.yaml")).unwrap();
    let alerts = alert_rules(&rules_value);
    for alert in &alerts {
        let alert_name = alert["alert"].as_str().unwrap();
        let expr = alert["expr"].as_str().unwrap();
        let parts = operands(expr);
        assert!(!parts.is_empty(), "{alert_name}: no operand in {expr}");
        for part in parts {
            if query(prometheus_port, &part).is_empty() {
                blind.push(format!("alert {alert_name}: {part}"));
            }
        }
    }
    assert!(
        blind.is_empty(),
        "queries without data against the real scrape:\n{}",
        blind.join("\n")
    );
    // The metric names the dashboard and the rules use are all exported.
    let exported = http_get(metrics_port, "/metrics").unwrap().1;
    let mut used: Vec<String> = Vec::new();
    for panel in panels {
        for target in panel["targets"].as_sequence().unwrap() {
            used.extend(metric_names(target["expr"].as_str().unwrap()));
        }
    }
    for alert in &alerts {
        used.extend(metric_names(alert["expr"].as_str().unwrap()));
    }
    for metric in used.iter().filter(|m| *m != "up") {
        assert!(
            exported.lines().any(|line| line
                .strip_prefix(metric.as_str())
                .is_some_and(|rest| rest.starts_with(['{', ' ']))),
            "{metric} is not in the worker's /metrics:\n{exported}"
        );
    }

    // Every rule evaluates without error; dead letters made DeadLetters fire
    // with its annotations rendered.
    let groups = prometheus_api(prometheus_port, "/api/v1/rules");
    let loaded: Vec<&Value> = groups["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_sequence().unwrap().iter())
        .collect();
    assert_eq!(loaded.len(), alerts.len(), "rules Prometheus loaded");
    for rule in &loaded {
        assert_eq!(
            rule["health"].as_str(),
            Some("ok"),
            "rule {:?}: {:?}",
            rule["name"],
            rule["lastError"]
        );
    }
    let firing = wait_until(Duration::from_secs(30), "DeadLetters to fire", || {
        let alerts = prometheus_api(prometheus_port, "/api/v1/alerts");
        alerts["alerts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|a| {
                a["labels"]["alertname"].as_str() == Some("DeadLetters")
                    && a["state"].as_str() == Some("firing")
            })
            .cloned()
            .ok_or_else(|| format!("{alerts:?}"))
    });
    let summary = firing["annotations"]["summary"].as_str().unwrap();
    let description = firing["annotations"]["description"].as_str().unwrap();
    assert!(
        summary.contains(stream) && !summary.contains("<no value>"),
        "DeadLetters summary: {summary}"
    );
    assert!(
        description.contains(&format!("{project_name} dlq list")),
        "DeadLetters description: {description}"
    );

    // The picture of the panels.
    let out_dir = repo_root().join("target/deploy");
    std::fs::create_dir_all(&out_dir).unwrap();
    let data = write_file(
        &out_dir,
        "dashboard-data.json",
        &format!(
            r#"{{"title":{},"seconds":{:.0},"panels":[{}]}}"#,
            to_json(&dashboard["title"]),
            now - traffic_start,
            picture_panels.join(",")
        ),
    );
    let png = out_dir.join("dashboard.png");
    let script = repo_root().join("tests/deploy/dashboard_png.py");
    let output = run_tool(
        "python3",
        &[
            &script.to_string_lossy(),
            &data.to_string_lossy(),
            &png.to_string_lossy(),
        ],
        "install Python 3 and matplotlib (`python3 -m pip install matplotlib`)",
    );
    expect_success("dashboard_png.py", &output);
    assert!(
        std::fs::read(&png).unwrap().starts_with(b"\x89PNG"),
        "no PNG at {}",
        png.display()
    );
    if std::env::var_os("DEPLOY_UPDATE_PNG").is_some() {
        std::fs::copy(
            &png,
            repo_root().join("template/deploy/grafana/dashboard.png"),
        )
        .unwrap();
        note(format!(
            "  updated {}",
            "template/deploy/grafana/dashboard.png"
        ));
    }

    // The picture in the template survives generation byte for byte.
    let picture = repo_root().join("template/deploy/grafana/dashboard.png");
    let shipped =
        std::fs::read(&picture).unwrap_or_else(|error| panic!("{}: {error}", picture.display()));
    assert!(
        shipped.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        picture.display()
    );
    let generated = generate_with(project_name, variant("default").defines);
    assert_eq!(
        std::fs::read(generated.join("deploy/grafana/dashboard.png")).unwrap(),
        shipped,
        "cargo-generate changed deploy/grafana/dashboard.png"
    );

    // The worker stops within the grace period the Deployment gives it.
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    worker.terminate();
    let status = worker.wait_for_exit(Duration::from_secs(grace));
    assert!(
        status.success(),
        "the worker exited with {status}:\n{}",
        worker.output()
    );
    prometheus.terminate();
    prometheus.wait_for_exit(Duration::from_secs(30));
    note(format!(
        "  real scrape: {sent} entries, {} panels and {} alerts with data, picture at {}; ok in {:.1}s",
        panels.len(),
        alerts.len(),
        png.display(),
        started.elapsed().as_secs_f64()
    ));
}

// ---------------------------------------------------------------------------
// The exec probe without metrics

/// How long the worker without metrics may take to write its first heartbeat.
const PROBE_DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn the_exec_probe_passes_for_a_running_worker_without_metrics() {
    if !selected("no-metrics") {
        return;
    }
    let project_name = "deploy-probe";
    let project = generate_with(project_name, variant("no-metrics").defines);
    cargo(&project, &["build"]);
    let binary = debug_binary(project_name);
    let rendered = kustomize(&project.join("deploy/kubernetes/base"));
    let objects = parse_documents(&rendered, "deploy-probe base");
    let deployment = only(&objects, "Deployment", "deploy-probe base");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let config = project.join("deploy/kubernetes/base/config.yaml");
    let in_pod = format!("/etc/{project_name}/config.yaml");
    let image_binary = format!("/usr/local/bin/{project_name}");
    // The probe's command with the binary and config file of this machine.
    let probe = |name: &str| -> Command {
        let words: Vec<String> = container[name]["exec"]["command"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name} is no exec probe"))
            .iter()
            .map(|word| {
                let word = word.as_str().unwrap();
                if word == image_binary {
                    binary.to_string_lossy().into_owned()
                } else if word == in_pod {
                    config.to_string_lossy().into_owned()
                } else {
                    word.to_owned()
                }
            })
            .collect();
        let mut command = Command::new(&words[0]);
        command.args(&words[1..]).current_dir(project.path());
        scrub_env(&mut command);
        command
    };
    let config_value: Value =
        serde_norway::from_str(&project.read("deploy/kubernetes/base/config.yaml")).unwrap();
    let heartbeat = config_value["heartbeat"]["file"]
        .as_str()
        .expect("heartbeat.file")
        .to_owned();
    let _ = std::fs::remove_file(&heartbeat);

    // Before the worker runs, the probe fails.
    let before = probe("livenessProbe").output().unwrap();
    assert!(
        !before.status.success(),
        "the probe passed with no worker running"
    );

    let redis = RedisServer::start();
    let mut command = Command::new(&binary);
    command.current_dir(project.path());
    scrub_env(&mut command);
    command
        .args(["run", "--config", &config.to_string_lossy()])
        .env("REDIS_URL", redis.url());
    let mut worker = Process::spawn(project_name, command);
    for name in ["startupProbe", "livenessProbe", "readinessProbe"] {
        wait_until(
            PROBE_DEADLINE,
            &format!("the {name} command to pass"),
            || {
                worker.assert_running();
                let output = probe(name).output().map_err(|error| error.to_string())?;
                if output.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&output.stderr).into_owned())
                }
            },
        );
    }
    worker.terminate();
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    let status = worker.wait_for_exit(Duration::from_secs(grace));
    assert!(status.success(), "{}", worker.output());
    let _ = std::fs::remove_file(&heartbeat);
    note(
        "  exec probe: `healthcheck` with the pods' config passes for a running worker without metrics",
    );
}

/// An instant query's result (a vector's series); panics on an error.
fn query(port: u16, expr: &str) -> Vec<Value> {
    let data = prometheus_api(port, &format!("/api/v1/query?query={}", url_encode(expr)));
    data["result"].as_sequence().cloned().unwrap_or_default()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
