//! Binary upgrade, the old process's side: on SIGUSR2, start the executable at the path this
//! process was started from as a new process that inherits the listening sockets (nothing is
//! closed or bound again), and wait until it says it serves. Then the old process stops
//! accepting and drains ([`crate::ops::lifecycle`]); if the new one fails instead (a bad
//! configuration, a crash, no answer within [`READY_WITHIN`]), the old one keeps serving and
//! says why.
//!
//! The new process finds its sockets in `SLUICE_INHERITED_FDS` and its readiness channel in
//! `SLUICE_READY_FD` ([`crate::inherited`]); systemd's `LISTEN_*` variables are not passed
//! on. Its standard error is this process's, so its own messages land in the same log.

use crate::inherited::{upgrade_list, Role, INHERITED_FDS_VAR, READY_FD_VAR};
use crate::sys;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

/// How long the new process may take to say it serves before the upgrade is given up.
pub const READY_WITHIN: Duration = Duration::from_secs(30);

/// How long a new process that closed its readiness channel may take to exit.
const EXIT_WITHIN: Duration = Duration::from_secs(5);

/// The program an upgrade starts: this process's executable path and arguments.
#[derive(Debug, Clone)]
pub struct Executable {
    pub path: PathBuf,
    pub args: Vec<OsString>,
}

impl Executable {
    /// This process's executable and arguments, resolved now, at start: an upgrade replaces
    /// the file at that path, and `/proc/self/exe` then names the old, deleted one.
    pub fn of_this_process() -> io::Result<Executable> {
        Ok(Executable { path: std::env::current_exe()?, args: std::env::args_os().skip(1).collect() })
    }
}

/// Why an upgrade was given up; the old process keeps serving.
#[derive(Debug)]
pub enum UpgradeError {
    Start {
        path: PathBuf,
        source: io::Error,
    },
    /// The new process exited before it said it serves.
    Exited(ExitStatus),
    /// It did not say it serves in time; it was asked to stop.
    NotReady(Duration),
    /// It closed its readiness channel but kept running; it was asked to stop.
    Silent,
}

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpgradeError::Start { path, source } => write!(f, "cannot start {}: {source}", path.display()),
            UpgradeError::Exited(status) => {
                write!(f, "the new process exited ({status}) before it served; its own message is above")
            }
            UpgradeError::NotReady(within) => {
                write!(f, "the new process did not serve within {within:?}; it was asked to stop")
            }
            UpgradeError::Silent => write!(f, "the new process closed its readiness channel without serving"),
        }
    }
}

impl std::error::Error for UpgradeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpgradeError::Start { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A new process started by an upgrade, not yet known to serve.
pub struct Successor {
    child: Child,
    channel: UnixStream,
}

/// Starts `exe` with `sockets` (descriptor, role, configured address) handed over.
pub fn start(exe: &Executable, sockets: &[(RawFd, Role, SocketAddr)]) -> Result<Successor, UpgradeError> {
    let error = |source| UpgradeError::Start { path: exe.path.clone(), source };
    let (channel, theirs) = UnixStream::pair().map_err(error)?;
    let mut keep: Vec<RawFd> = sockets.iter().map(|&(fd, _, _)| fd).collect();
    keep.push(theirs.as_raw_fd());
    let mut command = Command::new(&exe.path);
    command
        .args(&exe.args)
        .env(INHERITED_FDS_VAR, upgrade_list(sockets))
        .env(READY_FD_VAR, theirs.as_raw_fd().to_string())
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES");
    let child = sys::spawn_keeping(&mut command, keep).map_err(error)?;
    // Only the child holds the other end now: its exit closes the channel.
    drop(theirs);
    Ok(Successor { child, channel })
}

impl Successor {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `within` for the new process to say it serves, and returns its pid.
    /// Otherwise says why; a process that is still running is asked to stop.
    pub fn wait_ready(mut self, within: Duration) -> Result<u32, UpgradeError> {
        let deadline = Instant::now() + within;
        let _ = self.channel.set_read_timeout(Some(within));
        let mut line = String::new();
        let read = BufReader::new(&self.channel).read_line(&mut line);
        if read.is_ok() && line.trim_end() == format!("ready {}", self.child.id()) {
            return Ok(self.child.id());
        }
        let timed_out =
            matches!(&read, Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut));
        if !timed_out {
            if let Some(status) = self.exit_status(EXIT_WITHIN) {
                return Err(UpgradeError::Exited(status));
            }
        }
        let _ = sys::terminate(self.child.id());
        // Reaped in the background, so the old process never waits on it.
        let mut child = self.child;
        let _ = thread::Builder::new().name("sluice-upgrade-reaper".into()).spawn(move || child.wait());
        if timed_out || Instant::now() >= deadline {
            Err(UpgradeError::NotReady(within))
        } else {
            Err(UpgradeError::Silent)
        }
    }

    /// The exit status once the process has exited, waiting at most `within`.
    fn exit_status(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        }
    }
}
