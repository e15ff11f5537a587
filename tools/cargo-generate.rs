//! cargo-generate's own command line, built from the version this package
//! pins, so that the tests can drive the interactive prompts on a terminal
//! without a separately installed `cargo-generate`:
//!
//! ```text
//! cargo run --bin cargo-generate -- generate --path . template --name my-worker
//! ```
//!
//! Like cargo-generate's binary, it logs at `info` to standard output, which
//! is where a refused answer is reported before the question is asked again.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    env_logger::builder()
        .format(cargo_generate::log_formatter)
        .filter_level(log::LevelFilter::Info)
        .parse_default_env()
        .format_timestamp(None)
        .format_target(false)
        .format_module_path(false)
        .format_level(false)
        .target(env_logger::Target::Stdout)
        .init();
    let cargo_generate::Cli::Generate(args) = cargo_generate::Cli::parse();
    cargo_generate::generate(args)?;
    Ok(())
}
