//! `GET /stats`: the snapshot as JSON, with camelCase keys.
//!
//! Top level: `version`, `uptimeSeconds`, connections, workers, retries, sluice's own
//! answers, host numbers, a summary per pool, and `servers`: one object per backend with its
//! pool, `url`, `healthy`, `draining`, `discoveredFrom` (backends found by DNS), `weight`, `activeConnections`, `requests`, `failures`,
//! responses by class, bytes, lifetime latency and `recent` rates; and `edge`: per route with
//! edge controls, its `route`, `refused` by reason and `rateLimitClients`; and `tls`: handshake
//! counts, the certificates served, and `acme`: each automatic certificate's state. Pure.

use super::rates::Recent;
use super::snapshot::{EdgeSnapshot, ServerSnapshot, SlowClients, Snapshot, TlsSnapshot};
use crate::acme::status::CertificateStatus;
use crate::ops::host;
use crate::ops::metrics::{ExchangeSnapshot, STATUS_CLASSES};
use crate::ops::time::rfc3339_seconds;
use serde_json::{json, Map, Value};
use std::time::Duration;
use std::time::SystemTime;

pub fn render(s: &Snapshot) -> Value {
    let pools: Vec<Value> = s
        .pools
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "algorithm": p.algorithm,
                "servers": p.servers.len(),
                "healthy": p.servers.iter().filter(|s| s.healthy).count(),
                "available": p.available(),
            })
        })
        .collect();
    let servers: Vec<Value> =
        s.pools.iter().flat_map(|p| p.servers.iter().map(move |server| server_json(&p.name, server))).collect();
    json!({
        "version": s.version,
        "uptimeSeconds": round3(s.uptime.as_secs_f64()),
        "openConnections": s.open_connections,
        "parkedConnections": s.parked_connections,
        "workers": {
            "total": s.workers.total,
            "busy": s.workers.busy,
            "idle": s.workers.idle,
            "queued": s.workers.queued,
        },
        "rejectedConnections": s.rejected_connections,
        "slowClients": slow_clients_json(&s.slow_clients),
        "retries": s.retries,
        "splicedBytes": s.spliced_bytes,
        "proxyHeadersRefused": {"malformed": s.proxy_headers_refused.0, "timedOut": s.proxy_headers_refused.1},
        "ownAnswers": {
            "requests": s.own_answers.total(),
            "responses": by_class(&s.own_answers),
        },
        "host": host_json(&s.host),
        "pools": pools,
        "servers": servers,
        "edge": s.edges.iter().map(edge_json).collect::<Vec<Value>>(),
        "tls": tls_json(&s.tls),
    })
}

fn tls_json(tls: &TlsSnapshot) -> Value {
    let certificates: Vec<Value> = tls
        .certificates
        .iter()
        .map(|c| json!({"listener": c.listener, "cert": c.cert, "names": c.names, "notAfter": c.not_after}))
        .collect();
    let acme: Vec<Value> = tls.acme.iter().map(|(status, listeners)| acme_json(status, listeners)).collect();
    json!({"handshakes": tls.handshakes, "handshakeFailures": tls.handshake_failures, "certificates": certificates,
        "acme": acme})
}

/// One automatic certificate: `state` is `"pending"` (no certificate yet; `problem` says
/// why) or `"valid"` (`problem` then holds the last failed renewal, if any).
fn acme_json(s: &CertificateStatus, listeners: &[String]) -> Value {
    let time = |t: Option<SystemTime>| t.map(rfc3339_seconds);
    json!({
        "names": s.names,
        "listeners": listeners,
        "state": s.state(),
        "problem": s.problem,
        "notAfter": time(s.not_after),
        "nextOrder": time(s.next_order),
        "orders": s.orders,
        "failures": s.failures,
    })
}

fn edge_json(e: &EdgeSnapshot) -> Value {
    let refused: Map<String, Value> =
        e.refused.iter().map(|(reason, n)| (reason.name().to_string(), json!(n))).collect();
    json!({"route": e.route, "refused": refused, "rateLimitClients": e.rate_limit_clients})
}

fn server_json(pool: &str, s: &ServerSnapshot) -> Value {
    let d = &s.exchanges.duration;
    let mut server = json!({
        "pool": pool,
        "url": s.url,
        "state": s.state(),
        "healthy": s.healthy,
        "draining": s.draining,
        "removing": s.removing,
        "addedAtRuntime": s.added_at_runtime,
        "backup": s.backup,
        "weight": s.weight,
        "maxConnections": s.max_connections,
        "activeConnections": s.active,
        "requests": s.requests,
        "failures": s.failures,
        "connectionsOpened": s.connections_opened,
        "responses": by_class(&s.exchanges),
        "bytesReceived": s.exchanges.bytes_received,
        "bytesSent": s.exchanges.bytes_sent,
        "healthChecks": {"passed": s.health_checks.0, "failed": s.health_checks.1},
        "latencyMs": {
            "mean": d.mean().map(millis),
            "p50": d.quantile(0.5).map(millis),
            "p95": d.quantile(0.95).map(millis),
            "p99": d.quantile(0.99).map(millis),
        },
        "recent": s.recent.as_ref().map(recent_json),
    });
    if let Some(name) = &s.discovered_from {
        server["discoveredFrom"] = json!(name);
    }
    server
}

fn slow_clients_json(s: &SlowClients) -> Value {
    json!({
        "bodiesParked": s.counts.bodies_parked,
        "bodiesTooSlow": s.counts.bodies_too_slow,
        "readersTooSlow": s.counts.readers_too_slow,
        "parkedBodyBytes": s.counts.parked_body_bytes,
        "waitingForShare": s.waiting_for_share,
        "waitedForShare": s.waited_for_share,
        "shareWaitsTimedOut": s.share_waits_timed_out,
    })
}

fn recent_json(r: &Recent) -> Value {
    json!({
        "seconds": round3(r.seconds),
        "requestsPerSecond": round3(r.requests_per_second),
        "errorRatio": round3(r.error_ratio),
        "latencyMs": {"mean": r.latency_mean.map(millis), "p95": r.latency_p95.map(millis)},
    })
}

fn by_class(e: &ExchangeSnapshot) -> Value {
    let map: Map<String, Value> =
        STATUS_CLASSES.iter().zip(e.by_class).map(|(c, n)| (c.to_string(), n.into())).collect();
    Value::Object(map)
}

fn host_json(h: &host::Sample) -> Value {
    let space = |s: &host::Space| {
        json!({
            "totalBytes": s.total_bytes,
            "availableBytes": s.available_bytes,
            "usedRatio": round3(s.used_ratio()),
        })
    };
    json!({
        "process": {
            "cpuSeconds": h.process.cpu_seconds,
            "residentBytes": h.process.resident_bytes,
            "openFds": h.process.open_fds,
        },
        "load": h.host.load,
        "memory": h.host.memory.as_ref().map(space),
        "disk": h.host.disk.as_ref().map(|d| {
            let mut v = space(d);
            v["path"] = host::DISK_PATH.into();
            v
        }),
    })
}

fn millis(d: Duration) -> f64 {
    round3(d.as_secs_f64() * 1000.0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
