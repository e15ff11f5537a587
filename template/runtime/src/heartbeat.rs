//! A heartbeat file, so that `healthcheck` can tell a live worker from a
//! stopped or frozen one without an HTTP server.
//!
//! The worker touches the file (sets its modification time) as its loop goes
//! round and as entries finish; `healthcheck` fails when the file is older
//! than `heartbeat.max_age_ms` plus the block time, since an idle worker
//! goes round once per blocking read. The modification time, not the
//! content, carries the beat: a reader never sees a half-written file.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::observe::{Observer, Outcome};
pub use crate::settings::HeartbeatSettings;

/// At most one touch per this interval: a busy worker goes round hundreds of
/// times a second.
const BEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Why `healthcheck` found the worker unhealthy.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    /// No heartbeat file: the worker never ran here, or with another
    /// `HEARTBEAT_FILE`.
    #[error("no heartbeat from the worker: cannot read {} (HEARTBEAT_FILE)", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The worker has not gone round for too long: stopped, frozen or stuck.
    #[error(
        "the last heartbeat in {} is {} ms old, more than the {} ms allowed; the worker is stopped or stuck",
        path.display(), age.as_millis(), allowed.as_millis()
    )]
    Stale {
        /// The file.
        path: PathBuf,
        /// Time since the last beat.
        age: Duration,
        /// The age allowed.
        allowed: Duration,
    },
}

/// An [`Observer`] that touches the heartbeat file.
#[derive(Debug)]
pub struct Heartbeat {
    path: PathBuf,
    /// When the file was last touched, and whether that failed.
    last: Mutex<Option<(Instant, bool)>>,
}

impl Heartbeat {
    /// Beats into `path`, creating it at the first beat.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            last: Mutex::new(None),
        }
    }

    fn beat(&self) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let now = Instant::now();
        if last.is_some_and(|(at, _)| now.duration_since(at) < BEAT_INTERVAL) {
            return;
        }
        // A blocking call on the runtime's thread, but a single small one at
        // most once a second.
        let failed = match touch(&self.path) {
            Ok(()) => false,
            Err(error) => {
                // Once per run of failures, not once a second.
                if !last.is_some_and(|(_, failed)| failed) {
                    tracing::warn!(%error, file = %self.path.display(), "cannot touch the heartbeat file; healthcheck will fail");
                }
                true
            }
        };
        *last = Some((now, failed));
    }
}

impl Observer for Heartbeat {
    fn alive(&self) {
        self.beat();
    }

    fn processed(&self, _outcome: Outcome, _elapsed: Duration) {
        self.beat();
    }
}

fn touch(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?
        .set_modified(SystemTime::now())
}

/// Checks that the heartbeat in `path` is at most `allowed` old; returns its
/// age.
pub fn check(path: &Path, allowed: Duration) -> Result<Duration, HeartbeatError> {
    let missing = |source| HeartbeatError::Missing {
        path: path.to_owned(),
        source,
    };
    let modified = std::fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .map_err(missing)?;
    // A clock set back makes the beat look fresh, never stale.
    let age = SystemTime::now()
        .duration_since(modified)
        .unwrap_or(Duration::ZERO);
    if age > allowed {
        return Err(HeartbeatError::Stale {
            path: path.to_owned(),
            age,
            allowed,
        });
    }
    Ok(age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_beat_is_healthy_an_old_or_missing_one_is_not() {
        let path = std::env::temp_dir().join(format!("heartbeat-test-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        assert!(matches!(
            check(&path, Duration::from_secs(1)),
            Err(HeartbeatError::Missing { .. })
        ));

        Heartbeat::new(&path).alive();
        assert!(check(&path, Duration::from_secs(60)).is_ok());

        let old = SystemTime::now() - Duration::from_secs(120);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let error = check(&path, Duration::from_secs(60)).unwrap_err();
        assert!(matches!(error, HeartbeatError::Stale { .. }), "{error}");
        std::fs::remove_file(&path).unwrap();
    }
}
