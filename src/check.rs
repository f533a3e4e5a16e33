//! `sluice --check --explain`: the effective configuration with every default filled in, as
//! a configuration file in the full form that `--check` accepts again, then the capacity
//! estimate of [`crate::capacity`].
//!
//! Pure apart from reading the open-file limit: called once by `main`.

use crate::capacity::Capacity;
use crate::config::{
    Config, DnsLookup, DnsServers, HealthCheckConfig, ListenerConfig, ListenerMode, PoolConfig, RouteConfig,
    WorkerShare,
};
use crate::edge::{Cidr, EdgeConfig, PasswordHash};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// What the effective configuration shows instead of the admin token, a secret.
const HIDDEN_TOKEN: &str = "********";

/// What `--check --explain` prints after the `--check` summary.
pub fn explain(config: &Config) -> String {
    let json = serde_json::to_string_pretty(&effective(config)).unwrap_or_default();
    format!(
        "\nEffective configuration (every default filled in; keys left out are off or unlimited; \
         the admin token is shown as {HIDDEN_TOKEN}; without \"resolvers\" the nameservers of \
         /etc/resolv.conf are asked):\n{json}\n\n{}",
        Capacity::of(config)
    )
}

/// The configuration as a full-form JSON document in which every key with a default has it.
pub fn effective(config: &Config) -> Value {
    let pools: Map<String, Value> = config.pools.iter().map(|p| (p.name.clone(), pool(p))).collect();
    let t = &config.timeouts;
    let l = &config.limits;
    let mut top = json!({
        "listeners": config.listeners.iter().map(|l| listener(config, l)).collect::<Vec<_>>(),
        "pools": pools,
        "workers": config.workers,
        "timeouts": {
            "connect": duration(t.connect), "clientHeader": duration(t.client_header),
            "keepAlive": duration(t.keep_alive), "backend": duration(t.backend), "client": duration(t.client),
            "backendIdle": duration(t.backend_idle), "drain": duration(t.drain), "queue": duration(t.queue),
            "tunnel": duration(t.tunnel), "minRateGrace": duration(t.min_rate_grace),
        },
        "limits": {
            "maxHeaderBytes": l.max_header_bytes,
            "maxConnections": l.max_connections,
            "maxConnectionsPerClient": l.max_connections_per_client.unwrap_or(0),
            "maxIdlePerBackend": l.max_idle_per_backend,
            "bufferBodyBytes": l.buffer_body_bytes,
            "minClientBytesPerSecond": l.min_client_bytes_per_second,
            "maxWorkersPerClient": worker_share(l.max_workers_per_client),
        },
        "exposeBackend": config.expose_backend,
        "waitingRoom": config.waiting_room,
        "explain": config.explain,
        "accessLog": {"format": config.access_log.format.name()},
        "alerts": {"timeout": duration(config.alerts.timeout)},
        "resolveInterval": duration(config.discovery.resolve_interval),
    });
    add_optional(&mut top, config);
    top
}

/// Adds the keys that have no default (off or unlimited when left out) where they are set.
fn add_optional(top: &mut Value, config: &Config) {
    if let Some(max) = config.limits.max_body_bytes {
        top["limits"]["maxBodyBytes"] = json!(max);
    }
    if !config.discovery.resolvers.is_empty() {
        let resolvers: Vec<String> = config.discovery.resolvers.iter().map(ToString::to_string).collect();
        top["resolvers"] = json!(resolvers);
    }
    if let Some(path) = &config.access_log.path {
        top["accessLog"]["path"] = json!(path.display().to_string());
    }
    if let Some(path) = &config.pid_file {
        top["pidFile"] = json!(path.display().to_string());
    }
    if let Some(admin) = &config.admin {
        top["admin"] = json!({"listen": admin.listen.to_string()});
        if admin.token.is_some() {
            top["admin"]["token"] = json!(HIDDEN_TOKEN);
        }
    }
    if let Some(acme) = &config.acme {
        top["acme"] = json!({"directory": acme.directory, "storage": acme.storage.display().to_string()});
        if let Some(email) = &acme.email {
            top["acme"]["email"] = json!(email);
        }
        if let Some(ca) = &acme.directory_ca {
            top["acme"]["directoryCa"] = json!(ca.display().to_string());
        }
    }
    let alerts = &config.alerts;
    if let Some(hook) = &alerts.webhook {
        top["alerts"]["webhook"] = json!(hook.url);
    }
    let h = &alerts.host;
    let thresholds = [
        ("cpuPercent", h.cpu_percent),
        ("memoryPercent", h.memory_percent),
        ("diskPercent", h.disk_percent),
        ("openFilesPercent", h.open_files_percent),
    ];
    for (key, value) in thresholds {
        if let Some(percent) = value {
            top["alerts"][key] = json!(percent);
        }
    }
}

fn listener(config: &Config, l: &ListenerConfig) -> Value {
    let mut out = json!({"listen": l.addr.to_string(), "mode": l.mode.as_str(), "acceptProxy": l.accept_proxy});
    if let Some(tls) = &l.tls {
        let certificates: Vec<Value> = tls
            .certificates
            .iter()
            .map(|c| json!({"cert": c.cert.display().to_string(), "key": c.key.display().to_string()}))
            .collect();
        out["tls"] = if tls.acme.is_empty() {
            json!({"certificates": certificates, "minVersion": tls.min_version.name()})
        } else {
            json!({"acme": tls.acme, "minVersion": tls.min_version.name()})
        };
    }
    if let Some(port) = l.redirect_to_https {
        out["redirectToHttps"] = json!(port);
    }
    let pool_name = |r: &RouteConfig| config.pools[r.pool].name.clone();
    match l.mode {
        ListenerMode::Http => out["routes"] = l.routes.iter().map(|r| route(r, pool_name(r))).collect(),
        ListenerMode::Tcp | ListenerMode::Redirect => {
            out["pool"] = json!(l.routes.first().map(pool_name).unwrap_or_default());
        }
    }
    out
}

fn route(r: &RouteConfig, pool: String) -> Value {
    let mut out = json!({"pool": pool});
    if let Some(host) = &r.host {
        out["host"] = json!(host.to_string());
    }
    if let Some(prefix) = &r.path_prefix {
        out["pathPrefix"] = json!(prefix);
    }
    if let Some(edge) = &r.edge {
        add_edge(&mut out, edge.config());
    }
    out
}

/// A route's edge controls: only those it has, since each is off when left out.
fn add_edge(route: &mut Value, e: &EdgeConfig) {
    let blocks = |list: &[Cidr]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
    if !e.addresses.allow.is_empty() {
        route["allow"] = json!(blocks(&e.addresses.allow));
    }
    if !e.addresses.deny.is_empty() {
        route["deny"] = json!(blocks(&e.addresses.deny));
    }
    if let Some(auth) = &e.basic_auth {
        let users: Map<String, Value> = auth
            .users
            .iter()
            .map(|(name, hash)| match hash {
                PasswordHash::Bcrypt(h) | PasswordHash::Argon2id(h) => (name.clone(), json!(h)),
            })
            .collect();
        route["basicAuth"] = json!({"realm": auth.realm, "users": users});
    }
    if let Some(limit) = &e.rate_limit {
        route["rateLimit"] = json!({
            "requestsPerSecond": limit.requests_per_second, "burst": limit.burst, "maxClients": limit.max_clients,
        });
    }
    for (key, rules) in [("requestHeaders", &e.request_headers), ("responseHeaders", &e.response_headers)] {
        if !rules.is_empty() {
            let set: Map<String, Value> = rules.set.iter().map(|(n, v)| (n.clone(), json!(v))).collect();
            route[key] = json!({"set": set, "remove": rules.remove});
        }
    }
}

fn pool(p: &PoolConfig) -> Value {
    let servers: Vec<Value> = p
        .servers
        .iter()
        .map(|s| {
            let mut server = json!({"url": s.url, "weight": s.weight, "backup": s.backup});
            if let Some(max) = s.max_connections {
                server["maxConnections"] = json!(max);
            }
            server
        })
        .chain(p.dns.iter().map(dns_entry))
        .collect();
    let mut out = json!({
        "servers": servers,
        "algorithm": p.algorithm.name(),
        "healthCheckInterval": duration(p.health_check.interval),
        "healthCheck": health_check(&p.health_check),
        "retries": p.retries,
        "tls": {"verify": p.tls.verify},
    });
    if let Some(ca) = &p.tls.ca {
        out["tls"]["ca"] = json!(ca.display().to_string());
    }
    if let Some(sticky) = &p.sticky {
        out["sticky"] = json!({"cookie": sticky.cookie});
    }
    if let Some(version) = p.send_proxy {
        out["sendProxy"] = json!(version.name());
    }
    out
}

/// A `dns` or `dnsSrv` entry; `weight` is left out for `dnsSrv` when the records give it.
fn dns_entry(d: &DnsServers) -> Value {
    let mut entry = match d.lookup {
        DnsLookup::Address { .. } => json!({"dns": d.name, "weight": d.weight.unwrap_or(1)}),
        DnsLookup::Srv { .. } => json!({"dnsSrv": d.name}),
    };
    entry["backup"] = json!(d.backup);
    entry["https"] = json!(d.https);
    if let (DnsLookup::Srv { .. }, Some(weight)) = (&d.lookup, d.weight) {
        entry["weight"] = json!(weight);
    }
    if let Some(max) = d.max_connections {
        entry["maxConnections"] = json!(max);
    }
    entry
}

fn health_check(hc: &HealthCheckConfig) -> Value {
    let mut out = json!({
        "path": hc.path, "method": hc.method, "timeout": duration(hc.timeout),
        "rise": hc.rise, "fall": hc.fall, "passiveFails": hc.passive_fails,
    });
    if let Some(host) = &hc.host {
        out["host"] = json!(host);
    }
    if let Some(statuses) = &hc.expect_status {
        out["expectStatus"] = json!(statuses);
    }
    out
}

/// A share of the workers as the configuration writes it: a count, or `"25%"`.
fn worker_share(share: WorkerShare) -> Value {
    match share {
        WorkerShare::Count(n) => json!(n),
        WorkerShare::Percent(p) => json!(format!("{p}%")),
    }
}

/// A duration as the configuration writes it, in the largest unit that keeps it whole.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(json: &str) {
        let first = Config::parse(json, "a.json").unwrap();
        let text = serde_json::to_string(&effective(&first)).unwrap();
        let second = Config::parse(&text, "b.json").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(effective(&second), effective(&first), "{text}");
    }

    #[test]
    fn the_effective_configuration_is_itself_a_configuration_that_means_the_same() {
        round_trip(r#"{"port": ":8080", "servers": ["http://127.0.0.1:5001"]}"#);
        round_trip(
            r#"{"explain": true, "workers": 8, "pidFile": "/run/sluice.pid", "timeouts": {"queue": "250ms", "minRateGrace": "3s"},
                "limits": {"maxBodyBytes": 10, "maxWorkersPerClient": 3, "bufferBodyBytes": 0, "minClientBytesPerSecond": 9},
                "admin": {"token": "t"}, "accessLog": {"format": "json", "path": "/tmp/a.log"},
                "alerts": {"webhook": "http://127.0.0.1:9/x", "memoryPercent": 90},
                "acme": {"email": "ops@example.com", "directory": "https://127.0.0.1:14000/dir", "directoryCa": "/etc/pebble.pem"},
                "listeners": [
                    {"listen": "127.0.0.1:9443", "tls": {"acme": ["a.example", "b.example"]}, "routes": [{"pool": "web"}]},
                    {"listen": "127.0.0.1:8080", "routes": [{"host": "*.example.com", "pathPrefix": "/v1", "pool": "api"}, {"pool": "web"}]},
                    {"listen": "127.0.0.1:8443", "tls": {"certificates": [{"cert": "/etc/a.pem", "key": "/etc/a.key"}], "minVersion": "1.3"},
                     "routes": [{"pool": "web"}]},
                    {"listen": "127.0.0.1:8000", "redirectToHttps": 8443, "routes": [{"pool": "web",
                        "allow": ["10.0.0.0/8", "2001:db8::/32"], "deny": ["10.0.0.66"],
                        "basicAuth": {"realm": "staff", "users": {"alice": "$2y$05$abcdefghijklmnopqrstuu5y5ZQeZb5S6Jrx0Ia3QRCsXH5bEPgSm"}},
                        "rateLimit": {"requestsPerSecond": 0.5, "burst": 3},
                        "requestHeaders": {"set": {"X-Env": "staging"}, "remove": ["Cookie"]},
                        "responseHeaders": {"remove": ["Server"]}}]},
                    {"listen": ":6432", "mode": "tcp", "pool": "db"},
                    {"listen": ":8081", "mode": "redirect", "pool": "web"}],
                "pools": {
                    "api": {"servers": [{"url": "http://127.0.0.1:1", "weight": 3, "maxConnections": 5}, {"url": "http://127.0.0.1:2", "backup": true}],
                            "algorithm": "ip-hash", "sticky": {"cookie": "S"}, "retries": 0,
                            "healthCheck": {"path": "/h", "host": "x.test", "expectStatus": [200, 204], "passiveFails": 0}},
                    "web": {"servers": ["http://127.0.0.1:3", "https://127.0.0.1:4"], "healthCheckInterval": "1500ms",
                            "tls": {"ca": "/etc/roots.pem", "verify": false}},
                    "db": {"servers": ["tcp://127.0.0.1:5432"]}}}"#,
        );
    }

    #[test]
    fn every_default_is_written_out() {
        let config = Config::parse(r#"{"port": ":8080", "servers": ["http://127.0.0.1:5001"]}"#, "c.json").unwrap();
        let e = effective(&config);
        assert_eq!(e["pools"]["default"]["algorithm"], "round-robin");
        assert_eq!(e["pools"]["default"]["healthCheck"]["rise"], 2);
        assert_eq!(e["pools"]["default"]["servers"][0]["weight"], 1);
        assert_eq!(e["timeouts"]["keepAlive"], "15s");
        assert_eq!(e["limits"]["maxConnectionsPerClient"], 1024);
        assert_eq!(e["workers"], crate::config::DEFAULT_WORKERS);
        assert_eq!(e["explain"], false);
        assert_eq!(e["limits"]["maxWorkersPerClient"], "25%");
        assert_eq!(e["timeouts"]["minRateGrace"], "10s");
    }

    #[test]
    fn the_admin_token_is_never_printed() {
        let json = r#"{"port": 1, "admin": {"token": "s3cret"}, "servers": ["http://127.0.0.1:5001"]}"#;
        let config = Config::parse(json, "c.json").unwrap();
        assert_eq!(effective(&config)["admin"]["token"], HIDDEN_TOKEN);
        assert!(!explain(&config).contains("s3cret"));
    }

    #[test]
    fn the_pid_file_is_written_out_only_when_configured() {
        let json = r#"{"port": 1, "pidFile": "run/s.pid", "servers": ["http://127.0.0.1:5001"]}"#;
        assert_eq!(effective(&Config::parse(json, "c.json").unwrap())["pidFile"], "run/s.pid");
        let json = r#"{"port": 1, "servers": ["http://127.0.0.1:5001"]}"#;
        assert!(effective(&Config::parse(json, "c.json").unwrap()).get("pidFile").is_none());
    }

    #[test]
    fn durations_are_written_in_the_largest_whole_unit() {
        for (ms, text) in
            [(250, "250ms"), (2000, "2s"), (1500, "1500ms"), (60_000, "1m"), (3_600_000, "1h"), (90_000, "90s")]
        {
            assert_eq!(duration(Duration::from_millis(ms)), text);
        }
    }
}
