//! The `{{project-name}}` binary: hands the business logic to the runtime,
//! which reads the command line, loads the settings and runs the worker or
//! an operator's command (`--help` lists them).

use std::process::ExitCode;

use {{crate_name}}::PROJECT;
use {{crate_name}}::business_logic::BusinessLogic;

fn main() -> ExitCode {
    redis_streams_runtime::main::<BusinessLogic>(&PROJECT)
}
