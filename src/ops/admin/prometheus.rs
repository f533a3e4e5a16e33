//! `GET /metrics`: the snapshot in the Prometheus text format, version 0.0.4: for each metric
//! a `# HELP` and a `# TYPE` line, then its samples, `name{label="value",...} number`.
//!
//! Per backend (labels `pool` and `server`): exchanges by status class, a request-duration
//! histogram, bytes in and out, in-flight exchanges, up, draining, weight, failures and
//! health-check results. Process-wide: client connections, workers busy and idle, queued
//! connections, retries, rejected connections, sluice's own answers, and host numbers. Per
//! route with edge controls (label `route`): refusals by `reason`, rate-limited clients. Pure.

use super::snapshot::{EdgeSnapshot, PoolSnapshot, ServerSnapshot, Snapshot, TlsSnapshot};
use crate::ops::host;
use crate::ops::metrics::{DURATION_BUCKETS_MICROS, STATUS_CLASSES};
use std::fmt::Write;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn render(s: &Snapshot) -> String {
    let mut out = Text(String::with_capacity(16 * 1024));
    render_process(&mut out, s);
    render_backends(&mut out, &s.pools);
    render_edges(&mut out, &s.edges);
    render_tls(&mut out, &s.tls);
    render_host(&mut out, &s.host);
    out.0
}

/// The text being written; `write!` into a `String` cannot fail.
struct Text(String);

impl Text {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                let comma = if i > 0 { "," } else { "" };
                let _ = write!(self.0, "{comma}{label}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A metric with one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.header(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Backslash, double quote and line feed are escaped in label values.
fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Refusals by route and reason, and each rate limiter's table size; nothing without routes
/// that have edge controls.
fn render_edges(out: &mut Text, edges: &[EdgeSnapshot]) {
    if edges.is_empty() {
        return;
    }
    let name = "sluice_edge_refusals_total";
    out.header(
        name,
        "counter",
        "Requests refused by a route's edge controls, by reason (403 denied, 429 rate_limited, 401 unauthorized).",
    );
    for e in edges {
        for (reason, n) in &e.refused {
            out.sample(name, &[("route", &e.route), ("reason", reason.name())], n);
        }
    }
    let name = "sluice_edge_rate_limit_clients";
    let limited: Vec<_> = edges.iter().filter_map(|e| Some((&e.route, e.rate_limit_clients?))).collect();
    if !limited.is_empty() {
        out.header(name, "gauge", "Client addresses a route's rate limiter remembers (at most its maxClients).");
        for (route, n) in limited {
            out.sample(name, &[("route", route)], n);
        }
    }
}

fn render_tls(out: &mut Text, tls: &TlsSnapshot) {
    out.single("sluice_tls_handshakes_total", "counter", "TLS handshakes with clients that finished.", tls.handshakes);
    out.single(
        "sluice_tls_handshake_failures_total",
        "counter",
        "TLS handshakes with clients that failed: a protocol error, or not finished in time.",
        tls.handshake_failures,
    );
    let name = "sluice_tls_certificate_expiry_seconds";
    out.header(name, "gauge", "When each listener certificate expires, in seconds since the Unix epoch.");
    for c in &tls.certificates {
        out.sample(name, &[("listener", &c.listener), ("cert", &c.cert)], c.not_after);
    }
    render_acme(out, tls);
}

/// Each automatic certificate, labelled by its names (comma-separated).
fn render_acme(out: &mut Text, tls: &TlsSnapshot) {
    let metrics = [
        ("sluice_acme_certificate_valid", "gauge", "1 while an ACME certificate is served, 0 while it is pending."),
        ("sluice_acme_orders_total", "counter", "ACME orders placed since start."),
        ("sluice_acme_order_failures_total", "counter", "ACME orders that failed since start."),
    ];
    for (name, kind, help) in metrics {
        out.header(name, kind, help);
        for (status, _) in &tls.acme {
            let names = status.names.join(",");
            let value = match name {
                "sluice_acme_certificate_valid" => u64::from(status.valid),
                "sluice_acme_orders_total" => status.orders,
                _ => status.failures,
            };
            out.sample(name, &[("names", &names)], value);
        }
    }
}

fn render_process(out: &mut Text, s: &Snapshot) {
    out.header("sluice_build_info", "gauge", "Always 1; the version label says which sluice runs.");
    out.sample("sluice_build_info", &[("version", s.version)], 1);
    out.single("sluice_uptime_seconds", "gauge", "Seconds since sluice started.", s.uptime.as_secs_f64());
    out.single(
        "sluice_client_connections",
        "gauge",
        "Client connections open, those queued for a worker included.",
        s.open_connections,
    );
    out.header("sluice_workers", "gauge", "Worker threads by state: busy serving a connection, or idle.");
    out.sample("sluice_workers", &[("state", "busy")], s.workers.busy);
    out.sample("sluice_workers", &[("state", "idle")], s.workers.idle);
    out.single("sluice_queued_connections", "gauge", "Accepted connections waiting for a worker.", s.workers.queued);
    out.single(
        "sluice_parked_connections",
        "gauge",
        "Idle client connections in the waiting room, holding no worker.",
        s.parked_connections,
    );
    out.single(
        "sluice_rejected_connections_total",
        "counter",
        "Connections refused with 503 because limits.maxConnections was reached.",
        s.rejected_connections,
    );
    render_slow_clients(out, s);
    out.single(
        "sluice_retries_total",
        "counter",
        "Attempts sent again after a failed one, to another backend or on a fresh connection.",
        s.retries,
    );
    let name = "sluice_proxy_header_refusals_total";
    out.header(name, "counter", "Connections closed for a PROXY header that was malformed or late (acceptProxy).");
    out.sample(name, &[("reason", "malformed")], s.proxy_headers_refused.0);
    out.sample(name, &[("reason", "timeout")], s.proxy_headers_refused.1);
    out.single(
        "sluice_spliced_bytes_total",
        "counter",
        "Response body bytes moved from backend to client by splice(2), never copied through sluice.",
        s.spliced_bytes,
    );
    let name = "sluice_own_responses_total";
    out.header(name, "counter", "Responses sluice made itself (refusals, no backend available), by status class.");
    for (class, n) in STATUS_CLASSES.iter().zip(s.own_answers.by_class) {
        out.sample(name, &[("class", class)], n);
    }
}

fn render_slow_clients(out: &mut Text, s: &Snapshot) {
    let slow = &s.slow_clients;
    let name = "sluice_slow_client_events_total";
    out.header(name, "counter", "What sluice did about slow clients: bodies parked in the waiting room, bodies refused 408 and responses cut off below limits.minClientBytesPerSecond.");
    out.sample(name, &[("event", "body_parked")], slow.counts.bodies_parked);
    out.sample(name, &[("event", "body_too_slow")], slow.counts.bodies_too_slow);
    out.sample(name, &[("event", "reader_too_slow")], slow.counts.readers_too_slow);
    out.single(
        "sluice_parked_body_bytes",
        "gauge",
        "Bytes of incomplete request bodies held by connections in the waiting room.",
        slow.counts.parked_body_bytes,
    );
    out.single(
        "sluice_share_waiting_connections",
        "gauge",
        "Connections waiting because their address holds limits.maxWorkersPerClient workers.",
        slow.waiting_for_share,
    );
    out.single(
        "sluice_share_waits_total",
        "counter",
        "Connections that had to wait for their address's share of the workers.",
        slow.waited_for_share,
    );
    out.single(
        "sluice_share_wait_timeouts_total",
        "counter",
        "Waits for an address's share of the workers that passed timeouts.queue (answered 503).",
        slow.share_waits_timed_out,
    );
}

fn render_backends(out: &mut Text, pools: &[PoolSnapshot]) {
    let name = "sluice_requests_total";
    out.header(name, "counter", "Exchanges answered by a backend, by pool, server and status class.");
    for pool in pools {
        for server in &pool.servers {
            for (class, n) in STATUS_CLASSES.iter().zip(server.exchanges.by_class) {
                out.sample(name, &[("pool", &pool.name), ("server", &server.url), ("class", class)], n);
            }
        }
    }
    render_durations(out, pools);
    let per_server = |out: &mut Text, (name, kind, help): (&str, &str, &str), value: fn(&ServerSnapshot) -> u64| {
        out.header(name, kind, help);
        for pool in pools {
            for server in &pool.servers {
                out.sample(name, &[("pool", &pool.name), ("server", &server.url)], value(server));
            }
        }
    };
    let bytes_received =
        ("sluice_received_bytes_total", "counter", "Bytes read from clients (request heads and bodies).");
    per_server(out, bytes_received, |s| s.exchanges.bytes_received);
    per_server(out, ("sluice_sent_bytes_total", "counter", "Response body bytes sent to clients."), |s| {
        s.exchanges.bytes_sent
    });
    per_server(out, ("sluice_backend_active_exchanges", "gauge", "Exchanges in flight."), |s| s.active as u64);
    per_server(out, ("sluice_backend_up", "gauge", "1 when the backend passes its health checks, else 0."), |s| {
        u64::from(s.healthy)
    });
    per_server(out, ("sluice_backend_draining", "gauge", "1 when the backend gets no new exchanges."), |s| {
        u64::from(s.draining)
    });
    per_server(out, ("sluice_backend_weight", "gauge", "The backend's configured weight."), |s| u64::from(s.weight));
    per_server(out, ("sluice_backend_failures_total", "counter", "Failed connects and broken responses."), |s| {
        s.failures
    });
    let opened = ("sluice_backend_connections_opened_total", "counter", "New TCP connections opened to the backend.");
    per_server(out, opened, |s| s.connections_opened);
    let attempts =
        ("sluice_backend_attempts_total", "counter", "Exchanges started, attempts that failed to connect included.");
    per_server(out, attempts, |s| s.requests);
    let name = "sluice_health_checks_total";
    out.header(name, "counter", "Health-check probes, by result.");
    for pool in pools {
        for server in &pool.servers {
            let (passed, failed) = server.health_checks;
            out.sample(name, &[("pool", &pool.name), ("server", &server.url), ("result", "pass")], passed);
            out.sample(name, &[("pool", &pool.name), ("server", &server.url), ("result", "fail")], failed);
        }
    }
}

fn render_durations(out: &mut Text, pools: &[PoolSnapshot]) {
    let name = "sluice_request_duration_seconds";
    out.header(name, "histogram", "Time from a request head read to the response sent, by pool and server.");
    for pool in pools {
        for server in &pool.servers {
            let d = &server.exchanges.duration;
            let cumulative = d.cumulative();
            let labels = [("pool", pool.name.as_str()), ("server", server.url.as_str())];
            for (i, n) in cumulative.iter().enumerate() {
                let le = DURATION_BUCKETS_MICROS.get(i).map_or("+Inf".to_string(), |&us| (us as f64 / 1e6).to_string());
                out.sample(&format!("{name}_bucket"), &[labels[0], labels[1], ("le", &le)], n);
            }
            out.sample(&format!("{name}_sum"), &labels, d.sum_micros as f64 / 1e6);
            out.sample(&format!("{name}_count"), &labels, d.count());
        }
    }
}

fn render_host(out: &mut Text, h: &host::Sample) {
    if let Some(cpu) = h.process.cpu_seconds {
        out.single("process_cpu_seconds_total", "counter", "User and system CPU time of sluice.", cpu);
    }
    if let Some(rss) = h.process.resident_bytes {
        out.single("process_resident_memory_bytes", "gauge", "Resident memory of sluice.", rss);
    }
    if let Some(fds) = h.process.open_fds {
        out.single("process_open_fds", "gauge", "File descriptors sluice has open.", fds);
    }
    if let Some(load) = h.host.load {
        out.header("sluice_host_load_average", "gauge", "The host's load average over 1, 5 and 15 minutes.");
        for (period, value) in ["1m", "5m", "15m"].iter().zip(load) {
            out.sample("sluice_host_load_average", &[("period", period)], value);
        }
    }
    if let Some(memory) = h.host.memory {
        out.header("sluice_host_memory_bytes", "gauge", "The host's memory: total and available.");
        out.sample("sluice_host_memory_bytes", &[("kind", "total")], memory.total_bytes);
        out.sample("sluice_host_memory_bytes", &[("kind", "available")], memory.available_bytes);
    }
    if let Some(disk) = h.host.disk {
        let name = "sluice_host_disk_bytes";
        out.header(name, "gauge", "The file system holding the path: total bytes and bytes available.");
        out.sample(name, &[("path", host::DISK_PATH), ("kind", "total")], disk.total_bytes);
        out.sample(name, &[("path", host::DISK_PATH), ("kind", "available")], disk.available_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_quotes_backslashes_and_newlines() {
        let mut out = Text(String::new());
        out.sample("m", &[("a", "x\"y\\z\nw"), ("b", "ok")], 3);
        assert_eq!(out.0, "m{a=\"x\\\"y\\\\z\\nw\",b=\"ok\"} 3\n");
    }

    #[test]
    fn bucket_bounds_are_seconds() {
        let bounds: Vec<String> = DURATION_BUCKETS_MICROS.iter().map(|&us| (us as f64 / 1e6).to_string()).collect();
        assert_eq!(bounds[0], "0.001");
        assert_eq!(bounds[1], "0.0025");
        assert_eq!(bounds[12], "10");
    }
}
