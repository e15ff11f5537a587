//! {{description}}
//!
//! A Redis Streams worker: it consumes `{{stream}}` as a member of the
//! consumer group `{{consumer_group}}`. This crate holds what is this
//! project's own: [`business_logic`], **the file to edit**, the defaults
//! chosen when it was generated ([`PROJECT`]) and the binary
//! (`src/main.rs`). Everything else (reading, acknowledging, retrying,
//! dead letters, takeover, operator commands{% if add_metrics %}, metrics{% endif %}) is the runtime crate in
//! `runtime/`, the same in every generated project.

use redis_streams_runtime::{Defaults, Project};

pub mod business_logic;

/// This project: its name and version, and the defaults chosen when it was
/// generated. Every setting can be changed at run time (config file,
/// environment, flags); README.md lists them.
pub const PROJECT: Project = Project {
    name: env!("CARGO_PKG_NAME"),
    version: env!("CARGO_PKG_VERSION"),
    description: env!("CARGO_PKG_DESCRIPTION"),
    defaults: Defaults {
        worker_name: "{{worker_name}}",
        redis_url: "{{redis_url}}",
        stream: "{{stream}}",
        consumer_group: "{{consumer_group}}",
        // Empty: each process names itself `<host>-<pid>-<random>`.
        consumer_name: "{{consumer_name}}",
        block_timeout_ms: {{block_timeout}},
        {%- if add_metrics %}
        metrics_addr: "{{metrics_addr}}",
        {%- else %}
        heartbeat_file: "/tmp/{{project-name}}.heartbeat",
        {%- endif %}
        ..Defaults::BASE
    },
};

#[cfg(test)]
mod tests {
    use std::path::Path;

    use redis_streams_runtime::Settings;
    use redis_streams_runtime::settings::load_with;

    use super::*;
    use crate::business_logic::LogicSettings;

    #[test]
    fn the_shipped_config_file_holds_the_defaults() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml");
        let loaded =
            load_with::<LogicSettings>(&PROJECT.defaults, Some(&file), vec![], vec![]).unwrap();
        assert_eq!(loaded.settings, Settings::new(&PROJECT.defaults));
        assert_eq!(loaded.logic, LogicSettings::default());
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }
}
