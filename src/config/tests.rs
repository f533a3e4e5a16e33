//! The configuration readers, tested through `Config::parse`: defaults, every key, and the
//! text of the errors.

use super::*;
use std::path::PathBuf;
use std::time::Duration;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, "config.json").map_err(|e| e.to_string())
}

#[test]
fn seed_config_loads_with_defaults() {
    let seed = r#"{"port": ":8080", "healthCheckInterval": "2s",
        "servers": ["http://localhost:5001", "http://localhost:5002", "http://localhost:5003"]}"#;
    let c = parse(seed).unwrap();
    assert_eq!(c.listeners[0].addr, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.pools[0].servers.len(), 3);
    assert_eq!(c.pools[0].servers[0].authority, "localhost:5001");
    assert!(c.pools[0].servers[0].addrs.is_empty(), "parsing looked a name up");
    let resolved = Config::from_json(seed, "config.json").unwrap();
    assert!(resolved.pools[0].servers[0].addrs[0].is_ipv4(), "localhost tries IPv4 first");
    assert_eq!(c.pools[0].health_check.interval, Duration::from_secs(2));
    assert_eq!(c.pools[0].retries, 2);
    assert_eq!(c.workers, DEFAULT_WORKERS);
    assert_eq!(c.timeouts, Timeouts::default());
}

#[test]
fn listen_forms() {
    assert_eq!(parse_listen(":8080").unwrap(), "0.0.0.0:8080".parse().unwrap());
    assert_eq!(parse_listen("8080").unwrap(), "0.0.0.0:8080".parse().unwrap());
    assert_eq!(parse_listen("127.0.0.1:9").unwrap(), "127.0.0.1:9".parse().unwrap());
    assert_eq!(parse_listen("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
    assert!(parse_listen(":99999").is_err());
    assert_eq!(parse_listen("localhost:9").unwrap(), "127.0.0.1:9".parse().unwrap());
    assert!(parse_listen("nowhere").is_err());
    assert!(parse_listen("example.com:80").is_err(), "listen host names are not looked up");
}

#[test]
fn durations_need_units() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
    assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    for bad in ["2", "s", "", "2 s", "-1s", "1.5s", "0s", "99999999999999999999s"] {
        assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn errors_name_file_key_and_problem() {
    let cases = [
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "prot": 1}"#,
            "config.json: prot: unknown key (did you mean `port`?)",
        ),
        (r#"{"port": ":8080", "servers": []}"#, "config.json: servers: is empty: give at least one backend"),
        (r#"{"servers": ["http://127.0.0.1:1"]}"#, "config.json: port: missing"),
        (
            r#"{"port": ":8080", "servers": ["ftp://x:1"]}"#,
            "config.json: servers[0]: \"ftp://x:1\": scheme \"ftp\" is not supported",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1/app"]}"#,
            "config.json: servers[0]: \"http://127.0.0.1:1/app\": give only scheme",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:x"]}"#,
            "config.json: servers[0]: \"http://127.0.0.1:x\" has a bad host or port",
        ),
        (
            r#"{"port": ":8080", "servers": [{"url": "http://127.0.0.1:1", "weight": 1001}]}"#,
            "config.json: servers[0].weight: must be a whole number from 0 to 1000",
        ),
        (
            r#"{"port": ":8080", "servers": [{"url": "http://127.0.0.1:1", "wieght": 1}]}"#,
            "config.json: servers[0].wieght: unknown key (did you mean `weight`?)",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "healthCheckInterval": "2"}"#,
            "config.json: healthCheckInterval: \"2\" must be a whole number with a unit",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "timeouts": {"conect": "1s"}}"#,
            "config.json: timeouts.conect: unknown key (did you mean `connect`?)",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "workers": "four"}"#,
            "config.json: workers: must be a whole number from 1 to 100000",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "algorithm": "fastest"}"#,
            "config.json: algorithm: unknown algorithm \"fastest\"",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1", "http://127.0.0.1:1"]}"#,
            "config.json: servers[1]: \"http://127.0.0.1:1\" is listed twice",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "healthCheck": {"rise": 0}}"#,
            "config.json: healthCheck.rise: must be a whole number from 1 to 1000",
        ),
        (
            r#"{"port": ":8080", "listen": ":8081", "servers": ["http://127.0.0.1:1"]}"#,
            "config.json: listen: give either",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "healthCheck": {"expectStatus": [200, 99]}}"#,
            "config.json: healthCheck.expectStatus: must be a status code from 100 to 599, or a list",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "healthCheck": {"expectStatus": []}}"#,
            "config.json: healthCheck.expectStatus: must be a status code",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "healthCheck": {"expectStatus": "2xx"}}"#,
            "config.json: healthCheck.expectStatus: must be a status code",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "healthCheck": {"host": "a b"}}"#,
            "config.json: healthCheck.host: must be a host name",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "healthCheck": {"passiveFail": 1}}"#,
            "config.json: healthCheck.passiveFail: unknown key (did you mean `passiveFails`?)",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "alerts": {"webhook": "https://x/"}}"#,
            "config.json: alerts.webhook: \"https://x/\" is not a URL such as",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "alerts": {"webhook": "http://127.0.0.1:x/a"}}"#,
            "config.json: alerts.webhook: \"http://127.0.0.1:x/a\" has a bad host or port",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "alerts": {"webhok": "http://127.0.0.1/"}}"#,
            "config.json: alerts.webhok: unknown key (did you mean `webhook`?)",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "alerts": {"memoryPercent": 0}}"#,
            "config.json: alerts.memoryPercent: must be a percentage above 0 and at most 100",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "alerts": {"diskPercent": "90%"}}"#,
            "config.json: alerts.diskPercent: must be a percentage above 0 and at most 100",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "alerts": {"cpuPercent": 101}}"#,
            "config.json: alerts.cpuPercent: must be a percentage above 0 and at most 100",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "alerts": {"memoryPercnt": 90}}"#,
            "config.json: alerts.memoryPercnt: unknown key (did you mean `memoryPercent`?)",
        ),
        (r#"{"port": ":8080", "servers": ["#, "config.json: not valid JSON"),
        (r#"[1]"#, "config.json: must be a JSON object"),
        (
            r#"{"port": ":8080", "servers": [{"url": "http://127.0.0.1:1", "backup": true}]}"#,
            "config.json: servers: every server is a backup",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "algorithm": "least-conn"}"#,
            "config.json: algorithm: unknown algorithm \"least-conn\" (known: \"round-robin\", \
             \"weighted-round-robin\", \"least-connections\", \"ip-hash\", \"random\")",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "sticky": {}}"#,
            "config.json: sticky.cookie: missing",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "sticky": {"cookie": "a b"}}"#,
            "config.json: sticky.cookie: must be 1 to 64 letters",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "sticky": {"cookie": "S", "ttl": 1}}"#,
            "config.json: sticky.ttl: unknown key",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "sticky": "S"}"#,
            "config.json: sticky: must be a JSON object",
        ),
        (
            r#"{"port": ":8080", "servers": [{"url": "http://127.0.0.1:1", "weight": 1.5}]}"#,
            "config.json: servers[0].weight: must be a whole number from 0 to 1000",
        ),
        (
            r#"{"port": ":8080", "servers": [{"url": "http://127.0.0.1:1", "weight": -1}]}"#,
            "config.json: servers[0].weight: must be a whole number from 0 to 1000",
        ),
        (
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "timeouts": {"queue": "0s"}}"#,
            "config.json: timeouts.queue: \"0s\" must be more than zero",
        ),
    ];
    for (text, expected) in cases {
        let err = parse(text).expect_err(text);
        assert!(err.starts_with(expected), "for {text}\n got: {err}\nwant: {expected}...");
    }
}

#[test]
fn server_objects_and_limits() {
    let c = parse(r#"{"listen": "127.0.0.1:0", "workers": 8,
        "servers": [{"url": "http://127.0.0.1:5001/", "weight": 0, "maxConnections": 10, "backup": true}, "http://[::1]:5002"],
        "timeouts": {"connect": "250ms", "keepAlive": "1m"},
        "limits": {"maxHeaderBytes": 4096, "maxBodyBytes": 10}, "exposeBackend": true}"#)
    .unwrap();
    let s = &c.pools[0].servers;
    assert_eq!((s[0].weight, s[0].max_connections, s[0].backup), (0, Some(10), true));
    assert_eq!(s[1].authority, "[::1]:5002");
    assert_eq!(c.timeouts.connect, Duration::from_millis(250));
    assert_eq!(c.timeouts.keep_alive, Duration::from_secs(60));
    assert_eq!(c.limits.max_header_bytes, 4096);
    assert_eq!(c.limits.max_body_bytes, Some(10));
    assert_eq!(c.workers, 8);
    assert!(c.expose_backend);
}

#[test]
fn admin_listens_on_loopback_unless_told_otherwise() {
    let base = r#""listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"]"#;
    let c = parse(&format!("{{{base}}}")).unwrap();
    assert_eq!(c.admin, None);
    let c = parse(&format!(r#"{{{base}, "admin": {{}}}}"#)).unwrap();
    assert_eq!(c.admin, Some(AdminConfig { listen: DEFAULT_ADMIN_LISTEN, token: None }));
    assert_eq!(DEFAULT_ADMIN_LISTEN.to_string(), "127.0.0.1:9000");
    let c = parse(&format!(r#"{{{base}, "admin": {{"listen": ":9100", "token": "t0k"}}}}"#)).unwrap();
    let admin = c.admin.unwrap();
    assert_eq!((admin.listen, admin.token.as_deref()), ("0.0.0.0:9100".parse().unwrap(), Some("t0k")));
    let cases = [
        (r#""admin": {"token": ""}"#, "config.json: admin.token: must be a non-empty string"),
        (r#""admin": {"token": "a b"}"#, "config.json: admin.token: must be a non-empty string"),
        (r#""admin": {"listen": "nowhere"}"#, "config.json: admin.listen: \"nowhere\" is not an address"),
        (r#""admin": {"tokn": "x"}"#, "config.json: admin.tokn: unknown key (did you mean `token`?)"),
        (r#""admin": true"#, "config.json: admin: must be a JSON object"),
    ];
    for (extra, expected) in cases {
        let err = parse(&format!("{{{base}, {extra}}}")).expect_err(extra);
        assert!(err.starts_with(expected), "for {extra}\n got: {err}\nwant: {expected}...");
    }
}

#[test]
fn access_log_format_and_path() {
    let base = r#""listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"]"#;
    assert_eq!(parse(&format!("{{{base}}}")).unwrap().access_log, AccessLogConfig::default());
    let c = parse(&format!(r#"{{{base}, "accessLog": {{"format": "json", "path": "/tmp/a.log"}}}}"#)).unwrap();
    assert_eq!(c.access_log.format, AccessLogFormat::Json);
    assert_eq!(c.access_log.path, Some(PathBuf::from("/tmp/a.log")));
    let c = parse(&format!(r#"{{{base}, "accessLog": {{"format": "combined"}}}}"#)).unwrap();
    assert_eq!((c.access_log.format, c.access_log.path), (AccessLogFormat::Combined, None));
    let err = parse(&format!(r#"{{{base}, "accessLog": {{"format": "xml"}}}}"#)).unwrap_err();
    assert!(err.starts_with("config.json: accessLog.format: unknown format \"xml\""), "{err}");
}

#[test]
fn server_objects_from_the_admin_api_use_the_same_rules() {
    let value: Value = serde_json::from_str(r#"{"url": "http://127.0.0.1:7", "weight": 3, "pool": "web"}"#).unwrap();
    let s = parse_server_object(&value, "request body", &["pool"]).unwrap();
    assert_eq!((s.url.as_str(), s.weight), ("http://127.0.0.1:7", 3));
    let value: Value = serde_json::from_str(r#"{"url": "http://127.0.0.1:7", "weight": 3000}"#).unwrap();
    let err = parse_server_object(&value, "request body", &[]).unwrap_err().to_string();
    assert_eq!(err, "request body: weight: must be a whole number from 0 to 1000");
    let value: Value = serde_json::from_str(r#"{"url": "ftp://x"}"#).unwrap();
    assert!(parse_server_object(&value, "request body", &[]).is_err());
}

#[test]
fn every_algorithm_reads_by_its_name() {
    for algorithm in Algorithm::ALL {
        let text =
            format!(r#"{{"port": ":8080", "servers": ["http://127.0.0.1:1"], "algorithm": "{}"}}"#, algorithm.name());
        assert_eq!(parse(&text).unwrap().pools[0].algorithm, algorithm);
    }
    let c = parse(r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"]}"#).unwrap();
    assert_eq!(c.pools[0].algorithm, Algorithm::RoundRobin);
}

#[test]
fn sticky_and_queue_timeout() {
    let c = parse(
        r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "sticky": {"cookie": "SRV_id"},
        "timeouts": {"queue": "250ms"}}"#,
    )
    .unwrap();
    assert_eq!(c.pools[0].sticky, Some(StickyConfig { cookie: "SRV_id".into() }));
    assert_eq!(c.timeouts.queue, Duration::from_millis(250));
    let c = parse(r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"]}"#).unwrap();
    assert_eq!((c.pools[0].sticky.clone(), c.timeouts.queue), (None, Duration::from_secs(5)));
}

#[test]
fn health_check_keys_and_their_defaults() {
    let c = parse(r#"{"listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"]}"#).unwrap();
    let hc = &c.pools[0].health_check;
    assert_eq!((hc.rise, hc.fall, hc.passive_fails), (2, 2, 2));
    assert_eq!((&hc.host, &hc.expect_status), (&None, &None));

    let c = parse(
        r#"{"listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"],
        "healthCheck": {"fall": 4, "host": "app.example.com:8443", "expectStatus": 204}}"#,
    )
    .unwrap();
    let hc = &c.pools[0].health_check;
    assert_eq!(hc.passive_fails, 4, "passiveFails follows fall unless given");
    assert_eq!(hc.host.as_deref(), Some("app.example.com:8443"));
    assert_eq!(hc.expect_status, Some(vec![204]));

    let c = parse(
        r#"{"listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"],
        "healthCheck": {"passiveFails": 0, "expectStatus": [200, 204]}}"#,
    )
    .unwrap();
    let hc = &c.pools[0].health_check;
    assert_eq!((hc.passive_fails, hc.expect_status.clone()), (0, Some(vec![200, 204])));
}

#[test]
fn alerts_webhook_and_timeout() {
    let c = parse(r#"{"listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"]}"#).unwrap();
    assert_eq!(c.alerts, AlertsConfig::default());
    assert_eq!(c.alerts.timeout, Duration::from_secs(2));

    let c = parse(
        r#"{"listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"],
        "alerts": {"webhook": "http://127.0.0.1:9090/hooks/sluice?k=1", "timeout": "500ms"}}"#,
    )
    .unwrap();
    let hook = c.alerts.webhook.clone().unwrap();
    assert_eq!(hook.authority, "127.0.0.1:9090");
    assert_eq!(hook.path, "/hooks/sluice?k=1");
    assert!(hook.addrs.is_empty(), "parsing looked a name up");
    let mut resolved = c.clone();
    resolved.resolve().unwrap();
    assert_eq!(resolved.alerts.webhook.unwrap().addrs, vec!["127.0.0.1:9090".parse().unwrap()]);
    assert_eq!(c.alerts.timeout, Duration::from_millis(500));

    assert_eq!(c.alerts.host, HostThresholds::default());
    assert_eq!(webhook_from_url("http://localhost").unwrap().path, "/");
    assert_eq!(webhook_from_url("http://127.0.0.1?x").unwrap().path, "/?x");
    assert_eq!(webhook_from_url("http://[::1]:81/a").unwrap().authority, "[::1]:81");
}

#[test]
fn host_thresholds_are_optional_percentages() {
    let c = parse(
        r#"{"listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"],
        "alerts": {"cpuPercent": 80, "memoryPercent": 90.5, "diskPercent": 100, "openFilesPercent": 0.1}}"#,
    )
    .unwrap();
    let want = HostThresholds {
        cpu_percent: Some(80.0),
        memory_percent: Some(90.5),
        disk_percent: Some(100.0),
        open_files_percent: Some(0.1),
    };
    assert_eq!(c.alerts.host, want);
    assert_eq!(c.alerts.webhook, None);
}

#[test]
fn path_prefixes_are_normalised_and_checked() {
    assert_eq!(parse_path_prefix("/api/").unwrap(), "/api");
    assert_eq!(parse_path_prefix("///").unwrap(), "/");
    for bad in ["api", "", "/a b", "/a?b", "/a#b"] {
        assert!(parse_path_prefix(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn unknown_keys_are_reported_before_the_keys_they_leave_missing() {
    let cases = [
        (r#"{"port": ":1", "Servers": ["http://127.0.0.1:1"]}"#, "Servers: unknown key (did you mean `servers`?)"),
        (r#"{"Port": ":1", "servers": ["http://127.0.0.1:1"]}"#, "Port: unknown key (did you mean `port`?)"),
        (
            r#"{"port": ":1", "servers": [{"URL": "http://127.0.0.1:1"}]}"#,
            "servers[0].URL: unknown key (did you mean `url`?)",
        ),
        (
            r#"{"port": ":1", "servers": ["http://127.0.0.1:1"], "sticky": {"Cookie": "a"}}"#,
            "sticky.Cookie: unknown key (did you mean `cookie`?)",
        ),
        (
            r#"{"listeners": [{"Listen": ":1", "pool": "p"}], "pools": {"p": {"servers": ["http://127.0.0.1:1"]}}}"#,
            "listeners[0].Listen: unknown key (did you mean `listen`?)",
        ),
        (
            r#"{"listeners": [{"listen": ":1", "pool": "p"}], "pools": {"p": {"Servers": ["http://127.0.0.1:1"]}}}"#,
            "pools.p.Servers: unknown key (did you mean `servers`?)",
        ),
    ];
    for (text, expected) in cases {
        let error = parse(text).unwrap_err();
        assert_eq!(error, format!("config.json: {expected}"), "{text}");
    }
}

#[test]
fn slow_client_keys_and_their_defaults() {
    let base = r#"{"port": 8080, "servers": ["http://127.0.0.1:1"]"#;
    let c = parse(&format!("{base}}}")).unwrap();
    assert_eq!(c.limits.buffer_body_bytes, 16 * 1024);
    assert_eq!(c.limits.min_client_bytes_per_second, 500);
    assert_eq!(c.limits.max_workers_per_client, WorkerShare::Percent(25));
    assert_eq!(c.timeouts.min_rate_grace, Duration::from_secs(10));
    let c = parse(&format!(
        r#"{base}, "limits": {{"bufferBodyBytes": 0, "minClientBytesPerSecond": 0, "maxWorkersPerClient": 8}},
            "timeouts": {{"minRateGrace": "2s"}}}}"#
    ))
    .unwrap();
    assert_eq!(c.limits.buffer_body_bytes, 0);
    assert_eq!(c.limits.min_client_bytes_per_second, 0);
    assert_eq!(c.limits.max_workers_per_client, WorkerShare::Count(8));
    assert_eq!(c.timeouts.min_rate_grace, Duration::from_secs(2));
    let c = parse(&format!(r#"{base}, "limits": {{"maxWorkersPerClient": "50%"}}}}"#)).unwrap();
    assert_eq!(c.limits.max_workers_per_client, WorkerShare::Percent(50));
    let problem = "must be a count of workers from 1, such as 64, or a percentage of them, such as \"25%\"";
    for bad in ["0", "\"0%\"", "\"101%\"", "\"25\"", "\"a%\"", "true", "-3"] {
        let text = format!(r#"{base}, "limits": {{"maxWorkersPerClient": {bad}}}}}"#);
        assert_eq!(parse(&text).unwrap_err(), format!("config.json: limits.maxWorkersPerClient: {problem}"), "{bad}");
    }
    let err = parse(&format!(r#"{base}, "limits": {{"bufferBodyBytes": 2000000}}}}"#)).unwrap_err();
    assert_eq!(err, "config.json: limits.bufferBodyBytes: must be a whole number from 0 to 1048576");
}

#[test]
fn a_share_of_the_workers_is_at_least_one_and_at_most_all() {
    assert_eq!(WorkerShare::Percent(25).of(256), 64);
    assert_eq!(WorkerShare::Percent(25).of(2), 1);
    assert_eq!(WorkerShare::Percent(25).of(5), 2);
    assert_eq!(WorkerShare::Percent(100).of(7), 7);
    assert_eq!(WorkerShare::Count(64).of(16), 16);
    assert_eq!(WorkerShare::Count(3).of(16), 3);
}

#[test]
fn pid_file_is_a_path_and_not_empty() {
    let c = parse(r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "pidFile": "run/sluice.pid"}"#).unwrap();
    assert_eq!(c.pid_file, Some(PathBuf::from("run/sluice.pid")));
    assert_eq!(parse(r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"]}"#).unwrap().pid_file, None);
    assert_eq!(
        parse(r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "pidFile": ""}"#).unwrap_err(),
        "config.json: pidFile: must not be empty; leave it out to write no pid file"
    );
    let full = r#"{"listeners": [{"listen": ":1", "pool": "p"}], "pools": {"p": {"servers": ["http://127.0.0.1:1"]}},
        "pidFile": "/run/s.pid"}"#;
    assert_eq!(parse(full).unwrap().pid_file, Some(PathBuf::from("/run/s.pid")));
}

#[test]
fn acme_defaults_to_lets_encrypt_and_storage_beside_the_file() {
    let c = Config::parse(
        r#"{"port": 443, "servers": ["http://127.0.0.1:1"], "tls": {"acme": ["Example.com.", "www.example.com"]},
            "acme": {"email": "ops@example.com"}}"#,
        "/etc/sluice/config.json",
    )
    .unwrap();
    let acme = c.acme.unwrap();
    assert_eq!(acme.directory, LETS_ENCRYPT_DIRECTORY);
    assert_eq!(acme.storage, PathBuf::from("/etc/sluice/acme"));
    assert_eq!(acme.email.as_deref(), Some("ops@example.com"));
    assert_eq!(acme.directory_ca, None);
    let tls = c.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.acme, ["example.com", "www.example.com"]);
    assert!(tls.certificates.is_empty());
}

#[test]
fn acme_errors_name_the_key_and_the_problem() {
    let full = |tls: &str, acme: &str| {
        format!(
            r#"{{{acme} "listeners": [{{"listen": ":8443", "tls": {tls}, "routes": [{{"pool": "p"}}]}}],
                "pools": {{"p": {{"servers": ["http://127.0.0.1:1"]}}}}}}"#
        )
    };
    let cases = [
        (
            full(r#"{"acme": ["a.example"]}"#, ""),
            "config.json: listeners[0].tls.acme: needs the top-level \"acme\" object",
        ),
        (full(r#"{"acme": []}"#, r#""acme": {},"#), "config.json: listeners[0].tls.acme: must be a non-empty list"),
        (
            full(r#"{"acme": ["*.a.example"]}"#, r#""acme": {},"#),
            "listeners[0].tls.acme[0]: \"*.a.example\": wildcards",
        ),
        (
            full(r#"{"acme": ["a.example", "A.example"]}"#, r#""acme": {},"#),
            "listeners[0].tls.acme[1]: \"a.example\" is listed twice",
        ),
        (
            full(r#"{"acme": ["a.example"], "cert": "c.pem", "key": "k.pem"}"#, r#""acme": {},"#),
            "listeners[0].tls.acme: give either certificate files or \"acme\", not both",
        ),
        (full(r#"{"acme": ["a.example"]}"#, r#""acme": {"emial": "x"},"#), "config.json: acme.emial: unknown key"),
        (
            full(r#"{"acme": ["a.example"]}"#, r#""acme": {"email": "nobody"},"#),
            "acme.email: \"nobody\" is not an address",
        ),
        (
            full(r#"{"acme": ["a.example"]}"#, r#""acme": {"directory": "http://ca/dir"},"#),
            "acme.directory: \"http://ca/dir\" is not an https:// URL",
        ),
    ];
    for (text, expected) in cases {
        let error = parse(&text).unwrap_err();
        assert!(error.contains(expected), "{error}\n  expected: {expected}");
    }
    let short = r#"{"port": 443, "servers": ["http://127.0.0.1:1"], "tls": {"acme": ["a.example"]}}"#;
    assert!(parse(short).unwrap_err().starts_with("config.json: tls.acme: needs the top-level \"acme\""));
}

#[test]
fn the_idle_set_per_backend_is_as_large_as_the_worker_pool_unless_set() {
    let read = |extra: &str| {
        let json = format!(r#"{{"port": 1, "servers": ["http://a:1"] {extra}}}"#);
        Config::parse(&json, "c.json").unwrap().limits.max_idle_per_backend
    };
    assert_eq!(read(""), crate::config::DEFAULT_WORKERS);
    assert_eq!(read(r#", "workers": 16"#), 16);
    assert_eq!(read(r#", "workers": 16, "limits": {"maxIdlePerBackend": 3}"#), 3);
}
