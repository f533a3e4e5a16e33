//! Warnings an attack can repeat once per connection, summarised: the first of a kind in a
//! second is logged as it comes, the rest of that second are only counted, and the count is
//! logged as one line when the next one of the kind arrives or the ticker calls
//! [`flush_all`]. Under a flood the log grows by about one line per kind per second.
//!
//! Each kind is a `static` [`Summarised`] here, so that the ticker can find them all. Written
//! by whichever thread meets the warning; flushed by the ticker.

use crate::lock;
use log::warn;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the lines of one kind are counted instead of written.
const WINDOW: Duration = Duration::from_secs(1);

/// One kind of warning and the lines of it held back in the current second.
pub struct Summarised {
    kind: &'static str,
    window: Mutex<Window>,
}

struct Window {
    /// When the last line of this kind was written.
    opened: Option<Instant>,
    /// Lines counted since, not written.
    held_back: u64,
}

/// What the caller of [`Summarised::decide`] should write.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Write the line, after a summary of `held_back` lines before it when not zero.
    Write { held_back: u64 },
    /// Only count it.
    Count,
}

impl Window {
    fn decide(&mut self, now: Instant) -> Verdict {
        match self.opened {
            Some(opened) if now.duration_since(opened) < WINDOW => {
                self.held_back += 1;
                Verdict::Count
            }
            _ => {
                self.opened = Some(now);
                Verdict::Write { held_back: std::mem::take(&mut self.held_back) }
            }
        }
    }

    /// The held-back count once the window has closed, taking it.
    fn close(&mut self, now: Instant) -> u64 {
        match self.opened {
            Some(opened) if now.duration_since(opened) >= WINDOW => std::mem::take(&mut self.held_back),
            _ => 0,
        }
    }
}

impl Summarised {
    pub const fn new(kind: &'static str) -> Summarised {
        Summarised { kind, window: Mutex::new(Window { opened: None, held_back: 0 }) }
    }

    /// Logs `line` at warn level, or counts it when one of this kind went out within the
    /// last second.
    pub fn warn(&self, line: fmt::Arguments) {
        let verdict = lock(&self.window).decide(Instant::now());
        if let Verdict::Write { held_back } = verdict {
            self.write_summary(held_back);
            warn!("{line}");
        }
    }

    fn flush(&self, now: Instant) {
        let held_back = lock(&self.window).close(now);
        self.write_summary(held_back);
    }

    fn write_summary(&self, held_back: u64) {
        if held_back > 0 {
            warn!("{held_back} more {} in the last second (summarised)", self.kind);
        }
    }
}

pub static BACKEND_FAILED: Summarised = Summarised::new("backend failures");
pub static RESPONSE_BROKEN: Summarised = Summarised::new("responses broken off by a backend");
pub static TUNNEL_FAILED: Summarised = Summarised::new("tunnels that could not start");
pub static PARK_FAILED: Summarised = Summarised::new("connections that could not be parked");
pub static CONNECTION_REFUSED: Summarised = Summarised::new("connections refused at a limit");
pub static TLS_NOT_STARTED: Summarised = Summarised::new("connections that could not start TLS");
pub static QUEUE_TIMED_OUT: Summarised = Summarised::new("requests that waited out a pool's queue");
pub static PROXY_HEADER_REFUSED: Summarised = Summarised::new("connections without a valid PROXY header");

/// Every kind, for [`flush_all`].
static ALL: [&Summarised; 8] = [
    &BACKEND_FAILED,
    &RESPONSE_BROKEN,
    &TUNNEL_FAILED,
    &PARK_FAILED,
    &CONNECTION_REFUSED,
    &TLS_NOT_STARTED,
    &QUEUE_TIMED_OUT,
    &PROXY_HEADER_REFUSED,
];

/// Writes the count of every kind whose second has passed; the ticker calls it each second.
pub fn flush_all() {
    let now = Instant::now();
    for kind in ALL {
        kind.flush(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_of_a_second_is_written_and_the_rest_counted() {
        let start = Instant::now();
        let mut window = Window { opened: None, held_back: 0 };
        assert_eq!(window.decide(start), Verdict::Write { held_back: 0 });
        for i in 1..=99 {
            assert_eq!(window.decide(start + Duration::from_millis(i * 5)), Verdict::Count);
        }
        assert_eq!(window.close(start + Duration::from_millis(999)), 0, "the second is not over yet");
        assert_eq!(window.decide(start + WINDOW), Verdict::Write { held_back: 99 });
        assert_eq!(window.decide(start + WINDOW * 3), Verdict::Write { held_back: 0 });
    }

    #[test]
    fn a_closed_window_hands_its_count_over_once() {
        let start = Instant::now();
        let mut window = Window { opened: None, held_back: 0 };
        window.decide(start);
        window.decide(start);
        window.decide(start);
        assert_eq!(window.close(start + WINDOW), 2);
        assert_eq!(window.close(start + WINDOW), 0);
    }
}
