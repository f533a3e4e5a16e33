//! The pure state machine of a backend's health: probe results and failures on real traffic
//! in, up / down / unknown out, with rise and fall counts. Reports a change only when the
//! state really flips, so the caller logs and alerts once. No I/O, no shared state.

/// Where a backend stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Added while running and not probed yet: no traffic until a probe passes.
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// A backend's health flipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthChange {
    pub from: Health,
    pub to: Health,
}

/// A backend's health and the run of probe results that disagree with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthState {
    pub health: Health,
    /// Probe results in a row that point away from `health`.
    streak: u32,
}

impl HealthState {
    pub fn up() -> HealthState {
        HealthState { health: Health::Up, streak: 0 }
    }

    pub fn unknown() -> HealthState {
        HealthState { health: Health::Unknown, streak: 0 }
    }

    /// Records one probe result. Up goes down after `fall` failures in a row, down comes up
    /// after `rise` passes in a row, unknown comes up on its first pass (or goes down after
    /// `fall` failures). Returns the change, if this result made one.
    pub fn record_probe(&mut self, passed: bool, rise: u32, fall: u32) -> Option<HealthChange> {
        let (needed, to) = match (self.health, passed) {
            (Health::Unknown, true) => (1, Health::Up),
            (Health::Up, true) | (Health::Down, false) => {
                self.streak = 0;
                return None;
            }
            (Health::Up | Health::Unknown, false) => (fall, Health::Down),
            (Health::Down, true) => (rise, Health::Up),
        };
        self.streak += 1;
        (self.streak >= needed).then(|| self.become_(to))
    }

    /// Takes an up backend down once `in_a_row` traffic failures reach `limit` (0: never).
    pub fn record_traffic_failures(&mut self, in_a_row: u32, limit: u32) -> Option<HealthChange> {
        let reached = limit > 0 && in_a_row >= limit;
        (reached && self.health == Health::Up).then(|| self.become_(Health::Down))
    }

    /// Sets the health from outside the checks (an operator, a test).
    pub fn force(&mut self, up: bool) -> Option<HealthChange> {
        let to = if up { Health::Up } else { Health::Down };
        (self.health != to).then(|| self.become_(to))
    }

    fn become_(&mut self, to: Health) -> HealthChange {
        let change = HealthChange { from: self.health, to };
        self.health = to;
        self.streak = 0;
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Health::{Down, Unknown, Up};

    fn change(from: Health, to: Health) -> Option<HealthChange> {
        Some(HealthChange { from, to })
    }

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_passes() {
        let mut s = HealthState::up();
        //        fail  pass  fail  fail        pass  pass  pass
        // state: up    up    up    DOWN        down  down  UP      (rise 3, fall 2)
        assert_eq!(s.record_probe(false, 3, 2), None);
        assert_eq!(s.record_probe(true, 3, 2), None);
        assert_eq!(s.record_probe(false, 3, 2), None);
        assert_eq!(s.record_probe(false, 3, 2), change(Up, Down));
        assert_eq!(s.record_probe(false, 3, 2), None);
        assert_eq!(s.record_probe(true, 3, 2), None);
        assert_eq!(s.record_probe(true, 3, 2), None);
        assert_eq!(s.record_probe(true, 3, 2), change(Down, Up));
        assert_eq!(s.health, Up);
    }

    #[test]
    fn a_pass_in_between_resets_the_streak() {
        let mut s = HealthState::up();
        for _ in 0..10 {
            assert_eq!(s.record_probe(false, 2, 2), None);
            assert_eq!(s.record_probe(true, 2, 2), None);
        }
        assert_eq!(s.health, Up);
    }

    #[test]
    fn an_unknown_backend_joins_on_its_first_passing_probe() {
        let mut s = HealthState::unknown();
        assert_eq!(s.record_probe(true, 5, 2), change(Unknown, Up));

        //        fail     pass
        // state: unknown  UP        (rise 5, fall 2): one pass is enough to join
        let mut s = HealthState::unknown();
        assert_eq!(s.record_probe(false, 5, 2), None);
        assert_eq!(s.record_probe(true, 5, 2), change(Unknown, Up));

        //        fail     fail      pass  pass
        // state: unknown  DOWN      down  UP   (rise 2, fall 2): once down, rise applies
        let mut s = HealthState::unknown();
        assert_eq!(s.record_probe(false, 2, 2), None);
        assert_eq!(s.record_probe(false, 2, 2), change(Unknown, Down));
        assert_eq!(s.record_probe(true, 2, 2), None);
        assert_eq!(s.record_probe(true, 2, 2), change(Down, Up));
    }

    #[test]
    fn traffic_failures_take_an_up_backend_down_once() {
        let mut s = HealthState::up();
        assert_eq!(s.record_traffic_failures(1, 3), None);
        assert_eq!(s.record_traffic_failures(2, 3), None);
        assert_eq!(s.record_traffic_failures(3, 3), change(Up, Down));
        // Workers that failed at the same time report no second change.
        assert_eq!(s.record_traffic_failures(4, 3), None);
        assert_eq!(s.record_traffic_failures(3, 3), None);
        // Probes bring it back after `rise` passes, not at the first.
        assert_eq!(s.record_probe(true, 2, 2), None);
        assert_eq!(s.record_probe(true, 2, 2), change(Down, Up));
    }

    #[test]
    fn traffic_failures_never_move_unknown_backends_and_zero_turns_them_off() {
        let mut s = HealthState::unknown();
        assert_eq!(s.record_traffic_failures(100, 1), None);
        assert_eq!(s.health, Unknown);
        let mut s = HealthState::up();
        assert_eq!(s.record_traffic_failures(100, 0), None);
        assert_eq!(s.health, Up);
    }

    #[test]
    fn a_traffic_failure_restarts_the_probe_count_for_rising() {
        //        traffic x2  pass  (traffic would be ignored)  pass  pass
        // state: DOWN        down                               down  UP     (rise 3)
        let mut s = HealthState::up();
        assert_eq!(s.record_traffic_failures(2, 2), change(Up, Down));
        assert_eq!(s.record_probe(true, 3, 2), None);
        assert_eq!(s.record_traffic_failures(3, 2), None);
        assert_eq!(s.record_probe(true, 3, 2), None);
        assert_eq!(s.record_probe(true, 3, 2), change(Down, Up));
    }

    #[test]
    fn forcing_reports_only_real_changes() {
        let mut s = HealthState::up();
        assert_eq!(s.force(true), None);
        assert_eq!(s.force(false), change(Up, Down));
        let mut s = HealthState::unknown();
        assert_eq!(s.force(true), change(Unknown, Up));
    }
}
