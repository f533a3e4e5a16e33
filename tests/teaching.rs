//! The teaching commands as a user runs them: `sluice simulate` and `sluice --check
//! --explain`, their numbers against the algorithms' documented behaviour, and their errors.

use std::path::PathBuf;
use std::process::{Command, Output};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn run(args: &[&str]) -> Output {
    Command::new(SLUICE).args(args).env("RUST_LOG", "warn").output().expect("run sluice")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes `json` to a fresh file and returns its path.
fn config_file(name: &str, json: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-teaching-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    std::fs::write(&path, json).unwrap();
    path
}

/// Runs `sluice simulate` with `args` on a short-form file with `algorithm` and `servers`.
fn simulate(name: &str, algorithm: &str, servers: &str, args: &[&str]) -> String {
    let path =
        config_file(name, &format!(r#"{{"port": ":8080", "algorithm": "{algorithm}", "servers": [{servers}]}}"#));
    let path = path.to_str().unwrap();
    let output = run(&[&["simulate", "--config", path], args].concat());
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    stdout(&output)
}

/// The numbers on the report line of backend `url`: weight, max (if a number), requests,
/// share, expected, peak in flight.
fn backend_line(report: &str, url: &str) -> Vec<f64> {
    let line = report
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{url} ")))
        .unwrap_or_else(|| panic!("no {url} in\n{report}"));
    line.split_whitespace().skip(1).filter_map(|w| w.parse().ok()).collect()
}

fn fairness(report: &str) -> f64 {
    let line = report.lines().find(|l| l.contains("Jain's fairness index")).expect("a fairness line");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

const A: &str = "http://127.0.0.1:5001";
const B: &str = "http://127.0.0.1:5002";
const C: &str = "http://127.0.0.1:5003";

fn weighted(weights: [u32; 3]) -> String {
    let urls = [A, B, C];
    let servers: Vec<String> =
        urls.iter().zip(weights).map(|(u, w)| format!(r#"{{"url": "{u}", "weight": {w}}}"#)).collect();
    servers.join(", ")
}

#[test]
fn smooth_weighting_gives_each_backend_exactly_its_weight() {
    let report = simulate("wrr", "weighted-round-robin", &weighted([5, 1, 1]), &["--requests", "7000"]);
    //  weight, requests, share %, expected %, peak
    assert_eq!(backend_line(&report, A)[..4], [5.0, 5000.0, 71.4, 71.4], "{report}");
    assert_eq!(backend_line(&report, B)[..4], [1.0, 1000.0, 14.3, 14.3], "{report}");
    assert_eq!(fairness(&report), 1.0, "{report}");
    assert!(report.contains("queue: no backend has maxConnections, so no request waits"), "{report}");
}

#[test]
fn round_robin_ignores_weights_and_shares_evenly() {
    let report = simulate("rr", "round-robin", &weighted([5, 1, 1]), &["--requests", "3000", "--clients", "7"]);
    for url in [A, B, C] {
        assert_eq!(backend_line(&report, url)[1..4], [1000.0, 33.3, 33.3], "{report}");
    }
    assert!(report.contains("3000 requests from 7 clients"), "{report}");
}

#[test]
fn least_connections_and_random_follow_weights_roughly() {
    for algorithm in ["least-connections", "random"] {
        let report = simulate(algorithm, algorithm, &weighted([2, 1, 1]), &["--requests", "20000"]);
        let heavy = backend_line(&report, A)[2];
        assert!((42.0..58.0).contains(&heavy), "{algorithm}: weight 2 of 4 got {heavy} %\n{report}");
        assert!(fairness(&report) > 0.95, "{report}");
    }
}

#[test]
fn ip_hash_spreads_many_clients_and_moves_about_one_in_n_when_a_backend_goes() {
    let servers = format!("{A:?}, {B:?}, {C:?}, \"http://127.0.0.1:5004\"");
    let report = simulate("ip", "ip-hash", &servers, &["--clients", "4000", "--remove", B]);
    let share = backend_line(&report, A)[2];
    assert!((20.0..30.0).contains(&share), "{share}\n{report}");
    let moved = |algorithm: &str| -> (f64, f64) {
        let line = report.lines().find(|l| l.trim_start().starts_with(&format!("{algorithm} "))).expect(algorithm);
        let numbers: Vec<f64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        (numbers[0], numbers[3]) //  moved, of 4000, percent, had to move
    };
    let (ip_moved, ip_had_to) = moved("ip-hash");
    assert!((800.0..1200.0).contains(&ip_moved), "ip-hash moved {ip_moved} of 4000\n{report}");
    assert_eq!(ip_moved, ip_had_to, "ip-hash moved clients of remaining backends\n{report}");
    let (rr_moved, _) = moved("round-robin");
    assert!(rr_moved > 2_000.0, "round robin moved only {rr_moved}\n{report}");
}

#[test]
fn connection_limits_are_never_passed_and_the_rest_wait() {
    let servers = format!(r#"{{"url": "{A}", "maxConnections": 2}}, {{"url": "{B}", "maxConnections": 1}}"#);
    let report = simulate("limits", "least-connections", &servers, &["--requests", "1000", "--clients", "10"]);
    assert_eq!(backend_line(&report, A)[0..2], [1.0, 2.0], "weight 1, max 2\n{report}");
    assert_eq!(*backend_line(&report, A).last().unwrap(), 2.0, "peak in flight\n{report}");
    assert_eq!(*backend_line(&report, B).last().unwrap(), 1.0, "peak in flight\n{report}");
    assert!(report.contains("(at most 7 at once"), "{report}");
    assert!(report.contains(&format!("{B} was at its maxConnections for ")), "{report}");
}

#[test]
fn simulate_refuses_bad_arguments_with_exit_2() {
    let path = config_file("bad", &format!(r#"{{"port": ":8080", "servers": [{A:?}]}}"#));
    let path = path.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["simulate", "-c", path, "--requests", "0"], "--requests \"0\": must be a whole number from 1 to 10000000"),
        (&["simulate", "-c", path, "--clients", "lots"], "--clients \"lots\": must be a whole number"),
        (&["simulate", "-c", path, "--remove", B], "--remove http://127.0.0.1:5002: no pool has this backend"),
        (&["simulate", "-c", "/nonexistent/sluice.json"], "/nonexistent/sluice.json: cannot read the file"),
    ];
    for (args, message) in cases {
        let output = run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(stderr(&output).contains(message), "{args:?}: {}", stderr(&output));
    }
}

#[test]
fn check_explain_prints_a_configuration_that_checks_again_and_a_capacity_estimate() {
    let path = config_file("explain", &format!(r#"{{"port": ":8080", "workers": 32, "servers": [{A:?}, {B:?}]}}"#));
    let output = run(&["--check", "--explain", "-c", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    let start = out.find("\n{\n").expect("the effective configuration") + 1;
    let end = start + out[start..].find("\n}\n").expect("its end") + 2;
    let effective: serde_json::Value = serde_json::from_str(&out[start..end]).unwrap();
    assert_eq!(effective["pools"]["default"]["healthCheck"]["timeout"], "1s", "{out}");
    assert_eq!(effective["workers"], 32);
    let again = config_file("explain-again", &out[start..end]);
    let output = run(&["--check", "-c", again.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    for want in [
        "32 threads, each with a 128 KiB stack",
        "idle keep-alive clients it can hold:",
        "concurrent exchanges: 32",
        "memory with   1000 idle clients: about",
    ] {
        assert!(out.contains(want), "{want:?} in\n{out}");
    }
    let output = run(&["--explain"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--explain goes with --check"), "{}", stderr(&output));
}

#[test]
fn the_tours_configurations_check_and_simulate() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/tour");
    for name in ["demo.json", "weighted.json", "backends.json", "spare.json"] {
        let path = format!("{dir}/{name}");
        let output = run(&["--check", "--explain", "--config", &path]);
        assert_eq!(output.status.code(), Some(0), "{name}: {}", stderr(&output));
        let output = run(&["simulate", "--config", &path, "--requests", "1000"]);
        assert_eq!(output.status.code(), Some(0), "{name}: {}", stderr(&output));
    }
    let tour = format!("{dir}/demo.json");
    let output = run(&["simulate", "--config", &tour, "--clients", "1000", "--remove", "http://127.0.0.1:5003"]);
    assert!(stdout(&output).contains("ip-hash"), "{}", stdout(&output));
}
