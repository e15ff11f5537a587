//! Loading: the layers, the environment variable of each key, old names,
//! and where every value came from.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml, Yaml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use serde::{Deserialize, Serialize};

use super::{Defaults, LogicSettings, NoLogicSettings, OTEL_VARIABLES, Settings};

/// Keys renamed since earlier versions: `(old key, new key)`. The old key
/// and its environment variable are still read, with a warning.
const RENAMED: &[(&str, &str)] = &[("redis.block_timeout", "redis.block_timeout_ms")];

/// Keys that meant something in earlier versions and now mean nothing; they
/// are dropped with a warning instead of refused.
const RETIRED: &[&str] = &["broker_type"];

/// Why the settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file named on the command line does not exist.
    #[error("config file {0} not found")]
    FileNotFound(PathBuf),
    /// The config file's extension names no known format.
    #[error("config file {0}: unknown format (use .yaml, .yml or .toml)")]
    UnknownFormat(PathBuf),
    /// A file could not be read: bad syntax.
    #[error("{}", describe_figment(.0))]
    Load(#[source] Box<figment::Error>),
    /// Values could not be read: a wrong type, an unknown key. Each is
    /// described by what the user set (variable, file or flag) and the form
    /// the key takes, with its unit.
    #[error("{0}")]
    Malformed(String),
    /// A top-level key names no setting.
    #[error("unknown key `{key}` in {source_name}")]
    UnknownKey {
        /// The key.
        key: String,
        /// Where it was given.
        source_name: String,
    },
    /// A value was read but breaks a rule.
    #[error("invalid `{key}` from {source_name}: {reason}")]
    Invalid {
        /// The dotted key, as in the config file.
        key: String,
        /// Where the value came from.
        source_name: String,
        /// The rule it breaks.
        reason: String,
    },
}

fn describe_figment(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|error| error.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every error of `error`, each as "invalid `key` from <where the user set
/// it>: expected <form, with its unit>, found <what was there>".
fn malformed(
    error: figment::Error,
    figment: &Figment,
    env_names: &HashMap<String, String>,
) -> SettingsError {
    let described: Vec<String> = error
        .into_iter()
        .map(|error| {
            use figment::error::Kind;

            let key = error.path.join(".");
            let origin = describe_source(figment, env_names, &key);
            let reason = match &error.kind {
                Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
                    format!("expected {}, found {actual}", expected_form(&key, expected))
                }
                Kind::UnknownField(_, known) => {
                    return format!(
                        "unknown key `{key}` in {origin}; expected one of {}",
                        quoted(known)
                    );
                }
                Kind::UnknownVariant(value, known) => {
                    format!("expected one of {}, found `{value}`", quoted(known))
                }
                other => other.to_string(),
            };
            format!("invalid `{key}` from {origin}: {reason}")
        })
        .collect();
    SettingsError::Malformed(described.join("; "))
}

/// What a key takes, in words, with its unit: keys in milliseconds end in
/// `_ms`.
fn expected_form(key: &str, expected: &str) -> String {
    let whole = ["u8", "u16", "u32", "u64", "usize"]
        .iter()
        .any(|number| expected.starts_with(number));
    if key.ends_with("_ms") {
        "a whole number of milliseconds, such as 5000".to_owned()
    } else if whole {
        "a whole number, such as 10".to_owned()
    } else {
        expected.to_owned()
    }
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Settings given on the command line, as `(dotted key, flag, value)`:
/// the flag (`--log-format`) is how an error names what the user set.
pub type Overrides = Vec<(&'static str, &'static str, Value)>;

/// The loaded and validated settings, with the origin of every value.
#[derive(Debug, Clone)]
pub struct Loaded<L = NoLogicSettings> {
    /// The effective settings.
    pub settings: Settings,
    /// The business logic's own section, `logic`.
    pub logic: L,
    /// Things worth telling the operator, such as old key names still in use.
    pub warnings: Vec<String>,
    figment: Figment,
    /// The environment variable that set each key set from the environment.
    env_names: HashMap<String, String>,
}

impl<L: LogicSettings> Loaded<L> {
    /// Every setting as one tree, the `logic` section included: what
    /// `config` prints.
    pub fn tree(&self) -> serde_json::Value {
        let mut tree = serde_json::to_value(&self.settings).unwrap_or_default();
        if let (serde_json::Value::Object(map), Ok(logic)) =
            (&mut tree, serde_json::to_value(&self.logic))
        {
            map.insert("logic".to_owned(), logic);
        }
        tree
    }
}

impl<L> Loaded<L> {
    /// Where the value of `key` came from: `default`, the file, the
    /// environment variable or `command-line flag --<name>`.
    pub fn source_of(&self, key: &str) -> String {
        describe_source(&self.figment, &self.env_names, key)
    }
}

fn describe_source(figment: &Figment, env_names: &HashMap<String, String>, key: &str) -> String {
    let Some(metadata) = figment.find_metadata(key) else {
        return "default".to_owned();
    };
    if metadata.name == "environment" {
        let var = env_names.get(key).cloned().unwrap_or_else(|| env_name(key));
        return format!("environment variable {var}");
    }
    match &metadata.source {
        Some(figment::Source::File(path)) => path.display().to_string(),
        _ => metadata.name.to_string(),
    }
}

/// The environment variable of a dotted key: `redis.url` is `REDIS_URL`.
pub fn env_name(key: &str) -> String {
    key.replace('.', "_").to_uppercase()
}

/// A layer of values with its name and, for a file, its path.
struct Layer {
    metadata: Metadata,
    values: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.values.clone()))
    }
}

/// The settings of a business logic without any, from [`Defaults::BASE`]:
/// [`load_with`] for tests and tools.
pub fn load(
    config_file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: Overrides,
) -> Result<Loaded, SettingsError> {
    load_with(&Defaults::BASE, config_file, env, flags)
}

/// The `logic` section alone, to extract it with its full key in errors.
#[derive(Serialize, Deserialize)]
#[serde(bound = "L: LogicSettings")]
struct LogicSection<L> {
    #[serde(default)]
    logic: L,
}

/// Builds the settings from every layer and checks them: the runtime's,
/// with the project's `defaults`, and the business logic's section `L`.
///
/// `env` is the environment to read (`std::env::vars()` in the binary), so
/// tests can pass their own. Anything in it that names no key is ignored,
/// so unrelated `REDIS_*` variables do no harm; an empty value counts as
/// unset.
pub fn load_with<L: LogicSettings>(
    defaults: &Defaults,
    config_file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: Overrides,
) -> Result<Loaded<L>, SettingsError> {
    let settings = Settings::new(defaults);
    let mut warnings = Vec::new();
    // The defaults as one tree, the logic's section included.
    let mut default_tree = serde_json::to_value(&settings).unwrap_or_default();
    if let (serde_json::Value::Object(map), Ok(logic)) =
        (&mut default_tree, serde_json::to_value(L::default()))
    {
        map.insert("logic".to_owned(), logic);
    }
    let mut default_values = Value::serialize(&default_tree)
        .ok()
        .and_then(|value| value.into_dict())
        .unwrap_or_default();
    // `RedisUrl` serializes redacted, for printing; the layer needs the URL
    // itself, or a password in it would become `***`.
    insert(
        &mut default_values,
        "redis.url",
        Value::from(settings.redis.url.expose()),
    );
    let mut figment = Figment::from(Layer {
        metadata: Metadata::named("default"),
        values: default_values,
    });

    if let Some(path) = config_file {
        figment = figment.merge(file_layer(path, &mut warnings)?);
    }

    let (from_env, env_names) = env_layer(&default_tree, env, &mut warnings);
    figment = figment.merge(Layer {
        metadata: Metadata::named("environment"),
        values: from_env,
    });

    // A layer per flag, so that each value's origin names its flag.
    for (key, flag, value) in flags {
        let mut values = Dict::new();
        insert(&mut values, key, value);
        figment = figment.merge(Layer {
            metadata: Metadata::named(format!("command-line flag {flag}")),
            values,
        });
    }

    // The top-level keys of the defaults, sections without keys of their own
    // (an empty `logic`) included.
    let sections: Vec<String> = match &default_tree {
        serde_json::Value::Object(map) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let given = figment
        .data()
        .map_err(|error| SettingsError::Load(Box::new(error)))?;
    let mut top_level = given
        .get(&Profile::Default)
        .into_iter()
        .flat_map(Dict::keys);
    if let Some(key) = top_level.find(|key| !sections.contains(key)) {
        return Err(SettingsError::UnknownKey {
            key: key.clone(),
            source_name: describe_source(&figment, &env_names, key),
        });
    }

    let mut settings: Settings = figment
        .extract_lossy()
        .map_err(|error| malformed(error, &figment, &env_names))?;
    settings.modules = figment
        .extract_lossy()
        .map_err(|error| malformed(error, &figment, &env_names))?;
    let LogicSection { logic } = figment
        .extract_lossy()
        .map_err(|error| malformed(error, &figment, &env_names))?;
    let loaded = Loaded {
        settings,
        logic,
        warnings,
        figment,
        env_names,
    };
    super::validate::validate(&loaded)?;
    Ok(loaded)
}

/// The config file's values, old names brought up to date.
fn file_layer(path: &Path, warnings: &mut Vec<String>) -> Result<Layer, SettingsError> {
    if !path.is_file() {
        return Err(SettingsError::FileNotFound(path.to_owned()));
    }
    let extension = path.extension().and_then(|ext| ext.to_str()).unwrap_or("");
    // Read straight from the provider: values are tagged with this layer's
    // metadata only when the layer is merged, so errors name the file.
    let data = match extension {
        "yaml" | "yml" => Yaml::file_exact(path).data(),
        "toml" => Toml::file_exact(path).data(),
        _ => return Err(SettingsError::UnknownFormat(path.to_owned())),
    };
    let mut values = data
        .map_err(|error| SettingsError::Load(Box::new(error)))?
        .remove(&Profile::Default)
        .unwrap_or_default();
    let name = path.display().to_string();
    for (old, new) in RENAMED {
        let Some(value) = remove(&mut values, old) else {
            continue;
        };
        if get(&values, new).is_some() {
            warnings.push(format!(
                "{name}: `{old}` is the old name of `{new}`; both are set, `{new}` wins"
            ));
        } else {
            warnings.push(format!(
                "{name}: `{old}` is the old name of `{new}`; read as `{new}`, please rename it"
            ));
            insert(&mut values, new, value);
        }
    }
    for retired in RETIRED {
        if remove(&mut values, retired).is_some() {
            warnings.push(format!("{name}: `{retired}` is no longer used; ignored"));
        }
    }
    Ok(Layer {
        metadata: Metadata::from("config file", figment::Source::File(path.to_owned())),
        values,
    })
}

/// The environment's values for known keys, and which variable set each.
fn env_layer(
    defaults: &serde_json::Value,
    env: impl IntoIterator<Item = (String, String)>,
    warnings: &mut Vec<String>,
) -> (Dict, HashMap<String, String>) {
    let mut keys: HashMap<String, String> = known_keys(defaults)
        .into_iter()
        .map(|key| (env_name(&key), key))
        .collect();
    let old_names: HashMap<String, (String, String)> = RENAMED
        .iter()
        .map(|(old, new)| (env_name(old), ((*new).to_owned(), env_name(new))))
        .collect();
    let mut values = Dict::new();
    let mut names = HashMap::new();
    let mut old_values = Vec::new();
    let mut standard_values = Vec::new();
    for (name, value) in env {
        if value.is_empty() {
            continue; // `VAR=` in a compose or .env file means unset
        }
        if let Some(key) = keys.remove(&name) {
            insert(&mut values, &key, Value::from(value));
            names.insert(key, name);
        } else if let Some((key, new_name)) = old_names.get(&name) {
            old_values.push((name, key.clone(), new_name.clone(), value));
        } else if let Some((_, key)) = OTEL_VARIABLES.iter().find(|(otel, _)| *otel == name) {
            standard_values.push((name, (*key).to_owned(), value));
        } else if name == "OTEL_SDK_DISABLED" && value.eq_ignore_ascii_case("true") {
            // Switches every signal off: before OTEL_TRACES_EXPORTER.
            standard_values.insert(0, (name, "tracing.exporter".to_owned(), "none".to_owned()));
        }
    }
    // The standard OpenTelemetry variables, where the key's own is unset.
    for (name, key, value) in standard_values {
        if let Entry::Vacant(vacant) = names.entry(key) {
            let value = otel_value(vacant.key(), value);
            insert(&mut values, vacant.key(), value);
            vacant.insert(name);
        }
    }
    for (name, key, new_name, value) in old_values {
        match names.entry(key) {
            Entry::Occupied(_) => warnings.push(format!(
                "{name} is the old name of {new_name}; both are set, {new_name} wins"
            )),
            Entry::Vacant(vacant) => {
                warnings.push(format!(
                    "{name} is the old name of {new_name}; read as {new_name}, please rename it"
                ));
                insert(&mut values, vacant.key(), Value::from(value));
                vacant.insert(name);
            }
        }
    }
    (values, names)
}

/// A standard OpenTelemetry variable's value as its key reads it: the
/// sampler's and exporter's names in lower case, as the specification
/// allows any case.
fn otel_value(key: &str, value: String) -> Value {
    if key == "tracing.sampler" || key == "tracing.exporter" {
        Value::from(value.to_ascii_lowercase())
    } else {
        Value::from(value)
    }
}

/// Every dotted key of the settings, unset optional ones included.
fn known_keys(defaults: &serde_json::Value) -> Vec<String> {
    fn walk(prefix: &str, value: &serde_json::Value, keys: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    let key = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&key, value, keys);
                }
            }
            _ => keys.push(prefix.to_owned()),
        }
    }
    let mut keys = Vec::new();
    walk("", defaults, &mut keys);
    keys
}

/// Puts `value` at the dotted `key` of `dict`.
fn insert(dict: &mut Dict, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            dict.insert(key.to_owned(), value);
        }
        Some((section, rest)) => {
            let entry = dict
                .entry(section.to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

/// The value at the dotted `key` of `dict`.
fn get<'a>(dict: &'a Dict, key: &str) -> Option<&'a Value> {
    match key.split_once('.') {
        None => dict.get(key),
        Some((section, rest)) => match dict.get(section)? {
            Value::Dict(_, inner) => get(inner, rest),
            _ => None,
        },
    }
}

/// Takes the value at the dotted `key` out of `dict`.
fn remove(dict: &mut Dict, key: &str) -> Option<Value> {
    match key.split_once('.') {
        None => dict.remove(key),
        Some((section, rest)) => match dict.get_mut(section)? {
            Value::Dict(_, inner) => remove(inner, rest),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("settings-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn settings_never_print_a_password_in_any_url_form() {
        for url in [
            "redis://app:s3cret@127.0.0.1:6379",
            "unix:///run/redis.sock?pass=s3cret",
            "redis+unix:///run/redis.sock?user=app&pass=s3cret",
        ] {
            let loaded = load(None, env(&[("REDIS_URL", url)]), vec![]).unwrap();
            assert_eq!(loaded.settings.redis.url.expose(), url);
            let shown = format!(
                "{:?} {}",
                loaded.settings,
                serde_json::to_string(&loaded.settings).unwrap()
            );
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        let error = load(
            None,
            env(&[("REDIS_URL", "redis://app:s3cret@h:port")]),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn the_password_file_supplies_the_password_and_stays_secret() {
        let file = write("password", "from-the-file\n");
        let path = file.to_string_lossy().into_owned();
        let loaded = load(None, env(&[("REDIS_PASSWORD_FILE", &path)]), vec![]).unwrap();
        let redis = &loaded.settings.redis;
        let client = redis.client().unwrap();
        let info = client.get_connection_info().redis_settings();
        assert_eq!(info.password(), Some("from-the-file"));
        assert_eq!(redis.redactor().scrub("auth from-the-file"), "auth ***");
        assert_eq!(
            loaded.source_of("redis.password_file"),
            "environment variable REDIS_PASSWORD_FILE"
        );

        let missing = load(
            None,
            env(&[("REDIS_PASSWORD_FILE", "/nonexistent/password")]),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(
            missing.starts_with("invalid `redis.password_file` from environment variable"),
            "{missing}"
        );
    }

    #[test]
    fn defaults_are_valid() {
        let loaded = load(None, env(&[]), vec![]).unwrap();
        assert_eq!(loaded.settings, Settings::default());
        assert_eq!(loaded.source_of("worker.concurrency"), "default");
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn layers_apply_in_order() {
        let file = write(
            "layers.yaml",
            "redis:\n  stream: from-file\n  consumer_group: file-group\nworker:\n  concurrency: 3\n",
        );
        let loaded = load(
            Some(&file),
            env(&[
                ("REDIS_CONSUMER_GROUP", "env-group"),
                ("WORKER_CONCURRENCY", "7"),
                ("REDIS_HOST", "ignored"),
                ("REDIS_STREAM", ""),
            ]),
            vec![("worker.concurrency", "--concurrency", Value::from(9_u64))],
        )
        .unwrap();
        assert_eq!(loaded.settings.redis.stream, "from-file");
        assert_eq!(loaded.settings.redis.consumer_group, "env-group");
        assert_eq!(loaded.settings.worker.concurrency, 9);
        assert!(loaded.source_of("redis.stream").ends_with("layers.yaml"));
        assert_eq!(
            loaded.source_of("redis.consumer_group"),
            "environment variable REDIS_CONSUMER_GROUP"
        );
        assert_eq!(
            loaded.source_of("worker.concurrency"),
            "command-line flag --concurrency"
        );
    }

    #[test]
    fn every_key_has_its_environment_variable() {
        let loaded = load(
            None,
            env(&[
                ("WORKER_DELETE_IDLE_CONSUMERS_MS", "120000"),
                ("WORKER_CLAIM_IDLE_MS", "90000"),
                ("LOG_FORMAT", "json"),
            ]),
            vec![],
        )
        .unwrap();
        let worker = &loaded.settings.worker;
        assert_eq!(worker.delete_idle_consumers, Some(Duration::from_secs(120)));
        assert_eq!(worker.claim_idle, Duration::from_secs(90));
        assert_eq!(
            loaded.source_of("worker.delete_idle_consumers_ms"),
            "environment variable WORKER_DELETE_IDLE_CONSUMERS_MS"
        );
    }

    #[test]
    fn the_standard_opentelemetry_variables_set_the_tracing_keys() {
        let loaded = load(
            None,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_SERVICE_NAME", "orders"),
                ("OTEL_TRACES_SAMPLER", "ParentBased_TraceIdRatio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10"),
                ("OTEL_BSP_SCHEDULE_DELAY", "250"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
                ("TRACING_PARENT", "link"),
            ]),
            Vec::new(),
        )
        .unwrap();
        let tracing = &loaded.settings.tracing;
        assert!(tracing.enabled());
        assert_eq!(
            tracing.traces_url().as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(tracing.service_name.as_deref(), Some("orders"));
        assert_eq!(tracing.sampler, "parentbased_traceidratio");
        assert_eq!(tracing.sampler_arg, Some(0.25));
        assert_eq!((tracing.queue_size, tracing.batch_size), (100, 10));
        assert_eq!(tracing.export_interval, Duration::from_millis(250));
        assert_eq!(tracing.export_timeout, Duration::from_secs(3));
        assert_eq!(tracing.parent, super::super::ParentMode::Link);
        assert_eq!(
            loaded.source_of("tracing.endpoint"),
            "environment variable OTEL_EXPORTER_OTLP_ENDPOINT"
        );

        // A key's own variable wins; `none` switches traces off.
        let loaded = load(
            None,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("TRACING_ENDPOINT", "http://other:4318"),
                ("OTEL_TRACES_EXPORTER", "none"),
            ]),
            Vec::new(),
        )
        .unwrap();
        assert_eq!(
            loaded.settings.tracing.endpoint.as_deref(),
            Some("http://other:4318")
        );
        assert_eq!(
            loaded.source_of("tracing.endpoint"),
            "environment variable TRACING_ENDPOINT"
        );
        assert!(!loaded.settings.tracing.enabled());
    }

    #[test]
    fn otel_sdk_disabled_switches_traces_off() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        for (disabled, enabled) in [("true", false), ("TRUE", false), ("false", true)] {
            let loaded = load(
                None,
                env(&[
                    endpoint,
                    ("OTEL_TRACES_EXPORTER", "otlp"),
                    ("OTEL_SDK_DISABLED", disabled),
                ]),
                Vec::new(),
            )
            .unwrap();
            assert_eq!(loaded.settings.tracing.enabled(), enabled, "{disabled}");
        }
        // The key's own variable still wins.
        let loaded = load(
            None,
            env(&[
                endpoint,
                ("TRACING_EXPORTER", "otlp"),
                ("OTEL_SDK_DISABLED", "true"),
            ]),
            Vec::new(),
        )
        .unwrap();
        assert!(loaded.settings.tracing.enabled());
    }

    #[test]
    fn the_traces_endpoint_variable_names_the_url_as_it_is() {
        let loaded = load(
            None,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "https://traces.example.com/v1/spans",
                ),
            ]),
            Vec::new(),
        )
        .unwrap();
        assert_eq!(
            loaded.settings.tracing.traces_url().as_deref(),
            Some("https://traces.example.com/v1/spans")
        );
        assert_eq!(
            loaded.source_of("tracing.traces_endpoint"),
            "environment variable OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        );
    }

    #[test]
    fn a_bad_tracing_value_names_its_variable() {
        let error = load(
            None,
            env(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ]),
            Vec::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains(
                "`tracing.protocol` from environment variable OTEL_EXPORTER_OTLP_PROTOCOL"
            ) && error.contains("4318"),
            "{error}"
        );
    }

    #[test]
    fn toml_files_work_too() {
        let file = write(
            "c.toml",
            "log_level = \"debug\"\n[redis]\nblock_timeout_ms = 250\n",
        );
        let loaded = load(Some(&file), env(&[]), vec![]).unwrap();
        assert_eq!(
            loaded.settings.redis.block_timeout,
            Duration::from_millis(250)
        );
        assert_eq!(loaded.settings.log_level, "debug");
    }

    #[test]
    fn the_old_block_timeout_names_still_work_with_a_warning() {
        let file = write(
            "old.yaml",
            "broker_type: redis_streams\nredis:\n  block_timeout: 300\n",
        );
        let loaded = load(Some(&file), env(&[]), vec![]).unwrap();
        assert_eq!(
            loaded.settings.redis.block_timeout,
            Duration::from_millis(300)
        );
        assert!(
            loaded
                .source_of("redis.block_timeout_ms")
                .ends_with("old.yaml")
        );
        assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].contains("`redis.block_timeout_ms`"));

        let loaded = load(None, env(&[("REDIS_BLOCK_TIMEOUT", "400")]), vec![]).unwrap();
        assert_eq!(
            loaded.settings.redis.block_timeout,
            Duration::from_millis(400)
        );
        assert_eq!(
            loaded.source_of("redis.block_timeout_ms"),
            "environment variable REDIS_BLOCK_TIMEOUT"
        );
        assert!(loaded.warnings[0].contains("REDIS_BLOCK_TIMEOUT_MS"));

        let loaded = load(
            None,
            env(&[
                ("REDIS_BLOCK_TIMEOUT", "400"),
                ("REDIS_BLOCK_TIMEOUT_MS", "500"),
            ]),
            vec![],
        )
        .unwrap();
        assert_eq!(
            loaded.settings.redis.block_timeout,
            Duration::from_millis(500)
        );
        assert!(loaded.warnings[0].contains("REDIS_BLOCK_TIMEOUT_MS wins"));

        let error = load(None, env(&[("REDIS_BLOCK_TIMEOUT", "0")]), vec![])
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "invalid `redis.block_timeout_ms` from environment variable REDIS_BLOCK_TIMEOUT: must be at least 1 millisecond"
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key_and_the_file() {
        let file = write("bad.yaml", "worker:\n  concurency: 3\n");
        let error = load(Some(&file), env(&[]), vec![]).unwrap_err().to_string();
        assert!(
            error.contains("concurency") && error.contains("bad.yaml"),
            "{error}"
        );

        let error = load(None, env(&[("REDIS_BLOCK_TIMEOUT_MS", "soon")]), vec![])
            .unwrap_err()
            .to_string();
        assert!(error.contains("block_timeout_ms"), "{error}");
    }

    #[test]
    fn a_malformed_value_names_what_the_user_set_and_the_expected_form() {
        let error = load(None, env(&[("REDIS_BLOCK_TIMEOUT_MS", "abc")]), vec![])
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "invalid `redis.block_timeout_ms` from environment variable REDIS_BLOCK_TIMEOUT_MS: \
             expected a whole number of milliseconds, such as 5000, found string \"abc\""
        );
        // The old name, as the user set it.
        let error = load(None, env(&[("REDIS_BLOCK_TIMEOUT", "abc")]), vec![])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("from environment variable REDIS_BLOCK_TIMEOUT: expected a whole number of milliseconds"),
            "{error}"
        );

        let error = load(None, env(&[("WORKER_BATCH_SIZE", "many")]), vec![])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("WORKER_BATCH_SIZE: expected a whole number"),
            "{error}"
        );

        let file = write("malformed.yaml", "worker:\n  claim_idle_ms: soon\n");
        let error = load(Some(&file), env(&[]), vec![]).unwrap_err().to_string();
        assert!(
            error.starts_with("invalid `worker.claim_idle_ms` from ")
                && error.contains("malformed.yaml: expected a whole number of milliseconds"),
            "{error}"
        );

        let error = load(None, env(&[("LOG_FORMAT", "xml")]), vec![])
            .unwrap_err()
            .to_string();
        assert!(
            error.ends_with("LOG_FORMAT: expected one of `pretty`, `json`, found `xml`"),
            "{error}"
        );
        let flag = vec![("log_format", "--log-format", Value::from("xml"))];
        let error = load(None, env(&[]), flag).unwrap_err().to_string();
        assert!(
            error.starts_with("invalid `log_format` from command-line flag --log-format: "),
            "{error}"
        );
    }

    #[test]
    fn unknown_top_level_keys_are_refused_too() {
        let file = write("top.yaml", "log_levle: debug\n");
        let error = load(Some(&file), env(&[]), vec![]).unwrap_err().to_string();
        assert!(
            error.starts_with("unknown key `log_levle` in ") && error.ends_with("top.yaml"),
            "{error}"
        );
    }

    #[test]
    fn rule_violations_name_key_and_source() {
        let error = load(None, env(&[("WORKER_CONCURRENCY", "0")]), vec![])
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "invalid `worker.concurrency` from environment variable WORKER_CONCURRENCY: must be at least 1"
        );
        let error = load(None, env(&[("REDIS_URL", "http://x")]), vec![])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("invalid `redis.url` from environment variable REDIS_URL"),
            "{error}"
        );
        let missing = load(
            Some(Path::new("/nonexistent/config.yaml")),
            env(&[]),
            vec![],
        );
        assert!(matches!(missing, Err(SettingsError::FileNotFound(_))));
    }
}
