//! How backends join and leave a running pool, the one way for the admin API and for
//! discovery by DNS: a backend joins with a first probe (passing, it takes traffic at once;
//! failing, it starts down and needs `rise` passing probes), and leaves by draining, being
//! taken out once its last in-flight exchange has ended.
//!
//! Each step is a new snapshot built through `Runtime::change_state` from the current one,
//! and recorded in its `RuntimeChanges`, so reloads keep it. The ticker calls
//! [`finish_removals`] once a second whatever is configured.

use crate::backend::Backend;
use crate::health;
use crate::ops::changes::Place;
use crate::pool::Pool;
use crate::runtime::{Runtime, State};
use log::info;
use std::sync::Arc;

/// A backend about to join `pool`, probed once: up if the probe passed, down otherwise.
pub fn probed_backend(server: crate::config::ServerConfig, pool: &Pool) -> (Arc<Backend>, Result<(), String>) {
    let backend = Arc::new(Backend::new(server));
    let probe = health::probe(&backend, pool);
    backend.metrics.record_health_check(probe.is_ok());
    if probe.is_err() {
        backend.set_healthy(false);
    }
    (backend, probe)
}

/// Takes out every backend marked for removal that has nothing in flight.
pub fn finish_removals(runtime: &Runtime) {
    if runtime.state().changes.removing().is_empty() {
        return;
    }
    let removed = runtime.change_state(|current| {
        let done: Vec<Place> = current
            .changes
            .removing()
            .iter()
            .filter(|place| backend_at(current, place).is_none_or(|b| b.active() == 0))
            .cloned()
            .collect();
        if done.is_empty() {
            return Err(());
        }
        let mut changes = current.changes.clone();
        for place in &done {
            changes.remove(place);
        }
        Ok((current.with_changes(changes, &[]), done))
    });
    for place in removed.unwrap_or_default() {
        info!("removed {} from pool {:?}: its last exchange has ended", place.url, place.pool);
    }
}

/// The backend at `place` in `state`, if it is still listed.
pub fn backend_at<'a>(state: &'a State, place: &Place) -> Option<&'a Arc<Backend>> {
    state.pool(Some(&place.pool))?.backends.iter().find(|b| b.url() == place.url)
}
