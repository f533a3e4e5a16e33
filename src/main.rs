//! The `sluice` command: arguments, logging, signals, start and stop, exit codes.
//!
//! Exit codes: 0 after a clean stop (or a successful `--check`), 2 for a bad configuration or
//! bad arguments, 1 for a failure at run time such as an address already in use.

use signal_hook::iterator::Signals;
use sluice::config::{Config, DnsLookup, DnsServers, ListenerConfig, Protocol, RouteConfig};
use sluice::inherited::Inherited;
use sluice::ops::lifecycle;
use sluice::ops::upgrade::Executable;
use sluice::tls::TlsSet;
use sluice::{demo, simulate, Server, StartError};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

const USAGE: &str = "\
Usage: sluice [--config PATH] [--check [--explain] | --demo]
       sluice --schema > config.schema.json
       sluice simulate [--config PATH] [--requests N] [--clients K] [--remove URL]
       sluice hash-password < password.txt

An HTTP load balancer in one small binary.

Options:
  -c, --config PATH   the configuration file (default: ./config.json)
      --check         validate the configuration, print what would run, and exit
      --explain       with --check: also print the effective configuration with every
                      default filled in, and an estimate of what the host can hold
      --demo          start demo backends on the addresses the configuration names, then
                      the balancer, and print commands to try
      --schema        print the JSON Schema of the configuration file, for editors
                      (see docs/install.md, \"Editors\")
  -h, --help          print this help
  -V, --version       print the version

Simulate: drive each pool's own picking code with simulated clients (no sockets) and print
each backend's share, Jain's fairness index and what maxConnections queues do:
      --requests N    requests to simulate (default 10000)
      --clients K     clients, each sending its next request when the last is answered
                      (default 100)
      --remove URL    also count the clients each algorithm moves when URL is removed

hash-password reads one line (a password) from standard input and prints its argon2id hash
for basicAuth's \"users\".

Signals: SIGTERM and SIGINT stop gracefully; SIGHUP reloads the configuration (listeners
included); SIGUSR2 starts the executable at the same path with the listening sockets and
hands over to it once it serves (see docs/operations.md).
Logging: RUST_LOG sets the level (default: info; access lines use target sluice::access).";

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run { config: PathBuf, demo: bool },
    Check { config: PathBuf, explain: bool },
    Simulate { config: PathBuf, options: simulate::Options },
    HashPassword,
    Schema,
    Help,
    Version,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut args = args.peekable();
    if args.peek().map(String::as_str) == Some("hash-password") {
        args.next();
        return match args.next() {
            None => Ok(Command::HashPassword),
            Some(arg) => Err(format!(
                "hash-password takes no arguments (got {arg:?}); it reads the password from standard input"
            )),
        };
    }
    if args.peek().map(String::as_str) == Some("simulate") {
        args.next();
        return parse_simulate(args);
    }
    let mut config = PathBuf::from("config.json");
    let (mut check, mut demo, mut explain) = (false, false, false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--schema" => return Ok(Command::Schema),
            "--check" => check = true,
            "--demo" => demo = true,
            "--explain" => explain = true,
            _ => config = config_path(&arg, &mut args)?,
        }
    }
    match (check, demo, explain) {
        (true, true, _) => Err("--check and --demo cannot be used together".to_string()),
        (true, false, explain) => Ok(Command::Check { config, explain }),
        (false, _, true) => Err("--explain goes with --check (sluice --check --explain)".to_string()),
        (false, demo, false) => Ok(Command::Run { config, demo }),
    }
}

/// `-c PATH`, `--config PATH` or `--config=PATH`: the path, or an error for any other argument.
fn config_path(arg: &str, args: &mut impl Iterator<Item = String>) -> Result<PathBuf, String> {
    match arg {
        "-c" | "--config" => match args.next() {
            Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
            _ => Err(format!("{arg} needs a file path")),
        },
        _ => match arg.strip_prefix("--config=") {
            Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
            _ => Err(format!("unknown argument {arg:?}")),
        },
    }
}

/// The arguments after `simulate`.
fn parse_simulate(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut config = PathBuf::from("config.json");
    let mut options = simulate::Options::default();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--requests" => options.requests = count(&arg, args.next(), 10_000_000)?,
            "--clients" => options.clients = count(&arg, args.next(), 1_000_000)?,
            "--remove" => match args.next() {
                Some(url) if !url.is_empty() => options.remove = Some(url),
                _ => return Err("--remove needs a backend URL, as the configuration writes it".to_string()),
            },
            _ => config = config_path(&arg, &mut args)?,
        }
    }
    Ok(Command::Simulate { config, options })
}

/// A whole number from 1 to `max` given to option `name`.
fn count(name: &str, value: Option<String>, max: usize) -> Result<usize, String> {
    let value = value.ok_or_else(|| format!("{name} needs a number"))?;
    match value.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{name} {value:?}: must be a whole number from 1 to {max}")),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let command = match parse_args(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(problem) => {
            eprintln!("sluice: {problem}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Schema => {
            // A closed pipe (`sluice --schema | head`) is not worth a panic.
            let _ = writeln!(std::io::stdout(), "{:#}", sluice::config::schema::schema());
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("sluice {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check { config, explain } => {
            match Config::load(&config).and_then(|c| TlsSet::load(&c, &Default::default()).map(|tls| (c, tls))) {
                Ok((config, tls)) => {
                    print!("{}", describe(&config, &tls));
                    if explain {
                        print!("{}", sluice::check::explain(&config));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sluice: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Simulate { config, options } => run_simulation(&config, &options),
        Command::HashPassword => hash_password(),
        Command::Run { config, demo } => run(&config, demo),
    }
}

/// `sluice hash-password`: one line from standard input in, its argon2id hash out.
fn hash_password() -> ExitCode {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password (shown as you type; end with Enter): ");
    }
    let mut line = String::new();
    if let Err(e) = stdin.lock().read_line(&mut line) {
        eprintln!("sluice: cannot read the password from standard input: {e}");
        return ExitCode::from(2);
    }
    let password = line.strip_suffix('\n').map_or(line.as_str(), |l| l.strip_suffix('\r').unwrap_or(l));
    match sluice::edge::basic_auth::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("sluice: hash-password: {problem}");
            ExitCode::from(2)
        }
    }
}

fn run(path: &Path, with_demo: bool) -> ExitCode {
    // First, before anything opens a descriptor of its own: the sockets handed to this process.
    let inherited = match Inherited::from_env() {
        Ok(inherited) => inherited,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    let exe = match Executable::of_this_process() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("sluice: cannot find this program's own path (needed for upgrades): {e}");
            return ExitCode::from(1);
        }
    };
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    let signals = match Signals::new(lifecycle::SIGNALS) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("sluice: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    match sluice::sys::raise_open_file_limit() {
        Ok(limit) => log::info!("open file limit: {} (was {}, hard limit {})", limit.after, limit.before, limit.hard),
        Err(e) => log::warn!("cannot raise the open file limit: {e}"),
    }
    if with_demo {
        if let Err(e) = demo::start(&config) {
            eprintln!("sluice: {e}");
            return ExitCode::from(1);
        }
    }
    let server = match Server::start_with(config.clone(), inherited) {
        Ok(server) => server,
        Err(e @ (StartError::Config(_) | StartError::Inherited(_))) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(1);
        }
    };
    if with_demo {
        print_demo_help(&server);
    }
    match lifecycle::serve(server, signals, &exe) {
        Ok(drained) => {
            log::info!("stopped{}", if drained { "" } else { " (some connections were cut off)" });
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice: cannot write the pid file {}: {}", e.path.display(), e.source);
            ExitCode::from(1)
        }
    }
}

/// `sluice simulate`: configuration errors exit 2, like `--check`.
fn run_simulation(path: &Path, options: &simulate::Options) -> ExitCode {
    let report = Config::read(path)
        .map_err(|e| e.to_string())
        .and_then(|config| simulate::run(&config, options).map_err(|e| e.to_string()));
    match report {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::from(2)
        }
    }
}

fn print_demo_help(server: &Server) {
    let port = server.local_addrs()[0].port();
    println!("sluice demo: three demo backends and the balancer are running.");
    println!("Try, in another terminal:");
    println!("  curl http://localhost:{port}/");
    println!("  for i in 1 2 3 4 5 6; do curl -s http://localhost:{port}/; done");
    println!("  curl -i http://localhost:{port}/hello");
    println!("Stop with Ctrl-C.");
}

/// What `--check` prints: the listeners with their modes and routes, the pools, and the
/// process-wide settings that would run.
fn describe(config: &Config, tls: &TlsSet) -> String {
    let mut out = format!("{}: OK\n", config.source);
    for (i, l) in config.listeners.iter().enumerate() {
        out += &describe_listener(config, l);
        out += &tls.describe_listener(i, SystemTime::now());
    }
    out += &sluice::acme::describe(config);
    for p in &config.pools {
        let hc = &p.health_check;
        let check = match p.protocol {
            Protocol::Http => format!("{} {}", hc.method, hc.path),
            Protocol::Tcp => "tcp connect".to_string(),
        };
        let sticky = p.sticky.as_ref().map_or(String::new(), |s| format!(", sticky cookie {:?}", s.cookie));
        let proxy = p.send_proxy.map_or(String::new(), |v| format!(", sendProxy {} (probes too)", v.name()));
        out += &format!(
            "pool {:?}: {}{sticky}{proxy}, retries {}, health check {check} every {:?} (timeout {:?}, rise {}, fall {}, passiveFails {}",
            p.name,
            p.algorithm.name(),
            p.retries,
            hc.interval,
            hc.timeout,
            hc.rise,
            hc.fall,
            hc.passive_fails
        );
        if let Some(host) = &hc.host {
            out += &format!(", host {host}");
        }
        if let Some(statuses) = &hc.expect_status {
            out += &format!(", expectStatus {statuses:?}");
        }
        out += ")\n";
        for s in &p.servers {
            let addrs: Vec<_> = s.addrs.iter().map(ToString::to_string).collect();
            let limit = s.max_connections.map_or(String::new(), |m| format!(", maxConnections {m}"));
            let backup = if s.backup { ", backup" } else { "" };
            out += &format!("  {} ({}) weight {}{limit}{backup}\n", s.url, addrs.join(", "), s.weight);
        }
        for d in &p.dns {
            out += &describe_dns_entry(d);
        }
    }
    out += &describe_discovery(config);
    let t = &config.timeouts;
    out += &format!(
        "workers {}; timeouts: connect {:?}, clientHeader {:?}, keepAlive {:?}, backend {:?}, client {:?}, backendIdle {:?}, drain {:?}, queue {:?}, tunnel {:?}\n",
        config.workers, t.connect, t.client_header, t.keep_alive, t.backend, t.client, t.backend_idle, t.drain, t.queue, t.tunnel
    );
    let l = &config.limits;
    let body = l.max_body_bytes.map_or("unlimited".to_string(), |n| n.to_string());
    let per_client = l.max_connections_per_client.map_or("unlimited".to_string(), |n| n.to_string());
    out += &format!(
        "limits: maxHeaderBytes {}, maxBodyBytes {body}, maxConnections {}, maxConnectionsPerClient {per_client}, maxIdlePerBackend {}; exposeBackend {}, waitingRoom {}, explain {}\n",
        l.max_header_bytes, l.max_connections, l.max_idle_per_backend, config.expose_backend, config.waiting_room, config.explain
    );
    out += &match &config.admin {
        Some(a) => {
            let changes = if a.token.is_some() { "changes with the token" } else { "read only (no token)" };
            format!("admin API on http://{}/ ({changes})\n", a.listen)
        }
        None => "admin API off\n".to_string(),
    };
    let log = &config.access_log;
    let target = log.path.as_ref().map_or("stderr".to_string(), |p| p.display().to_string());
    out += &format!("access log: {} to {target}\n", log.format.name());
    if let Some(path) = &config.pid_file {
        out += &format!("pid file: {}\n", path.display());
    }
    out += &match &config.alerts.webhook {
        Some(hook) => format!("alerts: POST to {} (timeout {:?})\n", hook.url, config.alerts.timeout),
        None => "alerts: logged only (no webhook)\n".to_string(),
    };
    out
}

/// A `dns` or `dnsSrv` entry of a pool, as `--check` shows it (nothing is looked up).
fn describe_dns_entry(d: &DnsServers) -> String {
    let (kind, what, weight) = match &d.lookup {
        DnsLookup::Address { .. } => ("dns", "a backend per A/AAAA address", d.weight.unwrap_or(1).to_string()),
        DnsLookup::Srv { .. } => (
            "dnsSrv",
            "a backend per SRV target address",
            d.weight.map_or("from the records".to_string(), |w| w.to_string()),
        ),
    };
    let limit = d.max_connections.map_or(String::new(), |m| format!(", maxConnections {m}"));
    let backup = if d.backup { ", backup" } else { "" };
    let https = if d.https { ", https" } else { "" };
    format!("  {kind} {} ({what}) weight {weight}{limit}{backup}{https}\n", d.name)
}

/// Where DNS entries are looked up, when the configuration has any.
fn describe_discovery(config: &Config) -> String {
    if config.pools.iter().all(|p| p.dns.is_empty()) {
        return String::new();
    }
    let d = &config.discovery;
    let resolvers = if d.resolvers.is_empty() {
        "the nameservers of /etc/resolv.conf".to_string()
    } else {
        d.resolvers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    };
    format!(
        "DNS entries: looked up before serving, then every {:?} (sooner when a TTL is shorter, at most once a second), asking {resolvers}; --check looks nothing up\n",
        d.resolve_interval
    )
}

/// One listener: its address and mode, then its pool, or its routes one a line.
fn describe_listener(config: &Config, l: &ListenerConfig) -> String {
    let tls = match (&l.tls, l.redirect_to_https) {
        (Some(tls), _) => format!(", tls {}+", tls.min_version.name()),
        (None, Some(port)) => format!(", redirects to https port {port}"),
        (None, None) => String::new(),
    };
    let proxy = if l.accept_proxy { ", acceptProxy: PROXY header required" } else { "" };
    let head = format!("listener {} ({}{tls}{proxy})", l.addr, l.mode.as_str());
    let pool_name = |r: &RouteConfig| format!("{:?}", config.pools[r.pool].name);
    let rules =
        |r: &RouteConfig| r.edge.as_ref().map_or(String::new(), |e| format!("\n    edge: {}", e.config().describe()));
    match l.routes.as_slice() {
        [only] if only.host.is_none() && only.path_prefix.is_none() => {
            format!("{head} -> pool {}{}\n", pool_name(only), rules(only))
        }
        routes => {
            let mut out = format!("{head}\n");
            for r in routes {
                let mut conditions = Vec::new();
                if let Some(host) = &r.host {
                    conditions.push(format!("host {host}"));
                }
                if let Some(prefix) = &r.path_prefix {
                    conditions.push(format!("pathPrefix {prefix}"));
                }
                if conditions.is_empty() {
                    conditions.push("every other request".to_string());
                }
                out += &format!("  route {} -> pool {}{}\n", conditions.join(", "), pool_name(r), rules(r));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn arguments() {
        assert_eq!(parse(&[]), Ok(Command::Run { config: "config.json".into(), demo: false }));
        assert_eq!(parse(&["-c", "x.json", "--demo"]), Ok(Command::Run { config: "x.json".into(), demo: true }));
        assert_eq!(
            parse(&["--config=y.json", "--check"]),
            Ok(Command::Check { config: "y.json".into(), explain: false })
        );
        assert_eq!(
            parse(&["--check", "--explain"]),
            Ok(Command::Check { config: "config.json".into(), explain: true })
        );
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
        assert_eq!(parse(&["-V"]), Ok(Command::Version));
        assert!(parse(&["--config"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["--check", "--demo"]).is_err());
        assert!(parse(&["--explain"]).is_err());
        assert_eq!(parse(&["hash-password"]), Ok(Command::HashPassword));
        assert!(parse(&["hash-password", "secret"]).is_err());
    }

    #[test]
    fn simulate_arguments() {
        let options = simulate::Options { requests: 50, clients: 7, remove: Some("http://a:1".into()) };
        assert_eq!(
            parse(&["simulate", "-c", "x.json", "--requests", "50", "--clients", "7", "--remove", "http://a:1"]),
            Ok(Command::Simulate { config: "x.json".into(), options })
        );
        let defaults = Command::Simulate { config: "config.json".into(), options: simulate::Options::default() };
        assert_eq!(parse(&["simulate"]), Ok(defaults));
        assert_eq!(
            parse(&["simulate", "--requests", "0"]),
            Err("--requests \"0\": must be a whole number from 1 to 10000000".into())
        );
        assert!(parse(&["simulate", "--clients"]).is_err());
        assert!(parse(&["simulate", "--remove"]).is_err());
        assert!(parse(&["simulate", "--check"]).is_err());
    }
}
