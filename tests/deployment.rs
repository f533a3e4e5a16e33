//! The deployment examples in `deploy/`: the L4 balancer example and the Kubernetes
//! ConfigMap's config.json pass `sluice --check`, and keepalived's health-check script tells a healthy sluice from one
//! without a backend up and from one that does not answer, asking a real sluice's admin API.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The block under `key: |` in a YAML file, with its indentation taken off.
fn yaml_block(text: &str, key: &str) -> String {
    let mut lines = text.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let header = lines.next().unwrap_or_else(|| panic!("no `{key}: |` block"));
    let outer = header.len() - header.trim_start().len();
    let body: Vec<&str> = lines.take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > outer).collect();
    let indent = body.iter().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min().unwrap();
    body.iter().map(|l| l.get(indent..).unwrap_or("")).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_kubernetes_configmap_holds_a_configuration_that_checks() {
    let yaml = std::fs::read_to_string(repo_file("deploy/kubernetes/configmap.yaml")).unwrap();
    let path = config_file("kubernetes-configmap", &yaml_block(&yaml, "config.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_sluice")).args(["--check", "-c"]).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("dns web-backends.default.svc.cluster.local:8080"), "{stdout}");
    let service = std::fs::read_to_string(repo_file("deploy/kubernetes/web-backends-service.yaml")).unwrap();
    assert!(service.contains("name: web-backends") && service.contains("clusterIP: None"), "{service}");
}

#[test]
fn the_l4_balancer_example_accepts_proxy_headers_and_checks() {
    let path = repo_file("deploy/l4-balancer/sluice.json");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice")).args(["--check", "-c"]).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("dns web.internal:8080"), "{stdout}");
    let example = std::fs::read_to_string(&path).unwrap();
    let docs = std::fs::read_to_string(repo_file("docs/deployment.md")).unwrap();
    assert!(docs.contains(example.trim()), "docs/deployment.md does not show deploy/l4-balancer/sluice.json as it is");
}

/// Runs keepalived's check script against the admin API at `admin`; returns its exit code.
fn check_sluice(admin: &str) -> Option<i32> {
    let script = repo_file("deploy/keepalived/check_sluice.sh");
    Command::new("sh").arg(script).arg(admin).output().unwrap().status.code()
}

#[test]
fn the_keepalived_check_passes_only_while_sluice_answers_with_a_backend_up() {
    if Command::new("curl").arg("--version").output().is_err() {
        skip("curl is not installed (apt-get install curl)");
        return;
    }
    let up = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&up);
    let backend =
        TestBackend::start(move |_| if flag.load(Ordering::SeqCst) { Reply::ok("") } else { Reply::status(503, "") });
    let sluice = Sluice::from_json(&format!(
        r#"{{"listen": "127.0.0.1:0", "admin": {{"listen": "127.0.0.1:0"}}, "healthCheckInterval": "50ms",
            "healthCheck": {{"rise": 1, "fall": 1}}, "servers": ["{}"]}}"#,
        backend.url()
    ));
    let admin = format!("http://{}", sluice.server().admin_addr().unwrap());
    assert_eq!(check_sluice(&admin), Some(0));

    up.store(false, Ordering::SeqCst);
    assert!(wait_until(WAIT, || check_sluice(&admin) == Some(2)), "the check passed with no backend up");
    up.store(true, Ordering::SeqCst);
    assert!(wait_until(WAIT, || check_sluice(&admin) == Some(0)), "the check failed with the backend back");

    drop(sluice);
    assert_eq!(check_sluice(&admin), Some(1), "the check passed with sluice stopped");
}

#[test]
fn the_keepalived_example_runs_the_check_script() {
    let conf = std::fs::read_to_string(repo_file("deploy/keepalived/keepalived.conf")).unwrap();
    assert!(conf.contains("check_sluice.sh http://127.0.0.1:9000") && conf.contains("track_script"), "{conf}");
}
