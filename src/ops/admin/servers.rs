//! Runtime changes to the backend set: add, drain, undrain and remove, each made as a new
//! snapshot through `Runtime::change_state`, recorded in the snapshot's `RuntimeChanges` (so
//! that reloads keep them), logged at info, and visible in /stats at once.
//!
//! Called by the admin handler (one request at a time) and by the admin ticker, which takes
//! out drained backends whose in-flight exchanges have ended.

use super::http::{Request, Response};
use crate::backend::Backend;
use crate::config::resolve::resolve_server;
use crate::config::{parse_server_object, ServerConfig};
use crate::health;
use crate::ops::changes::{Place, RuntimeChanges};
use crate::pool::Pool;
use crate::runtime::{Runtime, State};
use log::info;
use serde_json::{json, Value};
use std::sync::Arc;

/// `POST /servers` with `{"url", "weight"?, "maxConnections"?, "backup"?, "pool"?}`: probes
/// the new backend once, then adds it; it takes traffic at once if the probe passed, and
/// after `rise` passing probes otherwise.
pub fn add(runtime: &Runtime, request: &Request) -> Response {
    let (pool_name, server) = match read_new_server(&request.body) {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let state = runtime.state();
    let Some(pool) = state.pool(pool_name.as_deref()) else {
        let asked = pool_name.unwrap_or_default();
        return Response::error(400, &format!("no pool named {asked:?} ({})", pool_names(&state)));
    };
    let pool_name = pool.name().to_string();
    if pool.backends.iter().any(|b| b.url() == server.url) {
        return Response::error(409, &format!("{} is already in pool {pool_name:?}", server.url));
    }
    if server.protocol != pool.config.protocol {
        let scheme = pool.config.protocol.scheme();
        return Response::error(400, &format!("pool {pool_name:?} takes {scheme}:// backends, not {}", server.url));
    }
    let backend = Arc::new(Backend::new(server.clone()));
    let probe = first_probe(&backend, pool);
    drop(state);
    let added = runtime.change_state(|current| {
        if current.pool(Some(&pool_name)).is_some_and(|p| p.backends.iter().any(|b| b.url() == server.url)) {
            return Err(Response::error(409, &format!("{} is already in pool {pool_name:?}", server.url)));
        }
        let mut changes = current.changes.clone();
        changes.add(&pool_name, server.clone());
        Ok((current.with_changes(changes, Some(Arc::clone(&backend))), ()))
    });
    if let Err(response) = added {
        return response;
    }
    let probe_text = match &probe {
        Ok(()) => "probe passed; in rotation now".to_string(),
        Err(why) => format!("probe failed ({why}); joins after passing health checks"),
    };
    info!("admin: added {} to pool {pool_name:?} with weight {}: {probe_text}", server.url, server.weight);
    Response::json(
        201,
        &json!({
            "pool": pool_name,
            "url": server.url,
            "weight": server.weight,
            "healthy": probe.is_ok(),
            "probe": probe_text,
        }),
    )
}

/// The body of `POST /servers`: the pool it names, if any, and the backend.
fn read_new_server(body: &[u8]) -> Result<(Option<String>, ServerConfig), Response> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Response::error(400, &format!("request body is not valid JSON: {e}")))?;
    let pool = match value.get("pool") {
        None => None,
        Some(Value::String(name)) => Some(name.clone()),
        Some(_) => return Err(Response::error(400, "pool: must be the name of a pool")),
    };
    let mut server =
        parse_server_object(&value, "request body", &["pool"]).map_err(|e| Response::error(400, &e.to_string()))?;
    resolve_server(&mut server).map_err(|problem| Response::error(400, &format!("url: {problem}")))?;
    Ok((pool, server))
}

/// Probes a backend about to be added: passing, it starts healthy; failing, it starts down and
/// needs `rise` passing probes, like any backend that went down.
fn first_probe(backend: &Backend, pool: &Pool) -> Result<(), String> {
    let probe = health::probe(backend, pool);
    backend.metrics.record_health_check(probe.is_ok());
    if probe.is_err() {
        backend.set_healthy(false);
    }
    probe
}

/// Which backends a request names: `?url=` in every pool that lists it, or in `?pool=`.
fn places(state: &State, request: &Request) -> Result<Places, Response> {
    let url = request.param("url").ok_or_else(|| Response::error(400, "give the backend as ?url=..."))?;
    let pool_filter = request.param("pool");
    let found: Vec<_> = state
        .pools
        .iter()
        .filter(|p| pool_filter.is_none_or(|name| p.name() == name))
        .flat_map(|p| p.backends.iter().filter(|b| b.url() == url).map(|b| (Place::new(p.name(), url), Arc::clone(b))))
        .collect();
    if found.is_empty() {
        return Err(Response::error(404, &format!("no backend {url:?}")));
    }
    Ok(found)
}

/// The backends a request names, each with its place.
type Places = Vec<(Place, Arc<Backend>)>;

/// Records `change` for every backend the request names, in one new state snapshot.
fn change_places(
    runtime: &Runtime,
    request: &Request,
    change: impl Fn(&mut RuntimeChanges, &Place, &Backend),
) -> Result<Places, Response> {
    runtime.change_state(|current| {
        let places = places(current, request)?;
        let mut changes = current.changes.clone();
        for (place, backend) in &places {
            change(&mut changes, place, backend);
        }
        Ok((current.with_changes(changes, None), places))
    })
}

/// `POST /servers/drain?url=`: no new exchanges; in-flight ones finish; it stays listed.
pub fn drain(runtime: &Runtime, request: &Request) -> Response {
    match change_places(runtime, request, |changes, place, _| changes.drain(place)) {
        Ok(places) => {
            for (place, backend) in &places {
                info!("admin: draining {} in pool {:?} ({} in flight)", place.url, place.pool, backend.active());
            }
            Response::json(200, &json!({ "draining": describe(&places) }))
        }
        Err(response) => response,
    }
}

/// `POST /servers/undrain?url=`: takes new exchanges again (and is no longer to be removed).
pub fn undrain(runtime: &Runtime, request: &Request) -> Response {
    let undrain = |changes: &mut RuntimeChanges, place: &Place, backend: &Backend| {
        changes.undrain(place);
        backend.set_draining(false);
    };
    match change_places(runtime, request, undrain) {
        Ok(places) => {
            for (place, _) in &places {
                info!("admin: {} in pool {:?} takes new requests again", place.url, place.pool);
            }
            Response::json(200, &json!({ "undrained": describe(&places) }))
        }
        Err(response) => response,
    }
}

/// `DELETE /servers?url=`: drains the backend, then removes it once nothing is in flight:
/// 200 when that is at once, 202 when exchanges are still finishing.
pub fn remove(runtime: &Runtime, request: &Request) -> Response {
    let places = match change_places(runtime, request, |changes, place, _| changes.begin_removal(place)) {
        Ok(places) => places,
        Err(response) => return response,
    };
    for (place, backend) in places.iter().filter(|(_, b)| b.active() > 0) {
        info!("admin: removing {} from pool {:?} once {} in flight finish", place.url, place.pool, backend.active());
    }
    finish_removals(runtime);
    let state = runtime.state();
    let pending = places.iter().any(|(place, _)| state.changes.is_removing(place));
    let status = if pending { 202 } else { 200 };
    Response::json(status, &json!({ "removed": !pending, "servers": describe(&places) }))
}

/// Takes out every backend marked for removal that has nothing in flight.
pub fn finish_removals(runtime: &Runtime) {
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
        Ok((current.with_changes(changes, None), done))
    });
    for place in removed.unwrap_or_default() {
        info!("admin: removed {} from pool {:?}", place.url, place.pool);
    }
}

fn backend_at<'a>(state: &'a State, place: &Place) -> Option<&'a Arc<Backend>> {
    state.pool(Some(&place.pool))?.backends.iter().find(|b| b.url() == place.url)
}

fn describe(places: &[(Place, Arc<Backend>)]) -> Value {
    places
        .iter()
        .map(|(place, backend)| json!({"pool": place.pool, "url": place.url, "activeConnections": backend.active()}))
        .collect()
}

fn pool_names(state: &State) -> String {
    let names: Vec<String> = state.pools.iter().map(|p| format!("{:?}", p.name())).collect();
    format!("pools: {}", names.join(", "))
}
