//! cargo-generate as a library: the template rendered with the answers a
//! test gives, into a temporary directory outside the repository, with
//! nothing taken from the user's configuration or environment; the
//! generated project's files, and the check that no Liquid was left in them.

use std::fs;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;

use cargo_generate::{GenerateArgs, TemplatePath, Vcs};
use tempfile::TempDir;

use super::variants::Variant;
use super::{lock, note, repo_root};

/// cargo-generate runs one at a time: it is cheap, and this keeps any global
/// state it has (terminal, progress bars) out of the picture.
static GENERATE_LOCK: Mutex<()> = Mutex::new(());

/// A generated project in its own temporary directory, removed on drop
/// unless the test is failing (then its path is printed, for a look).
#[derive(Debug)]
pub struct GeneratedProject {
    project: PathBuf,
    temp: Option<TempDir>,
}

impl GeneratedProject {
    /// The project directory (with `Cargo.toml` in it).
    pub fn path(&self) -> &Path {
        &self.project
    }

    /// The text of a file of the project; panics if it is missing.
    pub fn read(&self, relative: &str) -> String {
        let path = self.project.join(relative);
        fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    }

    /// Whether the project has this file.
    pub fn has(&self, relative: &str) -> bool {
        self.project.join(relative).exists()
    }

    /// Every file of the project, relative to it, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        walk_files(&self.project, &mut files);
        let mut files: Vec<PathBuf> = files
            .into_iter()
            .map(|file| file.strip_prefix(&self.project).unwrap().to_owned())
            .collect();
        files.sort();
        files
    }
}

impl Deref for GeneratedProject {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.project
    }
}

impl Drop for GeneratedProject {
    fn drop(&mut self) {
        if thread::panicking()
            && let Some(temp) = self.temp.take()
        {
            let kept = temp.keep();
            note(format!(
                "generated project kept for inspection: {}",
                kept.display()
            ));
        }
    }
}

/// Every regular file under `dir`, recursively.
pub fn walk_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            walk_files(&entry.path(), files);
        } else {
            files.push(entry.path());
        }
    }
}

/// Generates `variant` into a new temporary directory outside the
/// repository; panics with cargo-generate's error if it refuses.
pub fn generate(variant: &Variant) -> GeneratedProject {
    generate_with(variant.name, variant.defines)
}

/// Generates a project called `name` with these answers (the rest default)
/// into a new temporary directory; panics if cargo-generate refuses.
pub fn generate_with(name: &str, defines: &[(&str, &str)]) -> GeneratedProject {
    let temp = tempfile::Builder::new()
        .prefix("template-test-")
        .tempdir_in(std::env::temp_dir())
        .expect("a temporary directory");
    let project = try_generate(name, defines, temp.path())
        .unwrap_or_else(|error| panic!("generating `{name}` with {defines:?} failed:\n{error}"));
    GeneratedProject {
        project,
        temp: Some(temp),
    }
}

/// Runs cargo-generate as `cargo generate --path <repo> template --name
/// <name> --silent --vcs none --bin -d key=value...` with the project
/// created under `destination`. Returns the project directory, or the error
/// text without colours.
///
/// The harness controls every input: the user's
/// `$CARGO_HOME/cargo-generate.toml` is replaced by an empty one, and values
/// from the environment (`CARGO_GENERATE_VALUE_*`) are refused up front.
pub fn try_generate(
    name: &str,
    defines: &[(&str, &str)],
    destination: &Path,
) -> Result<PathBuf, String> {
    let leaked: Vec<String> = std::env::vars()
        .map(|(key, _)| key)
        .filter(|key| {
            key.starts_with("CARGO_GENERATE_VALUE_") || key == "CARGO_GENERATE_TEMPLATE_VALUES_FILE"
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "unset {leaked:?}: cargo-generate would take template values from them"
    );

    // cargo-generate copies the whole `--path` directory before rendering the
    // subfolder, and the repository's `target/` holds gigabytes of builds
    // (and changes while other tests run). Generate from a copy without it,
    // like the checkout a `--git` user gets.
    let source = tempfile::Builder::new()
        .prefix("template-source-")
        .tempdir_in(std::env::temp_dir())
        .expect("a temporary directory");
    let template = source.path().join("template-repo");
    copy_template_source(repo_root(), &template);
    let app_config = source.path().join("cargo-generate-app.toml");
    fs::write(&app_config, "").unwrap();

    let args = GenerateArgs {
        template_path: TemplatePath {
            path: Some(template.to_string_lossy().into_owned()),
            subfolder: Some("template".to_owned()),
            ..TemplatePath::default()
        },
        name: Some(name.to_owned()),
        silent: true,
        config: Some(app_config),
        vcs: Some(Vcs::None),
        lib: false,
        bin: true,
        define: defines
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect(),
        destination: Some(destination.to_owned()),
        force_git_init: false,
        no_workspace: true,
        ..GenerateArgs::default()
    };
    let _serial = lock(&GENERATE_LOCK);
    cargo_generate::generate(args).map_err(|error| strip_ansi(&format!("{error:#}")))
}

/// Copies the template repository without `.git` and `target`.
pub fn copy_template_source(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == ".git" || (from == repo_root() && name == "target") {
            continue;
        }
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_template_source(&entry.path(), &to.join(&name));
        } else if kind.is_file() {
            fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// Lines of generated files that still hold Liquid (`{{` or `{%`), as
/// `path:line: text`. GitHub Actions expressions (`${{ ... }}`, rendered
/// from `{% raw %}` blocks) are not Liquid and do not count.
pub fn unrendered_liquid(project: &GeneratedProject) -> Vec<String> {
    let mut found = Vec::new();
    for file in project.files() {
        let Ok(text) = fs::read_to_string(project.join(&file)) else {
            continue; // not text
        };
        for (number, line) in text.lines().enumerate() {
            let rest = without_github_expressions(line);
            let rest = without_monitoring_templates(&file, &rest);
            if rest.contains("{{") || rest.contains("{%") {
                found.push(format!("{}:{}: {line}", file.display(), number + 1));
            }
        }
    }
    found
}

/// `line` without its `${{ ... }}` spans (an unclosed one stays).
fn without_github_expressions(line: &str) -> String {
    let mut rest = line;
    let mut kept = String::with_capacity(line.len());
    while let Some(start) = rest.find("${{") {
        let Some(length) = rest[start..].find("}}") else {
            break;
        };
        kept.push_str(&rest[..start]);
        rest = &rest[start + length + 2..];
    }
    kept.push_str(rest);
    kept
}

/// `line` without the templates of the monitoring files under deploy/,
/// rendered from `{% raw %}` blocks: Prometheus's alert templates
/// (`{{ $labels.stream }}`, `{{ $value }}`: Liquid names never start with
/// `$`) and, in a Grafana dashboard's JSON, a `"legendFormat"` line
/// (`{{stream}} / {{group}}`).
fn without_monitoring_templates(file: &Path, line: &str) -> String {
    if file.extension().is_some_and(|ext| ext == "json")
        && line.trim_start().starts_with("\"legendFormat\":")
    {
        return String::new();
    }
    let mut rest = line;
    let mut kept = String::with_capacity(line.len());
    while let Some(start) = rest.find("{{ $") {
        let Some(length) = rest[start..].find("}}") else {
            break;
        };
        kept.push_str(&rest[..start]);
        rest = &rest[start + length + 2..];
    }
    kept.push_str(rest);
    kept
}

/// Removes ANSI colour sequences, which cargo-generate adds to its messages
/// when standard output is a terminal.
pub fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            // Parameters, then one final byte in `@`..=`~`.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}
