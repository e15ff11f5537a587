//! A worker that logs and acknowledges every entry: the runtime without any
//! business logic, to try it out and for the tests of its commands.

use std::process::ExitCode;

use redis_streams_runtime::settings::NoLogicSettings;
use redis_streams_runtime::{BoxError, Defaults, Entry, Handler, Logic, ProcessError, Project};

/// Acknowledges everything.
struct Echo;

impl Logic for Echo {
    type Settings = NoLogicSettings;

    async fn build(_: &NoLogicSettings) -> Result<Self, BoxError> {
        Ok(Self)
    }
}

impl Handler for Echo {
    async fn handle(&self, entry: &Entry) -> Result<(), ProcessError> {
        tracing::debug!(id = %entry.id, fields = entry.fields.len(), "entry acknowledged");
        Ok(())
    }
}

const PROJECT: Project = Project {
    name: "echo-worker",
    version: env!("CARGO_PKG_VERSION"),
    description: "Logs and acknowledges every entry of a Redis stream",
    defaults: Defaults {
        worker_name: "echo-worker",
        ..Defaults::BASE
    },
};

fn main() -> ExitCode {
    redis_streams_runtime::main::<Echo>(&PROJECT)
}
