//! The full form of the configuration: a list of `listeners`, each with a mode and routes (or
//! one pool), and an object of named `pools`, each taking the pool keys of the short form.
//!
//! Called by `Config::parse` when the file has `listeners` or `pools`. Pools are numbered in
//! the order of their names; routes refer to them by that number. Every problem names its
//! key path, such as `listeners[1].routes[0].pool`.

use super::edge_rules::{read_route_edge, EDGE_KEYS};
use super::keys::{Key, Kind, Shape, LISTEN};
use super::pool::{check_dns_scheme, read_pool, POOL_KEYS};
use super::tls::{check_redirect, read_listener_tls, read_redirect_to_https, LISTENER_TLS};
use super::top_level::{read_listen, REDIRECT_TO_HTTPS, SHORT_LISTENER_KEYS};
use super::Section;
use super::{
    parse_path_prefix, route_name, ConfigError, HostMatch, ListenerConfig, ListenerMode, PoolConfig, Protocol,
    RouteConfig, COMMON_KEYS,
};
use serde_json::Value;

/// The keys only the short form has at the top level, and where each goes in the full form.
const SHORT_FORM_HOMES: [(&[Key], &str); 3] =
    [(SHORT_LISTENER_KEYS, "a listener"), (POOL_KEYS, "a pool"), (EDGE_KEYS, "a route")];

/// The full form's own top-level keys.
const FULL_FORM_KEYS: &[Key] = &[
    Key::new(
        "listeners",
        Kind::List(&Kind::Object(&LISTENER), 1),
        "Where sluice listens, and where each listener sends what it receives.",
    )
    .required(),
    Key::new(
        "pools",
        Kind::Map(&Kind::Object(&POOL), 1),
        "The pools by name (1 to 64 letters, digits, - or _); routes name them.",
    )
    .required(),
];

/// The whole file in the full form.
pub(super) const FULL_FORM: Shape = Shape::new(&[FULL_FORM_KEYS, COMMON_KEYS]);

/// The keys of one listener.
const LISTENER_KEYS: &[Key] = &[
    Key::new(
        "listen",
        LISTEN,
        "Where to listen: \":8080\" (every interface), \"127.0.0.1:8080\", \"[::1]:8080\" or a port number.",
    )
    .required()
    .example(":8080"),
    Key::new(
        "mode",
        Kind::OneOf(&["http", "tcp", "redirect"]),
        "http proxies requests, tcp relays bytes, redirect answers 307 to a backend.",
    )
    .default("http"),
    Key::new(
        "routes",
        Kind::List(&Kind::Object(&ROUTE), 1),
        "An http listener's routes, tried in order; the first match wins.",
    ),
    Key::new("pool", Kind::Text, "The one pool this listener sends to, instead of routes.").example("web"),
    Key::new("tls", Kind::Object(&LISTENER_TLS), "Serve TLS with this certificate, or these chosen by SNI."),
    Key::new("acceptProxy", Kind::Bool, "Every connection opens with a PROXY v1 or v2 header naming the client.")
        .default("false"),
    Key::new(
        "redirectToHttps",
        REDIRECT_TO_HTTPS,
        "Answer every request 308 to https:// (true for port 443, or the port); plain http listeners only.",
    ),
];
const LISTENER: Shape = Shape::new(&[LISTENER_KEYS]).either(&[&["routes"], &["pool"]]);

/// The keys of one route.
const ROUTE_KEYS: &[Key] = &[
    Key::new("host", Kind::Text, "The Host to match, without port, in any case; *.example.com matches one more label.")
        .example("api.example.com"),
    Key::new(
        "pathPrefix",
        Kind::Pattern("^/"),
        "The path to match, by whole segments: /api matches /api and /api/x, not /apix.",
    )
    .example("/api"),
    Key::new("pool", Kind::Text, "The pool that serves what the route matches.").required().example("web"),
];
const ROUTE: Shape = Shape::new(&[ROUTE_KEYS, EDGE_KEYS]);

/// A pool under `pools.NAME`.
const POOL: Shape = Shape::new(&[POOL_KEYS]);

/// Reads the full form.
pub(super) fn read(top: &mut Section) -> Result<(Vec<ListenerConfig>, Vec<PoolConfig>), ConfigError> {
    for (keys, home) in SHORT_FORM_HOMES {
        if let Some(key) = keys.iter().map(|k| k.name).find(|name| top.has(name)) {
            let home = if key == "port" { "a listener's \"listen\"" } else { home };
            let problem = format!("belongs to the short form; with \"listeners\" and \"pools\" it goes in {home}");
            return Err(top.error(key, &problem));
        }
    }
    top.allow(&FULL_FORM)?;
    let mut pools = read_pools(top)?;
    let listeners = read_listeners(top, &mut pools)?;
    Ok((listeners, pools))
}

fn read_pools(top: &mut Section) -> Result<Vec<PoolConfig>, ConfigError> {
    let example = "such as {\"web\": {\"servers\": [\"http://127.0.0.1:5001\"]}}";
    let map = match top.get("pools") {
        None => return Err(top.error("pools", &format!("missing: name the pools the listeners use, {example}"))),
        Some(Value::Object(map)) if !map.is_empty() => map,
        Some(Value::Object(_)) => {
            return Err(top.error("pools", &format!("is empty: name at least one pool, {example}")))
        }
        Some(_) => return Err(top.error("pools", &format!("must be an object of named pools, {example}"))),
    };
    let mut pools = Vec::with_capacity(map.len());
    for (name, value) in map {
        let mut section = Section::new(top.file, format!("pools.{name}"), value)?;
        if !is_pool_name(name) {
            return Err(section.error_here("a pool name is 1 to 64 letters, digits, `-` or `_`"));
        }
        section.allow(&POOL)?;
        pools.push(read_pool(&mut section, name, &[])?);
        section.finish()?;
    }
    Ok(pools)
}

fn is_pool_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn read_listeners(top: &mut Section, pools: &mut [PoolConfig]) -> Result<Vec<ListenerConfig>, ConfigError> {
    let example = "such as [{\"listen\": \":8080\", \"routes\": [{\"pool\": \"web\"}]}]";
    let list = match top.get("listeners") {
        None => return Err(top.error("listeners", &format!("missing: say where to listen, {example}"))),
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => return Err(top.error("listeners", &format!("is empty: give at least one, {example}"))),
        Some(_) => return Err(top.error("listeners", &format!("must be a list of listeners, {example}"))),
    };
    let mut listeners: Vec<ListenerConfig> = Vec::with_capacity(list.len());
    let mut table = PoolTable { bound: vec![false; pools.len()], pools };
    for (i, value) in list.iter().enumerate() {
        let mut section = Section::new(top.file, format!("listeners[{i}]"), value)?;
        let listener = read_listener(&mut section, &mut table, i)?;
        let same = listeners.iter().position(|l| l.addr == listener.addr && listener.addr.port() != 0);
        if let Some(j) = same {
            return Err(section.error("listen", &format!("{} is already the address of listeners[{j}]", listener.addr)));
        }
        section.finish()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

fn read_listener(s: &mut Section, pools: &mut PoolTable, index: usize) -> Result<ListenerConfig, ConfigError> {
    s.allow(&LISTENER)?;
    let addr = read_listen(s, "listen")?;
    let mode = match s.str("mode")? {
        None | Some("http") => ListenerMode::Http,
        Some("tcp") => ListenerMode::Tcp,
        Some("redirect") => ListenerMode::Redirect,
        Some(other) => {
            let problem = format!("unknown mode {other:?} (known: \"http\", \"tcp\", \"redirect\")");
            return Err(s.error("mode", &problem));
        }
    };
    let routes = match (mode, s.has("routes"), s.has("pool")) {
        (_, true, true) => return Err(s.error("pool", "give either \"routes\" or \"pool\", not both")),
        (ListenerMode::Http, true, false) => read_routes(s, pools, index)?,
        (_, false, true) => {
            vec![RouteConfig { host: None, path_prefix: None, pool: pool_index(s, pools, mode)?, edge: None }]
        }
        (ListenerMode::Http, false, false) => {
            return Err(s.error("routes", "missing: list the routes, such as [{\"pool\": \"web\"}]"))
        }
        (_, true, false) => {
            let problem = format!("a {} listener has no routes; it takes one \"pool\"", mode.as_str());
            return Err(s.error("routes", &problem));
        }
        (_, false, false) => return Err(s.error("pool", "missing: name the pool this listener sends to")),
    };
    let tls = read_listener_tls(s, &[])?;
    let redirect_to_https = read_redirect_to_https(s)?;
    check_redirect(s, tls.as_ref(), redirect_to_https, mode)?;
    let accept_proxy = s.bool("acceptProxy")?.unwrap_or(false);
    Ok(ListenerConfig { addr, mode, routes, tls, redirect_to_https, accept_proxy })
}

fn read_routes(listener: &mut Section, pools: &mut PoolTable, index: usize) -> Result<Vec<RouteConfig>, ConfigError> {
    let list = match listener.get("routes") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        _ => return Err(listener.error("routes", "must be a list of routes, such as [{\"pool\": \"web\"}]")),
    };
    let mut routes: Vec<RouteConfig> = Vec::with_capacity(list.len());
    for (j, value) in list.iter().enumerate() {
        let mut s = Section::new(listener.file, listener.child_path(&format!("routes[{j}]")), value)?;
        s.allow(&ROUTE)?;
        if let Some(k) = routes.iter().position(|r| r.host.is_none() && r.path_prefix.is_none()) {
            return Err(s.error_here(&format!("never reached: routes[{k}] before it matches every request")));
        }
        let host = match s.str("host")? {
            Some(pattern) => Some(HostMatch::parse(pattern).map_err(|p| s.error("host", &p))?),
            None => None,
        };
        let path_prefix = match s.str("pathPrefix")? {
            Some(prefix) => Some(parse_path_prefix(prefix).map_err(|p| s.error("pathPrefix", &p))?),
            None => None,
        };
        let pool = pool_index(&mut s, pools, ListenerMode::Http)?;
        let edge = read_route_edge(&mut s, route_name(index, j))?;
        s.finish()?;
        routes.push(RouteConfig { host, path_prefix, pool, edge });
    }
    Ok(routes)
}

/// The pools as listeners name them. A pool of DNS entries alone takes its scheme from the
/// first listener that sends to it (`bound`); every other listener must agree.
struct PoolTable<'a> {
    pools: &'a mut [PoolConfig],
    bound: Vec<bool>,
}

/// Reads `pool` from `s` and finds it, checking that its backends suit a listener in `mode`.
fn pool_index(s: &mut Section, table: &mut PoolTable, mode: ListenerMode) -> Result<usize, ConfigError> {
    let name = s.str("pool")?.ok_or_else(|| s.error("pool", "missing: name the pool to send to"))?;
    let Some(index) = table.pools.iter().position(|p| p.name == name) else {
        let known: Vec<String> = table.pools.iter().map(|p| format!("{:?}", p.name)).collect();
        return Err(s.error("pool", &format!("no pool named {name:?} (pools: {})", known.join(", "))));
    };
    let wanted = if mode == ListenerMode::Tcp { Protocol::Tcp } else { Protocol::Http };
    let pool = &mut table.pools[index];
    if pool.servers.is_empty() && !table.bound[index] {
        table.bound[index] = true;
        pool.protocol = wanted;
        check_dns_scheme(pool, s.file)?;
    }
    let protocol = pool.protocol;
    if protocol != wanted {
        let article = if mode == ListenerMode::Http { "an" } else { "a" };
        let problem = format!(
            "pool {name:?} has {}:// servers, but {article} {} listener needs {}:// servers",
            protocol.scheme(),
            mode.as_str(),
            wanted.scheme()
        );
        return Err(s.error("pool", &problem));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use crate::config::HostMatch;
    use crate::config::{Config, ListenerMode, Protocol};
    use std::time::Duration;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, "config.json").map_err(|e| e.to_string())
    }

    const POOLS: &str = r#""pools": {
        "web": {"servers": ["http://127.0.0.1:5001", "http://127.0.0.1:5002"], "retries": 1},
        "api": {"servers": ["http://127.0.0.1:5003"], "healthCheck": {"path": "/health"}},
        "db": {"servers": ["tcp://127.0.0.1:5432"], "healthCheckInterval": "5s"}
    }"#;

    #[test]
    fn full_form_reads_listeners_routes_and_pools() {
        let c = parse(&format!(
            r#"{{"listeners": [
                {{"listen": ":8080", "mode": "http", "routes": [
                    {{"host": "API.example.com", "pathPrefix": "/v1/", "pool": "api"}},
                    {{"host": "*.example.com", "pool": "web"}},
                    {{"pool": "web"}}]}},
                {{"listen": "127.0.0.1:6432", "mode": "tcp", "pool": "db"}},
                {{"listen": 8081, "mode": "redirect", "pool": "web"}},
                {{"listen": ":8082", "pool": "api"}}
            ], {POOLS}, "workers": 4, "timeouts": {{"tunnel": "10m"}}}}"#
        ))
        .unwrap();
        // Pools are numbered in the order of their names: api, db, web.
        let names: Vec<&str> = c.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["api", "db", "web"]);
        assert_eq!(c.pools[1].protocol, Protocol::Tcp);
        assert_eq!(c.pools[1].health_check.interval, Duration::from_secs(5));
        assert_eq!(c.pools[0].health_check.path, "/health");
        assert_eq!(c.pools[2].retries, 1);
        let modes: Vec<ListenerMode> = c.listeners.iter().map(|l| l.mode).collect();
        assert_eq!(modes, [ListenerMode::Http, ListenerMode::Tcp, ListenerMode::Redirect, ListenerMode::Http]);
        let routes = &c.listeners[0].routes;
        assert_eq!(routes[0].host, Some(HostMatch::Exact("api.example.com".into())));
        assert_eq!(routes[0].path_prefix.as_deref(), Some("/v1"));
        assert_eq!(routes[0].pool, 0);
        assert_eq!(routes[1].host, Some(HostMatch::OneLevelUnder(".example.com".into())));
        assert_eq!((routes[2].host.is_none(), routes[2].path_prefix.is_none(), routes[2].pool), (true, true, 2));
        assert_eq!(c.listeners[1].routes[0].pool, 1);
        assert_eq!(c.listeners[2].addr.port(), 8081);
        assert_eq!(c.listeners[3].routes[0].pool, 0);
        assert_eq!((c.workers, c.timeouts.tunnel), (4, Duration::from_secs(600)));
    }

    #[test]
    fn tunnel_timeout_defaults_to_an_hour() {
        let c = parse(r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"]}"#).unwrap();
        assert_eq!(c.timeouts.tunnel, Duration::from_secs(3600));
    }

    #[test]
    fn full_form_errors_name_the_key_path() {
        let listeners = |l: &str| format!(r#"{{"listeners": [{l}], {POOLS}}}"#);
        let cases = [
            (
                listeners(r#"{"listen": ":1", "routes": [{"pool": "web"}]}, {"listen": ":2", "routes": [{"pool": "ap"}]}"#),
                r#"config.json: listeners[1].routes[0].pool: no pool named "ap" (pools: "api", "db", "web")"#,
            ),
            (listeners(r#"{"listen": ":1", "mode": "tcp", "pool": "dbb"}"#), r#"config.json: listeners[0].pool: no pool named "dbb""#),
            (
                listeners(r#"{"listen": ":1", "mode": "tcp", "pool": "web"}"#),
                r#"config.json: listeners[0].pool: pool "web" has http:// servers, but a tcp listener needs tcp:// servers"#,
            ),
            (
                listeners(r#"{"listen": ":1", "routes": [{"pool": "db"}]}"#),
                r#"config.json: listeners[0].routes[0].pool: pool "db" has tcp:// servers, but an http listener needs http:// servers"#,
            ),
            (
                listeners(r#"{"listen": ":1", "mode": "redirect", "pool": "db"}"#),
                r#"config.json: listeners[0].pool: pool "db" has tcp:// servers, but a redirect listener"#,
            ),
            (listeners(r#"{"listen": ":1", "mode": "udp", "pool": "db"}"#), r#"config.json: listeners[0].mode: unknown mode "udp""#),
            (listeners(r#"{"listen": ":1"}"#), "config.json: listeners[0].routes: missing"),
            (listeners(r#"{"listen": ":1", "mode": "tcp"}"#), "config.json: listeners[0].pool: missing"),
            (listeners(r#"{"mode": "tcp", "pool": "db"}"#), "config.json: listeners[0].listen: missing"),
            (
                listeners(r#"{"listen": ":1", "mode": "tcp", "routes": [{"pool": "db"}]}"#),
                "config.json: listeners[0].routes: a tcp listener has no routes; it takes one \"pool\"",
            ),
            (
                listeners(r#"{"listen": ":1", "routes": [{"pool": "web"}], "pool": "web"}"#),
                "config.json: listeners[0].pool: give either \"routes\" or \"pool\", not both",
            ),
            (listeners(r#"{"listen": ":1", "routes": []}"#), "config.json: listeners[0].routes: must be a list of routes"),
            (
                listeners(r#"{"listen": ":1", "routes": [{"pool": "web", "hots": "a"}]}"#),
                "config.json: listeners[0].routes[0].hots: unknown key (did you mean `host`?)",
            ),
            (
                listeners(r#"{"listen": ":1", "routes": [{"host": "a.*", "pool": "web"}]}"#),
                "config.json: listeners[0].routes[0].host: \"a.*\": `*` may only be the whole first label",
            ),
            (
                listeners(r#"{"listen": ":1", "routes": [{"host": "a:80", "pool": "web"}]}"#),
                "config.json: listeners[0].routes[0].host: \"a:80\": give the host without a port",
            ),
            (
                listeners(r#"{"listen": ":1", "routes": [{"pathPrefix": "api", "pool": "web"}]}"#),
                "config.json: listeners[0].routes[0].pathPrefix: \"api\" must start with `/`",
            ),
            (
                listeners(r#"{"listen": ":1", "routes": [{"pool": "web"}, {"host": "a", "pool": "api"}]}"#),
                "config.json: listeners[0].routes[1]: never reached: routes[0] before it matches every request",
            ),
            (
                listeners(r#"{"listen": ":1", "routes": [{"pool": "web"}]}, {"listen": ":1", "routes": [{"pool": "web"}]}"#),
                "config.json: listeners[1].listen: 0.0.0.0:1 is already the address of listeners[0]",
            ),
            (
                listeners(r#"{"listen": ":1", "mode": "tcp", "pool": "db", "timeout": "1s"}"#),
                "config.json: listeners[0].timeout: unknown key",
            ),
            (r#"{"listeners": [], "pools": {}}"#.to_string(), "config.json: pools: is empty"),
            (r#"{"listeners": [], "pools": {"a": {"servers": ["tcp://127.0.0.1:1"]}}}"#.to_string(), "config.json: listeners: is empty"),
            (r#"{"pools": {"a": {"servers": ["tcp://127.0.0.1:1"]}}}"#.to_string(), "config.json: listeners: missing"),
            (r#"{"listeners": [{"listen": ":1", "pool": "a"}]}"#.to_string(), "config.json: pools: missing"),
            (r#"{"listeners": {}, "pools": []}"#.to_string(), "config.json: pools: must be an object of named pools"),
            (
                r#"{"listeners": [{"listen": ":1", "pool": "a b"}], "pools": {"a b": {"servers": ["http://127.0.0.1:1"]}}}"#.to_string(),
                "config.json: pools.a b: a pool name is 1 to 64 letters, digits",
            ),
            (
                r#"{"listeners": [{"listen": ":1", "pool": "a"}], "pools": {"a": {"servers": ["http://127.0.0.1:1"], "listen": ":2"}}}"#.to_string(),
                "config.json: pools.a.listen: unknown key",
            ),
            (
                r#"{"listeners": [{"listen": ":1", "pool": "a"}], "pools": {"a": {"servers": ["http://127.0.0.1:1", "tcp://127.0.0.1:2"]}}}"#.to_string(),
                "config.json: pools.a.servers[1]: \"tcp://127.0.0.1:2\" is tcp:// but the first URL in servers is http://",
            ),
            (
                r#"{"listeners": [{"listen": ":1", "mode": "tcp", "pool": "a"}], "pools": {"a": {"servers": ["tcp://127.0.0.1"]}}}"#.to_string(),
                "config.json: pools.a.servers[0]: \"tcp://127.0.0.1\": a tcp:// backend needs a port",
            ),
            (
                format!(r#"{{"port": ":8080", "listeners": [{{"listen": ":1", "pool": "web"}}], {POOLS}}}"#),
                "config.json: port: belongs to the short form; with \"listeners\" and \"pools\" it goes in a listener's \"listen\"",
            ),
            (
                format!(r#"{{"servers": ["http://127.0.0.1:1"], "listeners": [{{"listen": ":1", "pool": "web"}}], {POOLS}}}"#),
                "config.json: servers: belongs to the short form; with \"listeners\" and \"pools\" it goes in a pool",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "pools": {}}"#.to_string(),
                "config.json: port: belongs to the short form",
            ),
            (
                r#"{"port": ":8080", "servers": ["tcp://127.0.0.1:1"]}"#.to_string(),
                "config.json: servers: tcp:// backends need a listener with \"mode\": \"tcp\"",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(&text).expect_err(&text);
            assert!(err.starts_with(expected), "for {text}\n got: {err}\nwant: {expected}...");
        }
    }

    #[test]
    fn several_listeners_may_all_ask_for_port_zero() {
        let c = parse(&format!(
            r#"{{"listeners": [{{"listen": "127.0.0.1:0", "pool": "web"}}, {{"listen": "127.0.0.1:0", "mode": "tcp", "pool": "db"}}], {POOLS}}}"#
        ))
        .unwrap();
        assert_eq!(c.listeners.len(), 2);
    }
}
