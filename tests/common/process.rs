//! Child processes whose output is collected while they run and which are
//! killed, with everything they started, when the test ends however it
//! ends; and conditions awaited with a deadline instead of sleeps.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::lock;

/// Polls `probe` every 20 ms until it returns `Ok`; panics after `timeout`
/// with `what` and the last `Err`, which should say what was seen instead.
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Output collected from a child's stdout and stderr.
#[derive(Debug, Default)]
struct Captured {
    stdout: String,
    stderr: String,
    /// Both, in the order the lines arrived.
    both: String,
}

/// A child process whose output is collected as it runs, and which is
/// killed, with everything it started, when dropped: a failing test leaves
/// nothing running.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    captured: Arc<Mutex<Captured>>,
    readers: Vec<JoinHandle<()>>,
}

impl Process {
    /// Starts `command` with piped output; `name` is used in messages.
    pub fn spawn(name: &str, mut command: Command) -> Process {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name} ({command:?}): {error}"));
        let captured = Arc::new(Mutex::new(Captured::default()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let readers = vec![
            collect(stdout, Arc::clone(&captured), false),
            collect(stderr, Arc::clone(&captured), true),
        ];
        Process {
            name: name.to_owned(),
            child,
            status: None,
            captured,
            readers,
        }
    }

    /// Its process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed so far, stdout and stderr interleaved by line.
    pub fn output(&self) -> String {
        lock(&self.captured).both.clone()
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        lock(&self.captured).stdout.clone()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        lock(&self.captured).stderr.clone()
    }

    /// Its exit status if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("waitpid");
        }
        self.status
    }

    /// Panics with its output if it has exited: for checks while waiting on
    /// something it should be doing.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_status() {
            self.finish_reading();
            panic!("{} exited early ({status}):\n{}", self.name, self.output());
        }
    }

    /// Sends `signal` (such as `libc::SIGTERM`) to it.
    pub fn signal(&mut self, signal: libc::c_int) {
        if self.try_status().is_some() {
            return;
        }
        // SAFETY: `kill` has no memory effects; the child is not reaped
        // yet (`try_status` is `None`), so its PID still names it.
        let result = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(result, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// Asks it to stop with SIGTERM.
    pub fn terminate(&mut self) {
        self.signal(libc::SIGTERM);
    }

    /// Waits until it exits and returns its status; panics with its output
    /// if it is still running after `timeout` (it is then killed).
    pub fn wait_for_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                self.finish_reading();
                return status;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "{} still running after {timeout:?}; killed. Output:\n{}",
                    self.name,
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it and what it started with SIGKILL (`kill -9`), then reaps it.
    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            for pid in descendants(self.pid()) {
                // SAFETY: as in `signal`; a descendant that exited meanwhile
                // makes this fail harmlessly.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        self.finish_reading();
    }

    /// Lets the reader threads take in the last output, without hanging if
    /// a grandchild still holds the pipes open.
    fn finish_reading(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.readers.iter().any(|reader| !reader.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        self.readers.retain(|reader| !reader.is_finished());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `pipe` line by line into `captured`.
fn collect(
    pipe: impl Read + Send + 'static,
    captured: Arc<Mutex<Captured>>,
    is_stderr: bool,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let mut captured = lock(&captured);
                    if is_stderr {
                        captured.stderr.push_str(&text);
                    } else {
                        captured.stdout.push_str(&text);
                    }
                    captured.both.push_str(&text);
                    if !text.ends_with('\n') {
                        captured.both.push('\n');
                    }
                }
            }
        }
    })
}

/// The processes descended from `pid`, deepest first (from `/proc`).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            // `pid (comm) state ppid ...`; comm may hold spaces and parens.
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some(after_comm) = stat.rfind(')').map(|end| &stat[end + 1..]) else {
                continue;
            };
            if let Some(parent) = after_comm
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
            {
                parents.push((child, parent));
            }
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, _) in parents.iter().filter(|(_, p)| *p == parent) {
            found.push(child);
            frontier.push(child);
        }
    }
    found.reverse();
    found
}
