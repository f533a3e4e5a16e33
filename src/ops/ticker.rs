//! The one thread that wakes once a second for the chores of operations: emptying the access
//! log's buffer into its file, checking the host thresholds, taking out removed backends
//! whose last exchange ended, and, with the admin API, sampling request rates.
//!
//! Started by `server` with the chores it gathers; stops when sluice stops.

use crate::runtime::Runtime;
use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How often the chores run.
pub const TICK: Duration = Duration::from_secs(1);

/// Something to do once a tick, on the ticker thread.
pub type Chore = Box<dyn FnMut() + Send>;

/// Starts the ticker thread, which runs `chores` in order every [`TICK`] until stopping.
pub fn spawn(runtime: Arc<Runtime>, mut chores: Vec<Chore>) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name("sluice-tick".into()).spawn(move || {
        while !runtime.sleep_unless_stopping(TICK) {
            for chore in &mut chores {
                chore();
            }
        }
    })
}
