//! The option combinations the suite generates ([`VARIANTS`]), what each
//! one's worker uses by default, and the `TEMPLATE_VARIANTS` filter that
//! runs a subset for a quick loop.

use std::collections::HashSet;

use super::note;

/// One combination of answers to the template's questions.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    /// Its name in `TEMPLATE_VARIANTS` and in messages.
    pub label: &'static str,
    /// The project name given to cargo-generate (`--name`).
    pub name: &'static str,
    /// The project's directory and package name: the kebab-case of `name`.
    pub project_name: &'static str,
    /// `--define key=value` answers; unset keys take the template's default.
    pub defines: &'static [(&'static str, &'static str)],
    /// Whether the serde validation module is generated.
    pub use_serde_validation: bool,
    /// Whether the metrics module is generated.
    pub add_metrics: bool,
    /// The stream the generated worker consumes by default.
    pub stream: &'static str,
    /// Its consumer group by default.
    pub consumer_group: &'static str,
    /// Its consumer name by default; `None`: `<host>-<pid>-<random>`.
    pub consumer_name: Option<&'static str>,
}

impl Variant {
    /// The dead-letter stream the worker uses by default.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}:dlq", self.stream)
    }
}

/// Every variant the suite checks: the four combinations of the two options,
/// and one with unusual names that must survive every case conversion.
pub const VARIANTS: &[Variant] = &[
    Variant {
        label: "default",
        name: "variant-default",
        project_name: "variant-default",
        defines: &[("use_serde_validation", "true"), ("add_metrics", "true")],
        use_serde_validation: true,
        add_metrics: true,
        stream: "my-stream",
        consumer_group: "my-group",
        consumer_name: None,
    },
    Variant {
        label: "no-metrics",
        name: "variant-no-metrics",
        project_name: "variant-no-metrics",
        defines: &[("use_serde_validation", "true"), ("add_metrics", "false")],
        use_serde_validation: true,
        add_metrics: false,
        stream: "my-stream",
        consumer_group: "my-group",
        consumer_name: None,
    },
    Variant {
        label: "raw",
        name: "variant-raw",
        project_name: "variant-raw",
        defines: &[("use_serde_validation", "false"), ("add_metrics", "true")],
        use_serde_validation: false,
        add_metrics: true,
        stream: "my-stream",
        consumer_group: "my-group",
        consumer_name: None,
    },
    Variant {
        label: "raw-no-metrics",
        name: "variant-raw-no-metrics",
        project_name: "variant-raw-no-metrics",
        defines: &[("use_serde_validation", "false"), ("add_metrics", "false")],
        use_serde_validation: false,
        add_metrics: false,
        stream: "my-stream",
        consumer_group: "my-group",
        consumer_name: None,
    },
    Variant {
        label: "awkward",
        name: "Billing_Events2",
        project_name: "billing-events2",
        defines: &[
            ("worker_name", "Billing_Events2"),
            ("stream", "{orders}:v1"),
            ("consumer_group", "{billing}-workers"),
            ("consumer_name", "billing-1"),
            ("block_timeout", "250"),
        ],
        use_serde_validation: true,
        add_metrics: true,
        stream: "{orders}:v1",
        consumer_group: "{billing}-workers",
        consumer_name: Some("billing-1"),
    },
];

/// The variant called `label`.
pub fn variant(label: &str) -> &'static Variant {
    VARIANTS
        .iter()
        .find(|variant| variant.label == label)
        .unwrap_or_else(|| panic!("no variant is called `{label}`"))
}

/// Whether `TEMPLATE_VARIANTS` (comma-separated labels; unset or empty: all)
/// selects `label`. A variant left out is announced on the terminal as
/// skipped; an unknown label fails, so a typo does not skip everything.
pub fn selected(label: &str) -> bool {
    let Ok(list) = std::env::var("TEMPLATE_VARIANTS") else {
        return true;
    };
    let wanted: HashSet<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|label| !label.is_empty())
        .collect();
    if wanted.is_empty() {
        return true;
    }
    let known: Vec<&str> = VARIANTS.iter().map(|variant| variant.label).collect();
    let mut unknown: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|label| !known.contains(label))
        .collect();
    unknown.sort_unstable();
    assert!(
        unknown.is_empty(),
        "TEMPLATE_VARIANTS={list:?} names unknown variant(s) {unknown:?}; known: {known:?}"
    );
    let selected = wanted.contains(label);
    if !selected {
        note(format!(
            "SKIPPED variant `{label}`: not selected by TEMPLATE_VARIANTS={list:?} (this test did nothing)"
        ));
    }
    selected
}
