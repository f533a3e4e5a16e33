//! The files an operator deploys, in `deploy/`: the systemd units pass
//! `systemd-analyze verify`, keep their hardening, and run commands sluice takes; the
//! container recipe builds the binary its check script checks.

mod common;

use common::skip;
use std::path::{Path, PathBuf};
use std::process::Command;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
/// Where the unit expects the binary and the configuration.
const INSTALLED: &str = "/usr/local/bin/sluice";
const CONFIG: &str = "/etc/sluice/config.json";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The `Key=value` lines of a unit whose key is `key`, values only.
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines().filter_map(|line| line.strip_prefix(key)?.strip_prefix('=')).collect()
}

/// A folder of the test's own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("sluice-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        return skip("systemd-analyze is not installed (Debian package systemd)");
    }
    // verify checks that ExecStart's program exists: point it at the binary just built.
    let dir = TempDir::new("units");
    for unit in ["sluice.service", "sluice.socket"] {
        let text = read(&format!("deploy/systemd/{unit}")).replace(INSTALLED, SLUICE);
        std::fs::write(dir.0.join(unit), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "sluice.socket", "sluice.service"])
        .current_dir(&dir.0)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on an unknown key or a bad value, but names it on stderr.
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {:?}\n{stderr}", out.status);
    // And it does name them: the same check on a broken copy complains.
    let broken = read("deploy/systemd/sluice.service").replace(INSTALLED, SLUICE).replace("Type=notify", "Type=notfy");
    std::fs::write(dir.0.join("broken.service"), broken).unwrap();
    let out = Command::new("systemd-analyze").args(["verify", "broken.service"]).current_dir(&dir.0).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("notfy"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_service_keeps_its_readiness_reload_and_hardening() {
    let unit = read("deploy/systemd/sluice.service");
    let expected = [
        ("Type", "notify"),
        ("NotifyAccess", "all"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("DynamicUser", "yes"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        ("ConfigurationDirectory", "sluice"),
        ("StateDirectory", "sluice"),
    ];
    for (key, value) in expected {
        assert!(values(&unit, key).contains(&value), "deploy/systemd/sluice.service lost {key}={value}");
    }
    // Room for the default limits.maxConnections twice over (client and backend sides).
    let files: u64 = values(&unit, "LimitNOFILE")[0].parse().unwrap();
    let max_connections = sluice::config::Limits::default().max_connections as u64;
    assert!(files >= 2 * max_connections + 1024, "LimitNOFILE={files} is too low for {max_connections} connections");
}

#[test]
fn the_commands_the_service_runs_are_ones_sluice_takes() {
    let unit = read("deploy/systemd/sluice.service");
    let config = repo().join("config.json");
    for key in ["ExecStartPre", "ExecStart"] {
        for line in values(&unit, key) {
            let mut words = line.split_whitespace();
            assert_eq!(words.next(), Some(INSTALLED), "{key}={line}");
            let args: Vec<&str> = words.map(|w| if w == CONFIG { config.to_str().unwrap() } else { w }).collect();
            // The same arguments with --check added: sluice reads them and exits at once.
            let mut check = args.clone();
            if !check.contains(&"--check") {
                check.push("--check");
            }
            let out = Command::new(SLUICE).args(&check).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{key}={line}: sluice {check:?}: {stderr}");
        }
    }
}

#[test]
fn every_socket_of_the_socket_unit_is_an_address_sluice_reads_the_same() {
    let unit = read("deploy/systemd/sluice.socket");
    let sockets = values(&unit, "ListenStream");
    assert!(!sockets.is_empty());
    for socket in sockets {
        // sluice matches a passed socket to the listener of the same address, so each must
        // be written out in full, as sluice prints listen addresses.
        let addr = sluice::config::parse_listen(socket).unwrap_or_else(|e| panic!("ListenStream={socket}: {e}"));
        assert_eq!(addr.to_string(), socket, "ListenStream={socket} is not written as sluice prints it");
    }
}

#[test]
fn the_container_recipe_builds_what_its_check_script_checks() {
    let recipe = read("deploy/container/Containerfile");
    let script = read("scripts/container-check.sh");
    let build = "cargo build --release --locked --target x86_64-unknown-linux-gnu";
    assert!(recipe.contains(build) && script.contains(build), "both build with `{build}`");
    let flags = "-C target-feature=+crt-static";
    assert!(recipe.contains(flags) && script.contains(flags), "both link statically with `{flags}`");
    let user = recipe.lines().find_map(|l| l.strip_prefix("USER ")).expect("the recipe sets USER");
    let uid: u32 = user.split(':').next().unwrap().parse().expect("USER is numeric, as scratch has no /etc/passwd");
    assert_ne!(uid, 0, "the image runs as a non-root user");
    assert!(recipe.contains(CONFIG), "the configuration is read from {CONFIG}");
    assert!(Path::new(&repo().join("scripts/container-check.sh")).exists());
}
