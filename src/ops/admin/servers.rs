//! Runtime changes to the backend set: add, drain, undrain and remove, each made as a new
//! snapshot through `Runtime::change_state`, recorded in the snapshot's `RuntimeChanges` (so
//! that reloads keep them), logged at info, and visible in /stats at once.
//!
//! Called by the admin handler, one request at a time; joining and leaving follow
//! `ops::membership`, as backends found by DNS do.

use super::http::{Request, Response};
use crate::backend::Backend;
use crate::config::resolve::resolve_server;
use crate::config::{parse_server_object, ServerConfig};
use crate::ops::changes::{Place, RuntimeChanges};
use crate::ops::membership;
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
    let (backend, probe) = membership::probed_backend(server.clone(), pool);
    drop(state);
    let added = runtime.change_state(|current| {
        if current.pool(Some(&pool_name)).is_some_and(|p| p.backends.iter().any(|b| b.url() == server.url)) {
            return Err(Response::error(409, &format!("{} is already in pool {pool_name:?}", server.url)));
        }
        let mut changes = current.changes.clone();
        changes.add(&pool_name, server.clone());
        Ok((current.with_changes(changes, &[Arc::clone(&backend)]), ()))
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
        Ok((current.with_changes(changes, &[]), places))
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
    let undrain = |changes: &mut RuntimeChanges, place: &Place, _: &Backend| changes.undrain(place);
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
    if let Some(refusal) = refuse_discovered(&runtime.state(), request) {
        return refusal;
    }
    let places = match change_places(runtime, request, |changes, place, _| changes.begin_removal(place)) {
        Ok(places) => places,
        Err(response) => return response,
    };
    for (place, backend) in places.iter().filter(|(_, b)| b.active() > 0) {
        info!("admin: removing {} from pool {:?} once {} in flight finish", place.url, place.pool, backend.active());
    }
    membership::finish_removals(runtime);
    let state = runtime.state();
    let pending = places.iter().any(|(place, _)| state.changes.is_removing(place));
    let status = if pending { 202 } else { 200 };
    Response::json(status, &json!({ "removed": !pending, "servers": describe(&places) }))
}

/// A backend found by DNS comes and goes with its records: removing it here would last only
/// until the next lookup, so it is refused (draining it works).
fn refuse_discovered(state: &State, request: &Request) -> Option<Response> {
    let found = places(state, request).ok()?;
    let (place, backend) = found.iter().find(|(_, b)| b.config.discovered_from.is_some())?;
    let name = backend.config.discovered_from.as_deref().unwrap_or_default();
    let problem = format!(
        "{} in pool {:?} was found by DNS ({name}); it leaves when DNS stops listing it (drain it to take it out of rotation)",
        place.url, place.pool
    );
    Some(Response::error(409, &problem))
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
