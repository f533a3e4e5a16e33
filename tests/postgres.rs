//! A real client through TCP mode: two throwaway PostgreSQL servers behind sluice, `psql` and
//! `pgbench -c 8` through it with no failed transaction. The lighter twin of
//! `scripts/pg-through-sluice.sh`.
//!
//! Runs when PostgreSQL is installed (`/usr/lib/postgresql/*/bin`, Debian's layout; `.ci/run`
//! installs it); otherwise prints why it is skipped and passes, or fails when
//! `SLUICE_REQUIRE_EXTERNAL=1` (as `.ci/run` sets it).

mod common;

use common::*;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The newest PostgreSQL with every program this test needs.
fn postgres_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| ["initdb", "pg_ctl", "psql", "pgbench"].iter().all(|p| bin.join(p).is_file()))
        .collect();
    dirs.sort_by_key(|d| d.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()).unwrap_or(0));
    dirs.pop()
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

fn run(command: &mut Command) -> Result<Output, String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One throwaway PostgreSQL server in its own directory; stopped (by its pid) and removed
/// when dropped.
struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PgServer {
    fn start(bin: &Path, name: &str, as_postgres: bool) -> Result<PgServer, String> {
        let dir = std::env::temp_dir().join(format!("sluice-pg-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let server = PgServer { bin: bin.to_path_buf(), dir, port: free_port(), as_postgres };
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(&server.dir))?;
        }
        let data = server.dir.join("data");
        server.run_as_owner(&["initdb", "-D", data.to_str().unwrap(), "-A", "trust", "-U", "postgres", "--no-sync"])?;
        let options =
            format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", server.port, server.dir.display());
        let log = server.dir.join("server.log");
        let start = ["pg_ctl", "-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", "30", "-o"];
        let mut args: Vec<&str> = start.to_vec();
        args.extend([options.as_str(), "start"]);
        server
            .run_as_owner(&args)
            .map_err(|e| format!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default()))?;
        Ok(server)
    }

    /// Runs one of PostgreSQL's programs as the owner of the data directory.
    fn run_as_owner(&self, args: &[&str]) -> Result<Output, String> {
        let program = self.bin.join(args[0]);
        if self.as_postgres {
            run(Command::new("runuser").args(["-u", "postgres", "--"]).arg(program).args(&args[1..]))
        } else {
            run(Command::new(program).args(&args[1..]))
        }
    }

    fn pid(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).ok()?;
        text.lines().next().map(str::to_string)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            // SIGQUIT is PostgreSQL's immediate shutdown: right for a throwaway server.
            let _ = Command::new("kill").args(["-QUIT", &pid]).status();
            let gone = wait_until(Duration::from_secs(10), || {
                !Command::new("kill").args(["-0", &pid]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
            });
            if !gone {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL client program, connecting through sluice at `port`.
fn client(bin: &Path, program: &str, port: u16) -> Command {
    let mut command = Command::new(bin.join(program));
    command.env("PGHOST", "127.0.0.1").env("PGPORT", port.to_string());
    command.env("PGUSER", "postgres").env("PGDATABASE", "postgres").env("PGCONNECT_TIMEOUT", "10");
    command
}

#[test]
fn psql_and_pgbench_work_through_tcp_mode_against_two_servers() {
    let Some(bin) = postgres_bin_dir() else {
        return skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin with initdb, pg_ctl, psql, pgbench)");
    };
    let as_postgres = is_root();
    if as_postgres && run(Command::new("id").arg("postgres")).is_err() {
        return skip("running as root and there is no `postgres` user to run initdb as");
    }
    let started: Vec<Result<PgServer, String>> = std::thread::scope(|s| {
        let starts: Vec<_> =
            ["a", "b"].iter().map(|name| s.spawn(|| PgServer::start(&bin, name, as_postgres))).collect();
        starts.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let servers: Vec<PgServer> = started.into_iter().collect::<Result<_, _>>().unwrap_or_else(|e| panic!("{e}"));
    let sluice = Sluice::from_json(&format!(
        r#"{{"listeners": [{{"listen": "127.0.0.1:0", "mode": "tcp", "pool": "db"}}],
            "pools": {{"db": {{"servers": ["tcp://127.0.0.1:{}", "tcp://127.0.0.1:{}"]}}}}}}"#,
        servers[0].port, servers[1].port
    ));
    let port = sluice.addr.port();

    // Round robin: two connections, one to each server.
    let mut answered = Vec::new();
    for _ in 0..2 {
        let out =
            run(client(&bin, "psql", port).args(["-X", "-A", "-t", "-F", " ", "-c", "select 1, inet_server_port()"]))
                .unwrap_or_else(|e| panic!("{e}"));
        answered.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    answered.sort();
    let mut expected: Vec<String> = servers.iter().map(|s| format!("1 {}", s.port)).collect();
    expected.sort();
    assert_eq!(answered, expected, "select 1 through sluice should reach each server once");

    // One pgbench -i per server (each opens one connection), then 8 clients at once.
    for _ in 0..2 {
        run(client(&bin, "pgbench", port).args(["-i", "-q", "-s", "1", "-I", "dtg"])).unwrap_or_else(|e| panic!("{e}"));
    }
    let out =
        run(client(&bin, "pgbench", port).args(["-c", "8", "-j", "2", "-T", "2"])).unwrap_or_else(|e| panic!("{e}"));
    let report = String::from_utf8_lossy(&out.stdout);
    let line = |prefix: &str| report.lines().find_map(|l| l.strip_prefix(prefix)).map(str::to_string);
    let processed = line("number of transactions actually processed: ").unwrap_or_default();
    assert!(processed.split('/').next().is_some_and(|n| n.parse::<u64>().is_ok_and(|n| n > 0)), "{report}");
    if let Some(failed) = line("number of failed transactions: ") {
        assert!(failed.starts_with("0 "), "pgbench saw failed transactions:\n{report}");
    }
}
