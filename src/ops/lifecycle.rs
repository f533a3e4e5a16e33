//! The `sluice` command's life once its server runs: the pid file, saying it serves (to the
//! process that started it in an upgrade, and to systemd), then the signals until it stops:
//! SIGHUP reloads, SIGUSR2 upgrades, SIGTERM and SIGINT drain and stop (a second one while
//! draining exits at once, with code 1).
//!
//! An upgrade runs beside the signal loop: the new process is started at once and waited for
//! on a thread of its own, so signals are still handled meanwhile. When it serves, this
//! process hands over (`MAINPID` to systemd), stops accepting and drains; when it fails, this
//! one keeps serving, writes its pid to the pid file again and logs why.

use crate::ops::upgrade::{self, Executable, UpgradeError};
use crate::ops::{notify, pid_file};
use crate::Server;
use log::{error, info, warn};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use signal_hook::iterator::Signals;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;

/// The signals the loop handles; install them with `Signals::new` before the server starts.
pub const SIGNALS: [i32; 4] = [SIGTERM, SIGINT, SIGHUP, SIGUSR2];

enum Event {
    Signal(i32),
    Upgraded(Result<u32, UpgradeError>),
}

/// Why the server could not be announced as serving.
#[derive(Debug)]
pub struct PidFileError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// Writes the pid file, says the server serves, and handles signals until a stop or a
/// hand-over; then drains. Returns whether every connection finished in time.
pub fn serve(mut server: Server, signals: Signals, exe: &Executable) -> Result<bool, PidFileError> {
    let pid_path = server.runtime().state().config.pid_file.clone();
    if let Some(path) = &pid_path {
        if let Err(source) = pid_file::write(path) {
            server.stop();
            return Err(PidFileError { path: path.clone(), source });
        }
    }
    match server.take_ready_channel() {
        Some(channel) => {
            if let Err(e) = crate::inherited::tell_ready(channel) {
                warn!("cannot tell the process that started this one that it serves: {e}");
            }
        }
        None => notify::ready(),
    }
    let (events, received) = mpsc::channel();
    forward_signals(signals, events.clone());
    let handed_over = wait_for_end(&server, &received, &events, exe, pid_path.as_ref());
    match handed_over {
        Some(pid) => {
            notify::handed_over(pid);
            info!("process {pid} serves now: stopping accepting and finishing in-flight requests");
        }
        None => {
            notify::stopping();
            info!("stopping: finishing in-flight requests (a second SIGTERM or SIGINT stops at once)");
        }
    }
    exit_on_second_stop(received);
    let drained = server.stop();
    if let (Some(path), None) = (&pid_path, handed_over) {
        if let Err(e) = pid_file::remove_if_ours(path) {
            warn!("cannot remove the pid file {}: {e}", path.display());
        }
    }
    Ok(drained)
}

/// Handles events until a stop signal (`None`) or a finished upgrade (the new pid).
fn wait_for_end(
    server: &Server,
    received: &Receiver<Event>,
    events: &Sender<Event>,
    exe: &Executable,
    pid_path: Option<&PathBuf>,
) -> Option<u32> {
    let mut upgrading = false;
    for event in received.iter() {
        match event {
            Event::Signal(SIGHUP) => {
                notify::reloading();
                // Success and failure are both logged by the reload itself.
                let _ = server.reload_from_file();
                notify::ready();
            }
            Event::Signal(SIGUSR2) if upgrading => warn!("SIGUSR2: an upgrade is already under way"),
            Event::Signal(SIGUSR2) => upgrading = begin_upgrade(server, exe, events),
            Event::Signal(_) => return None,
            Event::Upgraded(Ok(pid)) => return Some(pid),
            Event::Upgraded(Err(e)) => {
                upgrading = false;
                error!("upgrade failed, this process keeps serving: {e}");
                if let Some(path) = pid_path {
                    if let Err(e) = pid_file::write(path) {
                        warn!("cannot write the pid file {} again: {e}", path.display());
                    }
                }
            }
        }
    }
    None
}

/// Starts the new process and a thread that waits for it; false when it could not start.
fn begin_upgrade(server: &Server, exe: &Executable, events: &Sender<Event>) -> bool {
    info!("SIGUSR2: starting {} with the listening sockets", exe.path.display());
    let successor = match server.start_successor(exe) {
        Ok(successor) => successor,
        Err(e) => {
            error!("upgrade failed, this process keeps serving: {e}");
            return false;
        }
    };
    info!("upgrade: process {} started; waiting until it serves", successor.pid());
    let events = events.clone();
    let waiting = thread::Builder::new().name("sluice-upgrade".into()).spawn(move || {
        let _ = events.send(Event::Upgraded(successor.wait_ready(upgrade::READY_WITHIN)));
    });
    if let Err(e) = waiting {
        error!("upgrade failed, this process keeps serving: cannot start a thread: {e}");
        return false;
    }
    true
}

fn forward_signals(mut signals: Signals, events: Sender<Event>) {
    let forwarding = thread::Builder::new().name("sluice-signals".into()).spawn(move || {
        for signal in signals.forever() {
            if events.send(Event::Signal(signal)).is_err() {
                return;
            }
        }
    });
    if let Err(e) = forwarding {
        error!("cannot watch for signals: {e}");
    }
}

/// While draining, a second SIGTERM or SIGINT ends the process at once, with exit code 1.
fn exit_on_second_stop(received: Receiver<Event>) {
    let watching = thread::Builder::new().name("sluice-second-stop".into()).spawn(move || {
        let stop = |e: &Event| matches!(e, Event::Signal(s) if *s == SIGTERM || *s == SIGINT);
        if received.iter().any(|e| stop(&e)) {
            warn!("second stop signal: exiting without waiting for in-flight requests");
            std::process::exit(1);
        }
    });
    if let Err(e) = watching {
        warn!("cannot watch for a second stop signal: {e}");
    }
}
