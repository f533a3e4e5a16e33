//! `GET /`: the status page. Plain HTML and CSS from this file alone (no scripts, fonts or
//! images from anywhere), reloading itself every [`REFRESH_SECONDS`], showing each pool and
//! server with its state, weight, in-flight exchanges, request rate, error ratio and latency,
//! and the algorithm at work: what the balancer keeps between picks (smooth weighting's
//! current weights, the rotation's next backend), in-flight bars, and a chart of each
//! server's requests per second over the last few minutes.
//!
//! Pure: renders a snapshot. Every text that came from outside (URLs, pool names) is escaped.

use super::rates::HISTORY;
use super::snapshot::{PoolSnapshot, ServerSnapshot, Snapshot};
use crate::balance::Kept;
use crate::ops::host;
use std::fmt::Write;
use std::time::Duration;

pub const REFRESH_SECONDS: u32 = 2;

const STYLE: &str = r#"
:root { --bg: #f4f6f8; --card: #fff; --ink: #1d2733; --muted: #6b7785; --line: #e3e8ee;
  --up: #1f9d55; --down: #d64545; --drain: #d98a00; --gone: #8795a1; --accent: #2f6fdf; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background: #17212b; color: #fff; padding: 14px 28px; display: flex; align-items: baseline; gap: 18px; }
header h1 { margin: 0; font-size: 20px; letter-spacing: .5px; }
header .meta { color: #aab6c3; font-size: 13px; }
header .live { margin-left: auto; color: #aab6c3; font-size: 12px; }
header .live::before { content: ""; display: inline-block; width: 8px; height: 8px; border-radius: 50%;
  background: var(--up); margin-right: 6px; }
main { padding: 20px 28px 32px; max-width: 1280px; }
.group { color: var(--muted); font-size: 11px; text-transform: uppercase; letter-spacing: .8px; margin: 4px 0 6px; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px; margin-bottom: 14px; }
.tile { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.tile .label { color: var(--muted); font-size: 11px; text-transform: uppercase; letter-spacing: .6px; }
.tile .value { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
.tile .sub { color: var(--muted); font-size: 12px; }
section.pool { background: var(--card); border: 1px solid var(--line); border-radius: 8px; margin-top: 18px; overflow-x: auto; }
section.pool h2 { margin: 0; padding: 12px 16px; font-size: 16px; border-bottom: 1px solid var(--line);
  display: flex; gap: 12px; align-items: baseline; }
section.pool h2 .summary { color: var(--muted); font-weight: 400; font-size: 13px; }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th { text-align: right; white-space: nowrap; font-size: 11px; text-transform: uppercase; letter-spacing: .5px; color: var(--muted);
  font-weight: 600; padding: 8px 12px; background: #fafbfc; border-bottom: 1px solid var(--line); }
td { text-align: right; padding: 8px 12px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th:first-child, td:first-child { padding-left: 16px; } th:last-child, td:last-child { padding-right: 16px; }
tr:last-child td { border-bottom: 0; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
td.server { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
.tags { margin-top: 2px; } .tag { display: inline-block; margin-right: 6px; padding: 0 6px; border-radius: 4px; font-size: 11px;
  background: #eef2f7; color: var(--muted); font-family: system-ui, sans-serif; }
.state { display: inline-block; min-width: 76px; text-align: center; padding: 2px 10px; border-radius: 999px;
  font-size: 12px; font-weight: 600; color: #fff; }
.state.up { background: var(--up); } .state.down { background: var(--down); }
.state.draining { background: var(--drain); } .state.removing { background: var(--gone); }
.bad { color: var(--down); font-weight: 600; } .warn { color: var(--drain); font-weight: 600; }
.dim { color: var(--muted); }
.bar { display: inline-block; vertical-align: middle; width: 60px; height: 6px; border-radius: 3px;
  background: #e8edf3; margin-left: 8px; overflow: hidden; }
.bar i { display: block; height: 100%; background: var(--accent); }
.work { border-top: 1px solid var(--line); }
.work h3 { margin: 0; padding: 10px 16px 0; font-size: 12px; text-transform: uppercase; letter-spacing: .6px; color: var(--muted); }
.work table { width: auto; }
.work th, .work td { text-align: left; }
.how { margin: 0; padding: 4px 16px 8px; color: var(--muted); font-size: 13px; }
.kept { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
.next { color: var(--accent); font-weight: 600; }
.chart { display: inline-flex; align-items: flex-end; justify-content: flex-end; gap: 1px; height: 28px; width: 304px; padding: 2px;
  background: #f3f6f9; border-radius: 3px; vertical-align: middle; }
.chart i { display: block; width: 4px; min-height: 1px; background: var(--accent); }
footer { color: var(--muted); font-size: 12px; margin-top: 18px; }
"#;

pub fn render(s: &Snapshot) -> String {
    let mut html = String::with_capacity(16 * 1024);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>sluice status</title><style>{STYLE}</style></head><body>\n\
         <header><h1>sluice</h1><span class=\"meta\">version {} · up {}</span>\
         <span class=\"live\">refreshes every {REFRESH_SECONDS} s</span></header>\n<main>\n",
        escape(s.version),
        human_duration(s.uptime)
    );
    render_tiles(&mut html, s);
    for pool in &s.pools {
        render_pool(&mut html, pool);
    }
    html.push_str(
        "<footer>Machine-readable: <a href=\"/stats\">/stats</a> (JSON) · <a href=\"/metrics\">/metrics</a> \
         (Prometheus). Rates and latency are over the last 10 seconds; charts over the last 5 minutes.</footer>\n</main></body></html>\n",
    );
    html
}

fn tile(html: &mut String, label: &str, value: &str, sub: &str) {
    let _ = write!(
        html,
        "<div class=\"tile\"><div class=\"label\">{label}</div><div class=\"value\">{value}</div>\
         <div class=\"sub\">{sub}</div></div>"
    );
}

fn render_tiles(html: &mut String, s: &Snapshot) {
    let rate: f64 = s.pools.iter().map(PoolSnapshot::requests_per_second).sum();
    let servers = s.pools.iter().flat_map(|p| &p.servers);
    let (up, total) = servers.fold((0, 0), |(up, total), sv| (up + usize::from(sv.healthy), total + 1));
    let w = &s.workers;
    let pools = if s.pools.len() == 1 { "1 pool".to_string() } else { format!("{} pools", s.pools.len()) };
    html.push_str("<div class=\"group\">Traffic</div><div class=\"tiles\">");
    tile(html, "Requests / s", &format!("{rate:.1}"), "all pools, last 10 s");
    tile(html, "Backends up", &format!("{up} / {total}"), &pools);
    let slow = &s.slow_clients;
    let connections = format!(
        "{} parked · {} rejected · {} over their share · {} slow bodies, {} slow readers cut off",
        s.parked_connections,
        s.rejected_connections,
        slow.waiting_for_share,
        slow.counts.bodies_too_slow,
        slow.counts.readers_too_slow
    );
    tile(html, "Connections", &s.open_connections.to_string(), &connections);
    tile(html, "Workers busy", &format!("{} / {}", w.busy, w.total), &format!("{} idle · {} queued", w.idle, w.queued));
    let own_errors = s.own_answers.server_errors();
    tile(html, "Retries", &s.retries.to_string(), &format!("{own_errors} 5xx answered by sluice"));
    html.push_str("</div>\n<div class=\"group\">Host</div><div class=\"tiles\">");
    render_host_tiles(html, &s.host);
    html.push_str("</div>\n");
}

fn render_host_tiles(html: &mut String, h: &host::Sample) {
    let p = &h.process;
    let cpu = p.cpu_seconds.map_or("–".into(), |c| format!("{c:.1} s"));
    let rss = p.resident_bytes.map_or("–".into(), bytes);
    let fds = p.open_fds.map_or("–".into(), |n| format!("{n} open fds"));
    tile(html, "sluice resident memory", &rss, &format!("CPU {cpu} · {fds}"));
    let load = h.host.load.map_or("–".into(), |l| format!("{:.2}", l[0]));
    let load_sub = h.host.load.map_or(String::new(), |l| format!("5m {:.2} · 15m {:.2}", l[1], l[2]));
    tile(html, "Load (1 min)", &load, &load_sub);
    let used = |s: Option<host::Space>| match s {
        Some(s) => (
            format!("{:.0} %", s.used_ratio() * 100.0),
            format!("{} free of {}", bytes(s.available_bytes), bytes(s.total_bytes)),
        ),
        None => ("–".into(), String::new()),
    };
    let (memory, memory_sub) = used(h.host.memory);
    tile(html, "Memory used", &memory, &memory_sub);
    let (disk, disk_sub) = used(h.host.disk);
    tile(html, &format!("Disk used ({})", host::DISK_PATH), &disk, &disk_sub);
}

fn render_pool(html: &mut String, pool: &PoolSnapshot) {
    let _ = write!(
        html,
        "<section class=\"pool\"><h2>pool {}<span class=\"summary\">{} · {} of {} available · {:.1} req/s</span></h2>\n\
         <table><thead><tr><th>Server</th><th>State</th><th>Weight</th><th>In flight</th><th>Req/s</th>\
         <th>Errors</th><th>Latency</th><th>p95</th><th>Requests</th><th>Failures</th>\
         <th title=\"health checks passed / failed\">Checks</th></tr></thead><tbody>\n",
        escape(&pool.name),
        escape(&pool.algorithm),
        pool.available(),
        pool.servers.len(),
        pool.requests_per_second()
    );
    let scale = Scale {
        busiest: pool.servers.iter().filter_map(|s| s.recent).map(|r| r.requests_per_second).fold(0.0, f64::max),
        most_in_flight: pool.servers.iter().map(|s| s.max_connections.unwrap_or(s.active)).max().unwrap_or(0),
        chart_peak: pool.servers.iter().flat_map(|s| chart_buckets(&s.history)).fold(0.0, f64::max),
    };
    for server in &pool.servers {
        render_server(html, server, scale.busiest);
    }
    html.push_str("</tbody></table>\n");
    render_algorithm_at_work(html, pool, &scale);
    html.push_str("</section>\n");
}

/// The pool's algorithm at work: how it picks, what it keeps for each server, each
/// server's exchanges in flight, and its requests per second over the last minutes.
fn render_algorithm_at_work(html: &mut String, pool: &PoolSnapshot, scale: &Scale) {
    let _ = writeln!(
        html,
        "<div class=\"work\"><h3>The algorithm at work</h3><p class=\"how\">{}</p>\
         <table><thead><tr><th>Server</th><th>Algorithm keeps</th><th>In flight</th>\
         <th title=\"one bar per {CHART_BUCKET_SECONDS} s\">Requests / s, last {} min</th></tr></thead><tbody>",
        how_it_picks(&pool.algorithm),
        HISTORY.as_secs() / 60
    );
    for (i, s) in pool.servers.iter().enumerate() {
        let limit = s.max_connections.map_or(String::new(), |m| format!("<span class=\"dim\"> / {m}</span>"));
        let _ = writeln!(
            html,
            "<tr><td class=\"server\">{}</td><td>{}</td><td>{}{limit}{}</td><td>{}</td></tr>",
            escape(&s.url),
            kept_by(&pool.kept, i),
            s.active,
            in_flight_bar(s.active, scale.most_in_flight),
            chart(&s.history, scale.chart_peak)
        );
    }
    html.push_str("</tbody></table></div>\n");
}

/// A bar of `active` exchanges in flight against `most`, the pool's largest limit or load.
fn in_flight_bar(active: usize, most: usize) -> String {
    let share = if most > 0 { active as f64 / most as f64 * 100.0 } else { 0.0 };
    format!("<span class=\"bar\" title=\"in flight\"><i style=\"width:{share:.0}%\"></i></span>")
}

/// What the pool's bars are measured against.
struct Scale {
    /// The highest recent requests per second of any server.
    busiest: f64,
    /// The largest `maxConnections`, or in-flight count where there is none.
    most_in_flight: usize,
    /// The highest bar of any server's chart.
    chart_peak: f64,
}

/// Each bar of the charts averages this many seconds.
const CHART_BUCKET_SECONDS: usize = 5;

/// The per-second `history` averaged over buckets of [`CHART_BUCKET_SECONDS`], the newest
/// bucket last (the oldest may be partial).
fn chart_buckets(history: &[f64]) -> Vec<f64> {
    let first = history.len() % CHART_BUCKET_SECONDS;
    let mut buckets: Vec<f64> = Vec::new();
    if first > 0 {
        buckets.push(history[..first].iter().sum::<f64>() / first as f64);
    }
    buckets.extend(history[first..].chunks(CHART_BUCKET_SECONDS).map(|c| c.iter().sum::<f64>() / c.len() as f64));
    buckets
}

/// A chart of requests per second: one bar per bucket, heights against `peak`.
fn chart(history: &[f64], peak: f64) -> String {
    let buckets = chart_buckets(history);
    let now = buckets.last().copied().unwrap_or(0.0);
    let top = buckets.iter().copied().fold(0.0, f64::max);
    let mut out = format!(
        "<span class=\"chart\" title=\"requests per second over the last {} s: now {now:.1}, peak {top:.1}\">",
        history.len()
    );
    for value in buckets {
        let height = if peak > 0.0 { value / peak * 100.0 } else { 0.0 };
        let _ = write!(out, "<i style=\"height:{height:.0}%\"></i>");
    }
    out.push_str("</span>");
    out
}

/// What the balancer keeps for server `index`, as the page shows it.
fn kept_by(kept: &Kept, index: usize) -> String {
    match kept {
        Kept::Nothing => dash(),
        Kept::Cursor(next) if *next == index => {
            "<span class=\"next\">\u{25b8} the next pick starts here</span>".to_string()
        }
        Kept::Cursor(_) => String::new(),
        Kept::CurrentWeights(weights) => {
            weights.get(index).map_or_else(dash, |w| format!("<span class=\"kept\">current weight {w}</span>"))
        }
    }
}

/// One sentence on how the pool's algorithm picks, beside what it keeps.
fn how_it_picks(algorithm: &str) -> &'static str {
    match algorithm {
        "round-robin" => "Round robin: each pick takes the next available server after the previous pick.",
        "weighted-round-robin" => {
            "Smooth weighted round robin: each pick adds every available server's weight to its current weight; \
             the highest current weight wins and gives back the total of the weights."
        }
        "least-connections" => {
            "Least connections: the server with the fewest exchanges in flight for its weight wins; \
             ties go to the first one after the previous pick."
        }
        "ip-hash" => {
            "Ip-hash: each server scores the client address (rendezvous hashing) and the highest score wins; \
             nothing is kept between picks."
        }
        _ => {
            "Random: two servers are drawn by weight and the one with fewer exchanges in flight for its weight wins; \
             nothing is kept but the random generator."
        }
    }
}

fn render_server(html: &mut String, s: &ServerSnapshot, busiest: f64) {
    let mut tags = String::new();
    for (on, tag) in [(s.backup, "backup"), (s.added_at_runtime, "added at run time")] {
        if on {
            let _ = write!(tags, "<span class=\"tag\">{tag}</span>");
        }
    }
    if !tags.is_empty() {
        tags = format!("<div class=\"tags\">{tags}</div>");
    }
    let (rate, errors, mean, p95) = match &s.recent {
        Some(r) => {
            let share = if busiest > 0.0 { r.requests_per_second / busiest * 100.0 } else { 0.0 };
            let class = match r.error_ratio {
                e if e >= 0.05 => "bad",
                e if e > 0.0 => "warn",
                _ => "",
            };
            (
                format!("{:.1}<span class=\"bar\"><i style=\"width:{share:.0}%\"></i></span>", r.requests_per_second),
                format!("<span class=\"{class}\">{:.1} %</span>", r.error_ratio * 100.0),
                r.latency_mean.map_or(dash(), latency),
                r.latency_p95.map_or(dash(), latency),
            )
        }
        None => (dash(), dash(), dash(), dash()),
    };
    let limit = s.max_connections.map_or(String::new(), |m| format!("<span class=\"dim\"> / {m}</span>"));
    let failures = if s.failures > 0 { format!("<span class=\"bad\">{}</span>", s.failures) } else { "0".into() };
    let (passed, failed) = s.health_checks;
    let failed = if failed > 0 { format!("<span class=\"bad\">{failed}</span>") } else { "0".into() };
    let _ = writeln!(
        html,
        "<tr><td class=\"server\">{}{tags}</td><td><span class=\"state {state}\">{state}</span></td><td>{}</td>\
         <td>{}{limit}</td><td>{rate}</td><td>{errors}</td><td>{mean}</td><td>{p95}</td><td>{}</td><td>{failures}</td>\
         <td>{passed} / {failed}</td></tr>",
        escape(&s.url),
        s.weight,
        s.active,
        s.requests,
        state = s.state(),
    );
}

fn dash() -> String {
    "<span class=\"dim\">–</span>".to_string()
}

fn latency(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s / 60 % 60),
        _ => format!("{}d {}h", s / 86_400, s / 3600 % 24),
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_text_is_escaped() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn charts_average_five_second_buckets_against_the_pools_peak() {
        let history: Vec<f64> = (0..12).map(f64::from).collect();
        //  0 1 | 2 3 4 5 6 | 7 8 9 10 11
        assert_eq!(chart_buckets(&history), [0.5, 4.0, 9.0]);
        let html = chart(&history, 18.0);
        assert!(html.contains("now 9.0, peak 9.0"), "{html}");
        assert!(
            html.ends_with(
                "<i style=\"height:3%\"></i><i style=\"height:22%\"></i><i style=\"height:50%\"></i></span>"
            ),
            "{html}"
        );
        assert_eq!(chart_buckets(&[]), Vec::<f64>::new());
    }

    #[test]
    fn in_flight_bars_are_measured_against_the_pools_largest_limit_or_load() {
        assert!(in_flight_bar(1, 4).contains("width:25%"));
        assert!(in_flight_bar(4, 4).contains("width:100%"));
        assert!(in_flight_bar(0, 0).contains("width:0%"));
    }

    #[test]
    fn what_the_algorithm_keeps_is_shown_by_server() {
        let weights = Kept::CurrentWeights(vec![-2, 1, 1]);
        assert!(kept_by(&weights, 0).contains("current weight -2"));
        assert!(kept_by(&Kept::Cursor(1), 1).contains("the next pick starts here"));
        assert_eq!(kept_by(&Kept::Cursor(1), 0), "");
        assert!(kept_by(&Kept::Nothing, 0).contains("–"));
    }

    #[test]
    fn numbers_read_at_a_glance() {
        assert_eq!(human_duration(Duration::from_secs(12)), "12s");
        assert_eq!(human_duration(Duration::from_secs(250)), "4m 10s");
        assert_eq!(human_duration(Duration::from_secs(7500)), "2h 5m");
        assert_eq!(human_duration(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d 4h");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(latency(Duration::from_micros(1500)), "1.5 ms");
        assert_eq!(latency(Duration::from_millis(2500)), "2.50 s");
    }
}
