//! `"explain": true`: the `X-Sluice-Decision` field that tells a learner why each response
//! came from the backend it came from.
//!
//! One [`Decision`] lives for one exchange, and only when `explain` is on: `proxy` makes it
//! (route and pool), `pool` fills it at each pick (every candidate's state, the balancer's
//! scores and reason, through the same code path as an ordinary pick), `proxy` adds each
//! failed attempt and writes the rendered field into the response head. With `explain` off
//! none of this exists: no allocation, no lock, one `bool` read per exchange.
//!
//! The field reads, for example:
//!
//! ```text
//! route=*; pool=default; algorithm=least-connections;
//! candidates=http://a:80 up in-flight=2 weight=1, http://b:80 up in-flight=0 weight=1, http://c:80 down in-flight=0 weight=1;
//! picked=http://b:80; reason=fewest in flight for its weight (0 in flight for weight 1); attempt=1
//! ```
//! (one line in the response).

use crate::backend::Backend;
use crate::backend_error::BackendError;
use crate::balance::Why;
use crate::config::{ListenerConfig, PoolConfig, RouteConfig};
use crate::http::head::{HeaderList, RequestHead};
use crate::routing;
use std::fmt::Write;
use std::sync::Arc;

/// The response field sluice writes when `explain` is on.
pub const DECISION_FIELD: &str = "X-Sluice-Decision";

/// Where a backend stood when the pick was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateState {
    /// Eligible: in service and under its `maxConnections`.
    Up,
    /// Failed its health checks.
    Down,
    Draining,
    /// At its `maxConnections`.
    Full,
    /// Already tried for this request (an earlier attempt failed).
    Tried,
    /// A backup, waiting while a primary can serve.
    Standby,
    /// Weight 0: never picked.
    Off,
}

impl CandidateState {
    pub fn word(self) -> &'static str {
        match self {
            CandidateState::Up => "up",
            CandidateState::Down => "down",
            CandidateState::Draining => "draining",
            CandidateState::Full => "full",
            CandidateState::Tried => "tried",
            CandidateState::Standby => "standby",
            CandidateState::Off => "off",
        }
    }
}

/// One exchange's decision, built up over its attempts.
#[derive(Debug, Clone, Default)]
pub struct Decision {
    route: String,
    pool: String,
    algorithm: &'static str,
    /// Each backend's URL, state, in-flight count and weight at the last pick.
    candidates: Vec<(String, CandidateState, usize, u32)>,
    picked: Option<String>,
    why: Why,
    /// The request waited in the pool's queue before this pick.
    queued: bool,
    /// Failed attempts so far, as `URL: what went wrong`.
    failed: Vec<String>,
    /// The rendered field value, refreshed by [`Decision::render`].
    text: String,
}

impl Decision {
    /// A decision for `head`, which `listener` routed to `pool`.
    pub fn for_pool(listener: &ListenerConfig, head: &RequestHead, pool: &PoolConfig) -> Decision {
        let host = head.value("host").and_then(routing::request_host);
        let route = routing::find_route(&listener.routes, host, &head.target).map(|i| &listener.routes[i]);
        Decision {
            route: route.map_or("*".to_string(), describe_route),
            pool: pool.name.clone(),
            algorithm: pool.algorithm.name(),
            ..Decision::default()
        }
    }

    /// Records one pick: the state of every backend by index (`state_of`), which one was
    /// picked, and the balancer's reason and scores.
    pub fn note_pick(
        &mut self,
        backends: &[Arc<Backend>],
        state_of: impl Fn(usize) -> CandidateState,
        picked: Option<usize>,
        why: Why,
    ) {
        self.candidates = backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.url().to_string(), state_of(i), b.active(), b.config.weight))
            .collect();
        self.picked = picked.map(|i| backends[i].url().to_string());
        self.why = why;
    }

    /// The request waited in the pool's queue because every candidate was full.
    pub fn note_queued(&mut self) {
        self.queued = true;
    }

    /// Records an attempt on `url` that failed with `error`.
    pub fn note_failure(&mut self, url: &str, error: &BackendError) {
        let what = match error {
            BackendError::Failed { error, .. } | BackendError::BodyNotTaken(error) => match error_word(error) {
                Some(word) => word.to_string(),
                None => format!("failed ({error})"),
            },
            other => other.detail().to_string(),
        };
        self.failed.push(format!("{url}: {what}"));
    }

    /// Renders the field value from what is recorded so far, and returns it.
    pub fn render(&mut self) -> &str {
        let mut t = std::mem::take(&mut self.text);
        t.clear();
        let _ = write!(t, "route={}; pool={}; algorithm={}; candidates=", self.route, self.pool, self.algorithm);
        for (i, (url, state, in_flight, weight)) in self.candidates.iter().enumerate() {
            let comma = if i > 0 { ", " } else { "" };
            let _ = write!(t, "{comma}{url} {} in-flight={in_flight} weight={weight}", state.word());
            if let Some(Some(score)) = self.why.scores.get(i) {
                let _ = write!(t, " {}={}", self.why.score_name, number(*score));
            }
        }
        let _ = write!(t, "; picked={}; reason={}", self.picked.as_deref().unwrap_or("none"), self.why.reason);
        if self.queued {
            t.push_str(" (after waiting in the queue: every candidate was full)");
        }
        let _ = write!(t, "; attempt={}", self.failed.len() + 1);
        if !self.failed.is_empty() {
            let _ = write!(t, "; earlier={}", self.failed.join(", "));
        }
        self.text = t;
        &self.text
    }

    /// The value last rendered.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// A route as the field shows it: `host/prefix`, `host`, `/prefix`, or `*` for every request.
fn describe_route(route: &RouteConfig) -> String {
    match (&route.host, &route.path_prefix) {
        (Some(host), Some(prefix)) if prefix == "/" => host.to_string(),
        (Some(host), Some(prefix)) => format!("{host}{prefix}"),
        (Some(host), None) => host.to_string(),
        (None, Some(prefix)) => prefix.clone(),
        (None, None) => "*".to_string(),
    }
}

/// What kind of failure an I/O error was, in a few words, when it is a common kind.
fn error_word(error: &std::io::Error) -> Option<&'static str> {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => Some("connection refused"),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => Some("timed out"),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof => Some("connection closed"),
        _ => None,
    }
}

/// Whole numbers without decimals (smooth weighting's current weights), others with three.
fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::backends;

    #[test]
    fn the_field_names_every_candidate_the_pick_and_the_reason() {
        let list = backends(&[5, 1, 1]);
        let _held = list[0].start_exchange();
        let mut d = Decision {
            route: "*".into(),
            pool: "web".into(),
            algorithm: "weighted-round-robin",
            ..Decision::default()
        };
        let why = Why { reason: "highest".into(), score_name: "current", scores: vec![Some(-2.0), Some(1.0), None] };
        let states = [CandidateState::Up, CandidateState::Up, CandidateState::Down];
        d.note_pick(&list, |i| states[i], Some(0), why);
        assert_eq!(
            d.render(),
            "route=*; pool=web; algorithm=weighted-round-robin; candidates=\
             http://127.0.0.1:1000 up in-flight=1 weight=5 current=-2, \
             http://127.0.0.1:1001 up in-flight=0 weight=1 current=1, \
             http://127.0.0.1:1002 down in-flight=0 weight=1; \
             picked=http://127.0.0.1:1000; reason=highest; attempt=1"
        );
    }

    #[test]
    fn a_failed_attempt_is_counted_and_said() {
        let list = backends(&[1]);
        let mut d = Decision::default();
        d.note_pick(
            &list,
            |_| CandidateState::Tried,
            None,
            Why { reason: "nothing eligible".into(), ..Why::default() },
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let stage = crate::backend_error::Stage::Connect;
        d.note_failure("http://127.0.0.1:1000", &BackendError::Failed { stage, error: refused });
        let text = d.render();
        assert!(
            text.contains(
                "picked=none; reason=nothing eligible; attempt=2; earlier=http://127.0.0.1:1000: connection refused"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_request_that_waited_in_the_queue_says_so() {
        let list = backends(&[1]);
        let mut d = Decision::default();
        d.note_queued();
        d.note_pick(&list, |_| CandidateState::Up, Some(0), Why { reason: "next in turn".into(), ..Why::default() });
        assert!(
            d.render()
                .contains("reason=next in turn (after waiting in the queue: every candidate was full); attempt=1"),
            "{}",
            d.text()
        );
    }

    #[test]
    fn scores_print_whole_or_with_three_decimals() {
        assert_eq!(number(-3.0), "-3");
        assert_eq!(number(0.12345), "0.123");
    }
}
