//! Waiting for a backend's answer by giving the core away before going to sleep.
//!
//! A worker that has sent a request blocks in `read` until the answer comes: the thread
//! sleeps, and waking it costs a context switch each way, most of a small exchange's CPU on
//! this design. While the machine is busy, the backend (or another worker) is usually
//! waiting for a core; if the worker hands its core over with `sched_yield` and looks again
//! when it is scheduled back, the answer is usually there, and the sleep and wake-up are
//! saved (`../shared/bench/FINDINGS.md` measured 2.0 voluntary context switches per request
//! falling to 1.0).
//!
//! Yielding only helps when something else can run, so a worker yields only while more
//! exchanges are in flight than the machine has cores; on an idle machine `sched_yield`
//! returns at once and the loop would only burn a core. It gives up after [`BUDGET`], and a
//! worker whose recent waits were all longer than that (a slow backend) stops trying for a
//! while ([`Misses`]), so a slow backend costs a few system calls per request at most.

use crate::sys;
use std::cell::Cell;
use std::io;
use std::net::TcpStream;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// The longest a worker keeps yielding before it sleeps in `read` as before.
pub const BUDGET: Duration = Duration::from_micros(50);

/// After this many waits in a row that outlasted the budget, the worker skips yielding for
/// as many exchanges as it has missed, up to [`MAX_SKIP`].
const MISSES_BEFORE_SKIPPING: u32 = 2;
const MAX_SKIP: u32 = 64;

thread_local! {
    static MISSES: Cell<Misses> = const { Cell::new(Misses { in_a_row: 0, skip: 0 }) };
}

/// One worker's recent record: waits that outlasted the budget, and exchanges left to skip.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Misses {
    in_a_row: u32,
    skip: u32,
}

impl Misses {
    /// Whether this exchange should yield; counts a skipped one down.
    fn should_try(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    fn record(&mut self, answered: bool) {
        if answered {
            *self = Misses { in_a_row: 0, skip: 0 };
            return;
        }
        self.in_a_row = self.in_a_row.saturating_add(1);
        if self.in_a_row >= MISSES_BEFORE_SKIPPING {
            self.skip = self.in_a_row.min(MAX_SKIP);
        }
    }
}

/// The cores this process may run on, asked once.
pub fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Yields the core until `socket` has bytes to read (or has closed), for at most [`BUDGET`],
/// when `in_flight` exchanges outnumber the cores. Returns whether it saw the answer arrive;
/// either way the caller reads as it would have.
pub fn until_readable(socket: &TcpStream, in_flight: usize) -> bool {
    if in_flight <= cores() || !MISSES.with(|m| update(m, Misses::should_try)) {
        return false;
    }
    let answered = yield_until_readable(socket);
    MISSES.with(|m| update(m, |misses| misses.record(answered)));
    answered
}

fn update<T>(cell: &Cell<Misses>, f: impl FnOnce(&mut Misses) -> T) -> T {
    let mut misses = cell.get();
    let result = f(&mut misses);
    cell.set(misses);
    result
}

fn yield_until_readable(socket: &TcpStream) -> bool {
    let started = Instant::now();
    loop {
        thread::yield_now();
        match sys::peek_now(socket) {
            Ok(_) => return true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return true,
        }
        if started.elapsed() >= BUDGET {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    #[test]
    fn a_worker_that_keeps_missing_skips_more_exchanges_up_to_a_limit() {
        let mut m = Misses { in_a_row: 0, skip: 0 };
        m.record(false);
        assert!(m.should_try(), "one miss is not a pattern");
        m.record(false);
        assert_eq!(m.skip, 2);
        assert!(!m.should_try());
        assert!(!m.should_try());
        assert!(m.should_try());
        for _ in 0..200 {
            m.record(false);
        }
        assert_eq!(m.skip, MAX_SKIP);
        m.record(true);
        assert_eq!(m, Misses { in_a_row: 0, skip: 0 });
    }

    #[test]
    fn sees_bytes_already_waiting_and_gives_up_on_a_silent_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut writer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (reader, _) = listener.accept().unwrap();
        assert!(!yield_until_readable(&reader), "nothing was sent");
        writer.write_all(b"x").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !yield_until_readable(&reader) {
            assert!(Instant::now() < deadline, "the byte never showed");
        }
    }

    #[test]
    fn does_not_yield_while_no_more_exchanges_than_cores_are_in_flight() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut writer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (reader, _) = listener.accept().unwrap();
        writer.write_all(b"x").unwrap();
        assert!(!until_readable(&reader, cores()), "an idle machine gains nothing from yielding");
        assert!(until_readable(&reader, cores() + 1), "a busy one yields and sees the byte");
    }
}
