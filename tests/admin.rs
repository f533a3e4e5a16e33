//! The admin API over real sockets: stats, metrics, the status page, runtime changes and
//! their authorization, reload, and the access log formats.

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const TOKEN: &str = "t0ken-for-tests";
const WAIT: Duration = Duration::from_secs(5);
const MIB: f64 = 1024.0 * 1024.0;

/// sluice with the admin API on 127.0.0.1:0 and `admin` as the admin object's extra keys.
fn start(backends: &[&str], admin: &str) -> (Sluice, SocketAddr) {
    let extra = format!(r#""healthCheckInterval": "200ms", "admin": {{"listen": "127.0.0.1:0" {admin}}},"#);
    let sluice = Sluice::start(backends, &extra);
    let addr = sluice.server().admin_addr().expect("admin API configured");
    (sluice, addr)
}

fn with_token(backends: &[&str]) -> (Sluice, SocketAddr) {
    start(backends, &format!(r#", "token": "{TOKEN}""#))
}

fn get(admin: SocketAddr, target: &str) -> Response {
    admin_call(admin, "GET", target, None, "")
}

fn change(admin: SocketAddr, method: &str, target: &str, body: &str) -> Response {
    admin_call(admin, method, target, Some(TOKEN), body)
}

/// The server objects of /stats by URL.
fn servers(admin: SocketAddr) -> HashMap<String, Value> {
    let stats = admin_stats(admin);
    let list = stats["servers"].as_array().expect("servers is a list").clone();
    list.into_iter().map(|s| (s["url"].as_str().expect("url is a string").to_string(), s)).collect()
}

fn drain_path(url: &str) -> String {
    format!("/servers/drain?url={url}")
}

/// A backend answering `name`, except that `/slow` waits until `release` is set.
fn holding_backend(name: &'static str, release: &Arc<AtomicBool>) -> TestBackend {
    let release = Arc::clone(release);
    TestBackend::start(move |seen| {
        if seen.target == "/slow" {
            wait_until(Duration::from_secs(10), || release.load(Ordering::SeqCst));
        }
        Reply::ok(name)
    })
}

/// Sends `GET /slow` through sluice on another thread and waits until a backend holds it;
/// returns the URL of that backend and the thread, which yields the response.
fn hold_one_request(
    sluice: &Sluice,
    admin: SocketAddr,
    backends: &[&TestBackend],
) -> (String, thread::JoinHandle<Response>) {
    let addr = sluice.addr;
    let in_flight = thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.send(b"GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        c.response().expect("the held request gets a response")
    });
    let held = || backends.iter().find(|b| b.requests().iter().any(|s| s.target == "/slow"));
    assert!(wait_until(WAIT, || held().is_some()), "no backend received GET /slow");
    let url = held().unwrap().url();
    assert_eq!(servers(admin)[&url]["activeConnections"], 1, "{:#}", admin_stats(admin));
    (url, in_flight)
}

#[test]
fn stats_lists_every_server_with_fields_of_the_right_types() {
    let (a, b) = (TestBackend::named("a"), TestBackend::named("b"));
    let (sluice, admin) = with_token(&[&a.url(), &b.url()]);
    for _ in 0..4 {
        assert_eq!(sluice.get("/").status, 200);
    }
    // A worker counts an exchange finished just after the client has its response.
    let settled = |s: &Value| s["servers"].as_array().unwrap().iter().all(|s| s["responses"]["2xx"] == 2);
    assert!(wait_until(WAIT, || settled(&admin_stats(admin))), "{:#}", admin_stats(admin));
    let stats = admin_stats(admin);
    assert!(stats["uptimeSeconds"].is_f64(), "{stats:#}");
    assert!(stats["workers"]["total"].is_u64() && stats["workers"]["idle"].is_u64(), "{stats:#}");
    assert!(stats["host"]["process"]["residentBytes"].is_u64(), "{stats:#}");
    assert!(stats["host"]["load"].is_array() && stats["host"]["memory"]["totalBytes"].is_u64(), "{stats:#}");
    assert!(stats["host"]["disk"]["usedRatio"].is_f64(), "{stats:#}");
    assert_eq!(stats["pools"][0]["name"], "default");
    let servers = stats["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{stats:#}");
    for (server, backend) in servers.iter().zip([&a, &b]) {
        assert_eq!(server["url"], backend.url().as_str());
        assert_eq!(server["pool"], "default");
        assert_eq!(
            (server["healthy"].as_bool(), server["draining"].as_bool()),
            (Some(true), Some(false)),
            "{server:#}"
        );
        assert_eq!(server["weight"].as_u64(), Some(1), "{server:#}");
        assert_eq!(server["activeConnections"].as_u64(), Some(0), "{server:#}");
        assert_eq!(server["requests"].as_u64(), Some(2), "{server:#}");
        assert_eq!(server["failures"].as_u64(), Some(0), "{server:#}");
        assert_eq!(server["responses"]["2xx"].as_u64(), Some(2), "{server:#}");
        assert!(server["latencyMs"]["mean"].is_f64(), "{server:#}");
    }
}

#[test]
fn recent_rates_appear_once_two_samples_exist_and_count_the_requests_since() {
    let a = TestBackend::named("a");
    let (sluice, admin) = with_token(&[&a.url()]);
    let recent = || admin_stats(admin)["servers"][0]["recent"].clone();
    // Samples are taken once a second; `recent` is null until two of them exist.
    assert!(wait_until(WAIT, || recent().is_object()), "recent stayed {}", recent());
    // From now on the oldest sample is older than any request sent.
    for _ in 0..3 {
        assert_eq!(sluice.get("/").status, 200);
    }
    let counted = |r: &Value| r["requestsPerSecond"].as_f64().is_some_and(|rate| rate > 0.0);
    assert!(wait_until(WAIT, || counted(&recent())), "{:#}", recent());
    let recent = recent();
    assert_eq!(recent["errorRatio"].as_f64(), Some(0.0), "{recent:#}");
    assert!(recent["latencyMs"].is_object(), "{recent:#}");
}

/// One sample line of the Prometheus text format: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let (series, value) = line.rsplit_once(' ').ok_or("no value")?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}').ok_or("labels not closed")?;
            let mut labels = Vec::new();
            for pair in body.split("\",").filter(|p| !p.is_empty()) {
                let (label, v) = pair.split_once("=\"").ok_or(format!("bad label {pair:?}"))?;
                labels.push((label.to_string(), v.trim_end_matches('"').to_string()));
            }
            (name, labels)
        }
    };
    let valid_name = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if !valid_name {
        return Err(format!("bad metric name {name:?}"));
    }
    Ok(Sample { name: name.to_string(), labels, value })
}

/// Parses the whole text, checking that every sample's metric was announced by HELP and TYPE.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut helped = Vec::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.insert(name.to_string(), kind.to_string());
        } else {
            let sample = parse_sample(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| sample.name.strip_suffix(s).filter(|f| typed.get(*f).is_some_and(|k| k == "histogram")))
                .unwrap_or(&sample.name)
                .to_string();
            assert!(typed.contains_key(&family) && helped.contains(&family), "no HELP/TYPE before {line:?}");
            samples.push(sample);
        }
    }
    samples
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(l, v)| s.labels.iter().any(|(sl, sv)| sl == l && sv == v)))
        .collect();
    assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
    found[0].value
}

#[test]
fn metrics_text_parses_and_its_counts_move_after_requests() {
    let backend = TestBackend::named("a");
    let (sluice, admin) = with_token(&[&backend.url()]);
    let url = backend.url();
    let server = [("pool", "default"), ("server", url.as_str())];
    let before = parse_metrics(&get(admin, "/metrics").text());
    let ok = [server[0], server[1], ("class", "2xx")];
    assert_eq!(value(&before, "sluice_requests_total", &ok), 0.0);
    for _ in 0..3 {
        assert_eq!(sluice.get("/").status, 200);
    }
    let refused =
        exchange_raw(sluice.addr, b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    // A worker counts an exchange finished just after the client has its response.
    let counted = || {
        let m = parse_metrics(&get(admin, "/metrics").text());
        value(&m, "sluice_requests_total", &ok) == 3.0
            && value(&m, "sluice_own_responses_total", &[("class", "4xx")]) == 1.0
    };
    assert!(wait_until(WAIT, counted), "{}", get(admin, "/metrics").text());
    let response = get(admin, "/metrics");
    assert_eq!(response.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let after = parse_metrics(&response.text());
    assert_eq!(value(&after, "sluice_request_duration_seconds_count", &server), 3.0);
    assert_eq!(value(&after, "sluice_request_duration_seconds_bucket", &[server[0], server[1], ("le", "+Inf")]), 3.0);
    assert!(value(&after, "sluice_received_bytes_total", &server) > 0.0);
    assert_eq!(value(&after, "sluice_sent_bytes_total", &server), 3.0, "three bodies of one byte");
    assert_eq!(value(&after, "sluice_own_responses_total", &[("class", "4xx")]), 1.0);
    assert_eq!(value(&after, "sluice_backend_up", &server), 1.0);
    assert_eq!(value(&after, "sluice_backend_active_exchanges", &server), 0.0);
    assert!(value(&after, "sluice_workers", &[("state", "idle")]) >= 1.0);
    for name in ["sluice_retries_total", "sluice_rejected_connections_total", "sluice_queued_connections"] {
        assert_eq!(value(&after, name, &[]), 0.0, "{name}");
    }
    // This process holds the listeners and sockets of the test, and has threads running.
    assert!(value(&after, "process_resident_memory_bytes", &[]) > MIB, "{}", response.text());
    assert!(value(&after, "process_open_fds", &[]) >= 3.0, "{}", response.text());
    let cpu = || value(&parse_metrics(&get(admin, "/metrics").text()), "process_cpu_seconds_total", &[]);
    assert!(wait_until(WAIT, || cpu() > 0.0), "process_cpu_seconds_total stays {}", cpu());
    assert!(wait_until(WAIT, || {
        let m = parse_metrics(&get(admin, "/metrics").text());
        value(&m, "sluice_health_checks_total", &[server[0], server[1], ("result", "pass")]) >= 1.0
    }));
}

#[test]
fn status_page_names_every_server_and_needs_nothing_from_elsewhere() {
    let (a, b, c) = (TestBackend::named("a"), TestBackend::named("b"), TestBackend::named("c"));
    let (_sluice, admin) = with_token(&[&a.url(), &b.url(), &c.url()]);
    let page = get(admin, "/");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let html = page.text();
    for backend in [&a, &b, &c] {
        assert!(html.contains(&backend.url()), "{} missing from the page:\n{html}", backend.url());
    }
    assert!(html.contains("<meta http-equiv=\"refresh\""), "the page does not refresh itself");
    for outside in ["src=", "href=\"http", "@import", "url("] {
        assert!(!html.contains(outside), "the page loads something from elsewhere ({outside}):\n{html}");
    }
}

/// The status page of `admin` as headless chromium renders it, or `None` (with a note)
/// when chromium is not installed.
fn rendered_status_page(admin: SocketAddr, profile_name: &str) -> Option<String> {
    if Command::new("chromium").arg("--version").output().is_err() {
        skip("chromium is not installed (apt-get install -y chromium)");
        return None;
    }
    let profile = std::env::temp_dir().join(format!("sluice-chromium-{}-{profile_name}", std::process::id()));
    let output = Command::new("timeout")
        .args(["60", "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        .args(["--disable-component-update", "--disable-sync", "--no-first-run", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://{admin}/"))
        .output()
        .expect("run chromium");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        dom.contains("pool default"),
        "chromium rendered no pool: {dom}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(dom)
}

#[test]
fn status_page_rendered_in_headless_chromium_shows_every_server() {
    let (a, b) = (TestBackend::named("a"), TestBackend::named("b"));
    let (_sluice, admin) = with_token(&[&a.url(), &b.url()]);
    let added = TestBackend::named("added");
    let body = format!(r#"{{"url": "{}"}}"#, added.url());
    assert_eq!(change(admin, "POST", "/servers", &body).status, 201);
    let Some(dom) = rendered_status_page(admin, "servers") else { return };
    for backend in [&a, &b, &added] {
        assert!(dom.contains(&backend.url()), "{} missing from the rendered page:\n{dom}", backend.url());
    }
}

#[test]
fn status_page_shows_the_algorithm_at_work_current_weights_in_flight_and_a_rate_chart() {
    let backends: Vec<TestBackend> = ["a", "b", "c"].iter().map(|n| TestBackend::named(n)).collect();
    let servers: Vec<String> =
        backends.iter().zip([5, 1, 1]).map(|(b, w)| format!(r#"{{"url": "{}", "weight": {w}}}"#, b.url())).collect();
    let sluice = Sluice::from_json(&format!(
        r#"{{"listen": "127.0.0.1:0", "algorithm": "weighted-round-robin", "healthCheckInterval": "1m",
            "admin": {{"listen": "127.0.0.1:0"}}, "servers": [{}]}}"#,
        servers.join(", ")
    ));
    let admin = sluice.server().admin_addr().unwrap();
    //  weights 5 1 1: after 7 picks every current weight is back at 0; the 8th goes to a,
    //  leaving a at 5 - 7 = -2, b and c at 1.
    for _ in 0..8 {
        assert_eq!(sluice.get("/").status, 200);
    }
    let charted = || get(admin, "/").text().contains("height:100%");
    assert!(wait_until(Duration::from_secs(10), charted), "no chart bar after requests: {}", get(admin, "/").text());
    let html = get(admin, "/").text();
    for want in
        ["Algorithm keeps", "current weight -2", "current weight 1", "class=\"chart\"", "Smooth weighted round robin"]
    {
        assert!(html.contains(want), "{want:?} missing from the page:\n{html}");
    }
    let Some(dom) = rendered_status_page(admin, "algorithm") else { return };
    for want in ["current weight -2", "class=\"chart\"", "height:100%", "title=\"in flight\""] {
        assert!(dom.contains(want), "{want:?} missing from the rendered page:\n{dom}");
    }
}

#[test]
fn changes_are_refused_403_without_a_configured_token() {
    let backend = TestBackend::named("a");
    let (_sluice, admin) = start(&[&backend.url()], "");
    let drain = drain_path(&backend.url());
    let attempts = [("POST", "/servers"), ("DELETE", "/servers?url=x"), ("POST", drain.as_str()), ("POST", "/reload")];
    for (method, target) in attempts {
        let r = admin_call(admin, method, target, Some("anything"), "{}");
        assert_eq!(r.status, 403, "{method} {target}: {}", r.text());
    }
    assert_eq!(get(admin, "/stats").status, 200, "reading needs no token");
}

#[test]
fn changes_need_the_right_bearer_token() {
    let backend = TestBackend::named("a");
    let (_sluice, admin) = with_token(&[&backend.url()]);
    let target = drain_path(&backend.url());
    let missing = admin_call(admin, "POST", &target, None, "");
    assert_eq!(missing.status, 401, "{}", missing.text());
    assert_eq!(missing.header("www-authenticate"), Some("Bearer realm=\"sluice\""));
    for wrong in ["t0ken-for-test", "t0ken-for-testsX", "T0KEN-FOR-TESTS", ""] {
        assert_eq!(admin_call(admin, "POST", &target, Some(wrong), "").status, 401, "token {wrong:?}");
    }
    assert_eq!(servers(admin)[&backend.url()]["draining"], false, "a refused change changed something");
    assert_eq!(change(admin, "POST", &target, "").status, 200);
    assert_eq!(servers(admin)[&backend.url()]["draining"], true);
}

#[test]
fn an_added_backend_answers_201_and_takes_traffic_after_its_probe_passes() {
    let (a, b) = (TestBackend::named("a"), TestBackend::named("b"));
    let (sluice, admin) = with_token(&[&a.url()]);
    let r = change(admin, "POST", "/servers", &format!(r#"{{"url": "{}", "weight": 2}}"#, b.url()));
    assert_eq!(r.status, 201, "{}", r.text());
    let body = json(&r);
    assert_eq!((body["healthy"].as_bool(), body["pool"].as_str()), (Some(true), Some("default")), "{body:#}");
    assert!(b.probe_count() >= 1, "the backend was not probed before joining");
    let listed = &servers(admin)[&b.url()];
    assert_eq!((listed["weight"].as_u64(), listed["addedAtRuntime"].as_bool()), (Some(2), Some(true)), "{listed:#}");
    let bodies: Vec<String> = (0..6).map(|_| sluice.get("/").text()).collect();
    assert!(bodies.contains(&"b".to_string()) && bodies.contains(&"a".to_string()), "{bodies:?}");
}

#[test]
fn an_added_backend_that_fails_its_probe_joins_only_once_it_passes() {
    let a = TestBackend::named("a");
    let (sluice, admin) = with_token(&[&a.url()]);
    let later = closed_port_url();
    let r = change(admin, "POST", "/servers", &format!(r#"{{"url": "{later}"}}"#));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(json(&r)["healthy"], false);
    assert_eq!(servers(admin)[&later]["healthy"], false);
    for _ in 0..4 {
        assert_eq!(sluice.get("/").text(), "a", "a backend that failed its probe got traffic");
    }
}

#[test]
fn adding_a_present_backend_is_409_and_bad_input_is_400() {
    let a = TestBackend::named("a");
    let (_sluice, admin) = with_token(&[&a.url()]);
    let present = change(admin, "POST", "/servers", &format!(r#"{{"url": "{}"}}"#, a.url()));
    assert_eq!(present.status, 409, "{}", present.text());
    let cases = [
        ("{\"url\": ", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        (r#"{"weight": 1}"#, "url: missing"),
        (r#"{"url": "ftp://127.0.0.1:1"}"#, "not supported"),
        (r#"{"url": "http://127.0.0.1:1/path"}"#, "give only scheme, host and port"),
        (r#"{"url": "http://127.0.0.1:1", "weight": -1}"#, "weight: must be a whole number"),
        (r#"{"url": "http://127.0.0.1:1", "wieght": 1}"#, "unknown key"),
        (r#"{"url": "http://127.0.0.1:1", "pool": "nope"}"#, "no pool named \"nope\""),
    ];
    for (body, expected) in cases {
        let r = change(admin, "POST", "/servers", body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let error = json(&r)["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(expected), "{body}: error {error:?} does not say {expected:?}");
    }
    assert_eq!(servers(admin).len(), 1);
}

#[test]
fn drain_stops_new_requests_while_the_one_in_flight_finishes() {
    let release = Arc::new(AtomicBool::new(false));
    let (a, b) = (holding_backend("a", &release), holding_backend("b", &release));
    let (sluice, admin) = with_token(&[&a.url(), &b.url()]);
    let (held, in_flight) = hold_one_request(&sluice, admin, &[&a, &b]);
    assert!(admin_stats(admin)["workers"]["busy"].as_u64() >= Some(1));
    let r = change(admin, "POST", &drain_path(&held), "");
    assert_eq!(r.status, 200, "{}", r.text());
    let listed = &servers(admin)[&held];
    assert_eq!((listed["draining"].as_bool(), listed["activeConnections"].as_u64()), (Some(true), Some(1)));
    let other = if held == a.url() { "b" } else { "a" };
    for _ in 0..6 {
        assert_eq!(sluice.get("/").text(), other, "a drained backend got a new request");
    }
    release.store(true, Ordering::SeqCst);
    let finished = in_flight.join().unwrap();
    assert_eq!(finished.status, 200, "the in-flight request did not finish");
    assert_eq!(servers(admin)[&held]["state"], "draining", "a drained backend stays listed");
    assert_eq!(change(admin, "POST", &format!("/servers/undrain?url={held}"), "").status, 200);
    let bodies: Vec<String> = (0..4).map(|_| sluice.get("/").text()).collect();
    assert!(bodies.iter().any(|b| b != other), "an undrained backend got no requests: {bodies:?}");
}

#[test]
fn delete_removes_a_backend_once_its_in_flight_request_ends() {
    let release = Arc::new(AtomicBool::new(false));
    let (a, b) = (holding_backend("a", &release), holding_backend("b", &release));
    let (sluice, admin) = with_token(&[&a.url(), &b.url()]);
    let (held, in_flight) = hold_one_request(&sluice, admin, &[&a, &b]);
    let r = change(admin, "DELETE", &format!("/servers?url={held}"), "");
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(servers(admin)[&held]["state"], "removing");
    let other = if held == a.url() { "b" } else { "a" };
    assert_eq!(sluice.get("/").text(), other);
    release.store(true, Ordering::SeqCst);
    assert_eq!(in_flight.join().unwrap().status, 200, "the in-flight request did not finish");
    assert!(wait_until(WAIT, || !servers(admin).contains_key(&held)), "{:#}", admin_stats(admin));
    assert_eq!(servers(admin).len(), 1);
}

#[test]
fn delete_of_an_idle_backend_removes_it_at_once_and_unknown_ones_are_404() {
    let (a, b) = (TestBackend::named("a"), TestBackend::named("b"));
    let (sluice, admin) = with_token(&[&a.url(), &b.url()]);
    let r = change(admin, "DELETE", &format!("/servers?url={}", b.url()), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!servers(admin).contains_key(&b.url()));
    for _ in 0..3 {
        assert_eq!(sluice.get("/").text(), "a");
    }
    let gone = format!("/servers?url={}", b.url());
    assert_eq!(change(admin, "DELETE", &gone, "").status, 404);
    assert_eq!(change(admin, "POST", &drain_path("http://127.0.0.1:1"), "").status, 404);
    assert_eq!(change(admin, "POST", "/servers/drain", "").status, 400, "a drain without ?url=");
    let encoded = format!("/servers/drain?url={}", a.url().replace(':', "%3A").replace('/', "%2F"));
    assert_eq!(change(admin, "POST", &encoded, "").status, 200, "a percent-encoded URL");
}

fn start_from_file(path: &Path) -> (Sluice, SocketAddr) {
    let sluice = Sluice::from_file(path);
    let addr = sluice.server().admin_addr().unwrap();
    (sluice, addr)
}

#[test]
fn reload_rereads_the_file_and_keeps_backends_added_at_run_time() {
    let (a, b, c) = (TestBackend::named("a"), TestBackend::named("b"), TestBackend::named("c"));
    let config = |servers: &str| {
        format!(
            r#"{{"listen": "127.0.0.1:0", "servers": [{servers}],
                "admin": {{"listen": "127.0.0.1:0", "token": "{TOKEN}"}}}}"#
        )
    };
    let path = config_file("reload", &config(&format!("{:?}", a.url())));
    let (sluice, admin) = start_from_file(&path);
    assert_eq!(change(admin, "POST", "/servers", &format!(r#"{{"url": "{}"}}"#, c.url())).status, 201);
    std::fs::write(&path, config(&format!("{:?}, {:?}", a.url(), b.url()))).unwrap();
    let r = change(admin, "POST", "/reload", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let listed = servers(admin);
    assert!(listed.contains_key(&a.url()) && listed.contains_key(&b.url()), "{listed:?}");
    assert_eq!(listed[&c.url()]["addedAtRuntime"], true, "a runtime-added backend was lost on reload");
    // A backend new to the file joins after its first passing probe.
    assert!(wait_until(WAIT, || servers(admin)[&b.url()]["healthy"] == true), "{listed:?}");
    let bodies: Vec<String> = (0..6).map(|_| sluice.get("/").text()).collect();
    assert!(["a", "b", "c"].iter().all(|n| bodies.contains(&n.to_string())), "{bodies:?}");

    std::fs::write(&path, "{\"listen\": ").unwrap();
    let r = change(admin, "POST", "/reload", "");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(json(&r)["error"].as_str().unwrap().contains("not valid JSON"), "{}", r.text());
    assert_eq!(servers(admin).len(), 3, "a refused reload changed the backends");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405() {
    let a = TestBackend::named("a");
    let (_sluice, admin) = with_token(&[&a.url()]);
    assert_eq!(get(admin, "/nope").status, 404);
    let r = admin_call(admin, "POST", "/stats", Some(TOKEN), "");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    assert_eq!(get(admin, "/reload").status, 405);
    let head = {
        let mut c = Client::connect(admin);
        c.send(b"HEAD /stats HTTP/1.1\r\nHost: a\r\n\r\n");
        c.read_response(true).unwrap()
    };
    assert_eq!(head.status, 200);
    assert_eq!(head.header("connection"), Some("close"));
}

#[test]
fn a_json_access_log_file_gets_one_object_per_exchange() {
    let backend = TestBackend::named("hello");
    let path = std::env::temp_dir().join(format!("sluice-admin-{}-access.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let extra = format!(r#""accessLog": {{"format": "json", "path": {:?}}},"#, path.display().to_string());
    let mut sluice = Sluice::start(&[&backend.url()], &extra);
    assert_eq!(sluice.get("/one?x=1").status, 200);
    assert_eq!(sluice.get("/two").status, 200);
    sluice.server.take().unwrap().stop();
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let lines: Vec<Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert_eq!(lines.len(), 2, "{text}");
    let first = &lines[0];
    assert_eq!((first["method"].as_str(), first["target"].as_str()), (Some("GET"), Some("/one?x=1")), "{first}");
    assert_eq!((first["status"].as_u64(), first["bytes"].as_u64()), (Some(200), Some(5)), "{first}");
    assert_eq!(first["backend"], backend.url().as_str());
    assert_eq!(first["version"], "HTTP/1.1");
    assert!(first["duration_ms"].is_f64() && first["time"].as_str().unwrap().ends_with('Z'), "{first}");
    assert!(first["client"].as_str().unwrap().starts_with("127.0.0.1:"), "{first}");
}

#[test]
fn a_combined_access_log_file_follows_apache_with_backend_and_duration() {
    let backend = TestBackend::named("hello");
    let path = std::env::temp_dir().join(format!("sluice-admin-{}-combined.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let extra = format!(r#""accessLog": {{"format": "combined", "path": {:?}}},"#, path.display().to_string());
    let mut sluice = Sluice::start(&[&backend.url()], &extra);
    let mut c = sluice.connect();
    c.send(b"GET /x HTTP/1.1\r\nHost: t\r\nUser-Agent: test-agent\r\nReferer: http://r/\r\nConnection: close\r\n\r\n");
    assert_eq!(c.response().unwrap().status, 200);
    sluice.server.take().unwrap().stop();
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let line = text.lines().next().unwrap_or_default();
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    let expected = format!("\"GET /x HTTP/1.1\" 200 5 \"http://r/\" \"test-agent\" \"{}\" ", backend.url());
    assert!(line.contains(&expected), "{line}\nwant: {expected}");
}

#[test]
fn backends_are_added_to_the_named_pool_with_its_scheme() {
    let web = TestBackend::named("web");
    let db = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = format!(
        r#"{{"listeners": [{{"listen": "127.0.0.1:0", "mode": "http", "routes": [{{"pool": "web"}}]}},
                           {{"listen": "127.0.0.1:0", "mode": "tcp", "pool": "db"}}],
            "pools": {{"web": {{"servers": ["{}"]}}, "db": {{"servers": ["tcp://{}"]}}}},
            "admin": {{"listen": "127.0.0.1:0", "token": "{TOKEN}"}}}}"#,
        web.url(),
        db.local_addr().unwrap()
    );
    let sluice = Sluice::from_json(&config);
    let admin = sluice.server().admin_addr().unwrap();
    let pools: Vec<String> = admin_stats(admin)["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(pools.len(), 2, "{pools:?}");
    let wrong_scheme = change(admin, "POST", "/servers", &format!(r#"{{"url": "{}", "pool": "db"}}"#, web.url()));
    assert_eq!(wrong_scheme.status, 400, "{}", wrong_scheme.text());
    let url = format!("tcp://{}", spare.local_addr().unwrap());
    let added = change(admin, "POST", "/servers", &format!(r#"{{"url": "{url}", "pool": "db"}}"#));
    assert_eq!(added.status, 201, "{}", added.text());
    assert_eq!(json(&added)["healthy"], true, "a tcp probe is a connect");
    let listed = &servers(admin)[&url];
    assert_eq!((listed["pool"].as_str(), listed["healthy"].as_bool()), (Some("db"), Some(true)), "{listed:#}");
}

/// A connection to the admin API that sends nothing.
fn silent_client(admin: SocketAddr) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect_timeout(&admin, WAIT).expect("connect to the admin API");
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    stream
}

/// Whether `stream` is still open with nothing received: a short read times out.
fn is_open_and_unanswered(mut stream: &std::net::TcpStream) -> bool {
    use std::io::{ErrorKind, Read};
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

#[test]
fn a_silent_admin_client_does_not_delay_stats_for_another() {
    let backend = TestBackend::named("a");
    let (_sluice, admin) = start(&[&backend.url()], "");
    let silent = silent_client(admin);
    // The silent client gets its 408 only after 5 s; /stats must not wait for it.
    assert_eq!(get(admin, "/stats").status, 200);
    assert!(is_open_and_unanswered(&silent), "the silent client was answered or closed before /stats");
}

#[test]
fn admin_connections_beyond_the_cap_are_answered_503_until_one_ends() {
    let backend = TestBackend::named("a");
    let (_sluice, admin) = start(&[&backend.url()], "");
    let held: Vec<_> = (0..sluice::ops::admin::MAX_ADMIN_CONNECTIONS).map(|_| silent_client(admin)).collect();
    let refused = get(admin, "/stats");
    assert_eq!(refused.status, 503, "{}{}", refused.raw_head, refused.text());
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(held.iter().all(is_open_and_unanswered), "a held connection was answered");
    drop(held);
    assert!(wait_until(WAIT, || get(admin, "/stats").status == 200), "slots were not given back");
}

// Runtime changes are laid over the file afresh every time: a backend added and then deleted
// leaves nothing behind (issue 11's ghosts).

fn add(admin: SocketAddr, url: &str) {
    let r = change(admin, "POST", "/servers", &format!(r#"{{"url": "{url}"}}"#));
    assert_eq!(r.status, 201, "adding {url}: {}", r.text());
}

fn delete(admin: SocketAddr, url: &str) {
    let r = change(admin, "DELETE", &format!("/servers?url={url}"), "");
    assert_eq!(r.status, 200, "deleting {url}: {}", r.text());
    assert_eq!(json(&r)["removed"], true, "{}", r.text());
}

#[test]
fn backends_added_then_deleted_leave_stats_probes_and_traffic() {
    let a = TestBackend::named("a");
    let added: Vec<TestBackend> = (0..5).map(|_| TestBackend::named("added")).collect();
    let (sluice, admin) = with_token(&[&a.url()]);
    for b in &added {
        add(admin, &b.url());
    }
    assert_eq!(servers(admin).len(), 6);
    for b in &added {
        delete(admin, &b.url());
    }
    let listed = servers(admin);
    assert_eq!(listed.keys().collect::<Vec<_>>(), [&a.url()], "ghosts in /stats: {:#}", admin_stats(admin));
    let probes: Vec<usize> = added.iter().map(TestBackend::probe_count).collect();
    // Three more probe rounds of the remaining backend (every 200 ms) reach none of the deleted.
    let a_probes = a.probe_count();
    assert!(wait_until(WAIT, || a.probe_count() >= a_probes + 3), "the health thread stopped probing a");
    let later: Vec<usize> = added.iter().map(TestBackend::probe_count).collect();
    assert_eq!(probes, later, "deleted backends are still probed");
    for _ in 0..5 {
        assert_eq!(sluice.get("/").text(), "a");
    }
    assert!(added.iter().all(|b| b.request_count() == 0), "a deleted backend got traffic");
}

#[test]
fn a_deleted_backend_can_be_added_again_and_a_reload_between_changes_keeps_them() {
    let (a, b, c) = (TestBackend::named("a"), TestBackend::named("b"), TestBackend::named("c"));
    let file = format!(
        r#"{{"listen": "127.0.0.1:0", "servers": [{:?}], "healthCheckInterval": "200ms",
            "admin": {{"listen": "127.0.0.1:0", "token": "{TOKEN}"}}}}"#,
        a.url()
    );
    let path = config_file("readd", &file);
    let (sluice, admin) = start_from_file(&path);
    add(admin, &b.url());
    delete(admin, &b.url());
    add(admin, &b.url());
    add(admin, &c.url());
    assert_eq!(change(admin, "POST", &drain_path(&c.url()), "").status, 200);
    let r = change(admin, "POST", "/reload", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let listed = servers(admin);
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(listed[&b.url()]["addedAtRuntime"], true);
    assert_eq!(listed[&c.url()]["draining"], true, "a drain was lost on reload");
    delete(admin, &b.url());
    let listed = servers(admin);
    assert!(!listed.contains_key(&b.url()), "deleted after a reload, still listed: {listed:?}");
    let bodies: Vec<String> = (0..4).map(|_| sluice.get("/").text()).collect();
    assert!(bodies.iter().all(|body| body == "a"), "{bodies:?}");
    let _ = std::fs::remove_file(&path);
}

/// Threads, open files and resident memory of process `pid`, from /proc.
fn process_footprint(pid: u32) -> (usize, usize, u64) {
    let count = |dir: &str| std::fs::read_dir(format!("/proc/{pid}/{dir}")).map_or(0, |d| d.count());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (count("task"), count("fd"), rss_kib)
}

#[test]
fn a_hundred_add_delete_cycles_leave_threads_files_and_memory_where_they_started() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let file = format!(
        r#"{{"listen": "127.0.0.1:0", "servers": [{:?}], "healthCheckInterval": "100ms",
            "admin": {{"listen": "127.0.0.1:{admin_port}", "token": "{TOKEN}"}}}}"#,
        a.url()
    );
    let path = config_file("cycles", &file);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--config", path.to_str().unwrap()])
        .env("RUST_LOG", "error")
        .spawn()
        .expect("start sluice");
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let answering = wait_until(WAIT, || std::net::TcpStream::connect(admin).is_ok());
    let cycle = |n: usize| {
        for _ in 0..n {
            add(admin, &b.url());
            delete(admin, &b.url());
        }
    };
    let result = std::panic::catch_unwind(|| {
        assert!(answering, "sluice's admin API never answered");
        cycle(10);
        let settled = |before: (usize, usize, u64)| {
            wait_until(WAIT, || {
                let now = process_footprint(child.id());
                now.0 <= before.0 && now.1 <= before.1
            })
        };
        let before = process_footprint(child.id());
        cycle(100);
        assert!(settled(before), "threads or open files grew: {before:?} -> {:?}", process_footprint(child.id()));
        let after = process_footprint(child.id());
        assert!(after.2 < before.2 + 1024, "resident memory grew by over 1 MiB: {before:?} -> {after:?}");
        assert_eq!(servers(admin).len(), 1, "{:#}", admin_stats(admin));
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&path);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
