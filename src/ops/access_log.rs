//! The access log: one line per exchange, as sluice's own text, as a JSON object, or in
//! Apache's combined format, written to stderr or appended to a file.
//!
//! `connection` calls [`AccessLog::write`] once per exchange. Text lines to stderr go through
//! the `sluice::access` log target, as every other log line does; JSON and combined lines to
//! stderr are written raw, so that each line parses on its own, and still obey that target's
//! level. A file is written through a buffer behind a mutex, held only to append one line;
//! a flusher thread empties the buffer every second, and a reload reopens the file (so log
//! rotation works with SIGHUP).

use crate::config::{AccessLogConfig, AccessLogFormat};
use crate::http::head::{HeaderList, RequestHead};
use crate::lock;
use crate::ops::time::{apache_time, rfc3339_millis};
use log::{info, log_enabled, warn};
use serde::Serialize;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

const LOG_TARGET: &str = "sluice::access";

/// One finished exchange, as the access log sees it.
pub struct Entry<'a> {
    pub time: SystemTime,
    pub client: SocketAddr,
    /// `None` when no request head could be read, and for TCP-mode connections.
    pub head: Option<&'a RequestHead>,
    /// A TCP-mode connection: its request line reads `TCP`, and JSON says `"mode": "tcp"`.
    pub tcp: bool,
    pub status: u16,
    /// Response body bytes sent (for a TCP-mode connection, every byte sent to the client).
    pub bytes: u64,
    pub backend: Option<&'a str>,
    pub duration: Duration,
}

/// Where access lines go. Owned by the runtime.
pub struct AccessLog {
    /// The open file, when `accessLog.path` is set; locked only to append a line or flush.
    file: Mutex<Option<LogFile>>,
    /// Set after a failed write, so that a full disk is reported once, not per request.
    failing: AtomicBool,
}

struct LogFile {
    path: PathBuf,
    writer: BufWriter<File>,
}

impl AccessLog {
    /// Writes to stderr until [`AccessLog::reopen`] names a file.
    pub fn stderr() -> AccessLog {
        AccessLog { file: Mutex::new(None), failing: AtomicBool::new(false) }
    }

    /// Opens the file `config` names, if any.
    pub fn open(config: &AccessLogConfig) -> io::Result<AccessLog> {
        let log = AccessLog::stderr();
        log.reopen(config)?;
        Ok(log)
    }

    /// Switches to the file `config` names, reopening it even when the path is unchanged, so
    /// that a rotated file is let go. On failure the current file stays.
    pub fn reopen(&self, config: &AccessLogConfig) -> io::Result<()> {
        let file = config.path.as_deref().map(open_file).transpose()?;
        let old = std::mem::replace(&mut *lock(&self.file), file);
        if let Some(mut old) = old {
            let _ = old.writer.flush();
        }
        Ok(())
    }

    pub fn write(&self, config: &AccessLogConfig, entry: &Entry) {
        if config.path.is_none() {
            write_to_stderr(config.format, entry);
            return;
        }
        let mut line = match config.format {
            AccessLogFormat::Text => format!("{} {}", rfc3339_millis(entry.time), text_line(entry)),
            AccessLogFormat::Json => json_line(entry),
            AccessLogFormat::Combined => combined_line(entry),
        };
        line.push('\n');
        let written = match &mut *lock(&self.file) {
            Some(file) => file.writer.write_all(line.as_bytes()).map_err(|e| (file.path.clone(), e)),
            None => Ok(()),
        };
        self.note_result(written);
    }

    /// Sends buffered lines to the file.
    pub fn flush(&self) {
        let flushed = match &mut *lock(&self.file) {
            Some(file) => file.writer.flush().map_err(|e| (file.path.clone(), e)),
            None => Ok(()),
        };
        self.note_result(flushed);
    }

    fn note_result(&self, result: Result<(), (PathBuf, io::Error)>) {
        match result {
            Ok(()) => self.failing.store(false, Ordering::Relaxed),
            Err((path, e)) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    warn!("cannot write the access log {}: {e}", path.display());
                }
            }
        }
    }
}

fn open_file(path: &Path) -> io::Result<LogFile> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(LogFile { path: path.to_path_buf(), writer: BufWriter::with_capacity(64 * 1024, file) })
}

fn write_to_stderr(format: AccessLogFormat, entry: &Entry) {
    if !log_enabled!(target: LOG_TARGET, log::Level::Info) {
        return;
    }
    let mut line = match format {
        AccessLogFormat::Text => {
            info!(target: LOG_TARGET, "{}", TextLine(entry));
            return;
        }
        AccessLogFormat::Json => json_line(entry),
        AccessLogFormat::Combined => combined_line(entry),
    };
    line.push('\n');
    let _ = io::stderr().lock().write_all(line.as_bytes());
}

/// `client "METHOD target VERSION" status bytes backend 1.2ms`
pub fn text_line(e: &Entry) -> String {
    TextLine(e).to_string()
}

/// The text line, formatted straight into the log record without a String in between: the
/// default access log is on every request's path.
struct TextLine<'a, 'b>(&'a Entry<'b>);

impl std::fmt::Display for TextLine<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = self.0;
        let millis = e.duration.as_secs_f64() * 1000.0;
        write!(f, "{} \"", e.client)?;
        match e.head {
            Some(h) => write!(f, "{} {} {}", h.method, h.target, h.version.as_str())?,
            None if e.tcp => f.write_str("TCP")?,
            None => f.write_str("-")?,
        }
        write!(f, "\" {} {} {} {millis:.1}ms", e.status, e.bytes, e.backend.unwrap_or("-"))
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    time: String,
    client: String,
    mode: &'static str,
    method: Option<&'a str>,
    target: Option<&'a str>,
    version: Option<&'a str>,
    status: u16,
    bytes: u64,
    backend: Option<&'a str>,
    duration_ms: f64,
}

/// One JSON object; absent values (no head, no backend) are `null`.
pub fn json_line(e: &Entry) -> String {
    let line = JsonLine {
        time: rfc3339_millis(e.time),
        client: e.client.to_string(),
        mode: if e.tcp { "tcp" } else { "http" },
        method: e.head.map(|h| h.method.as_str()),
        target: e.head.map(|h| h.target.as_str()),
        version: e.head.map(|h| h.version.as_str()),
        status: e.status,
        bytes: e.bytes,
        backend: e.backend,
        duration_ms: (e.duration.as_secs_f64() * 1_000_000.0).round() / 1000.0,
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// Apache's combined format, then the backend (quoted) and the duration in milliseconds:
/// `1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET / HTTP/1.1" 200 2326 "referer" "agent" "http://b:1" 0.734`
pub fn combined_line(e: &Entry) -> String {
    let header = |name: &str| e.head.and_then(|h| h.value(name)).map_or("-".to_string(), escape);
    let bytes = if e.bytes == 0 { "-".to_string() } else { e.bytes.to_string() };
    format!(
        "{} - - [{}] \"{}\" {} {bytes} \"{}\" \"{}\" \"{}\" {:.3}",
        e.client.ip(),
        apache_time(e.time),
        escape(request_line(e).as_bytes()),
        e.status,
        header("referer"),
        header("user-agent"),
        escape(e.backend.unwrap_or("-").as_bytes()),
        e.duration.as_secs_f64() * 1000.0
    )
}

fn request_line(e: &Entry) -> String {
    match e.head {
        Some(h) => format!("{} {} {}", h.method, h.target, h.version.as_str()),
        None if e.tcp => "TCP".to_string(),
        None => "-".to_string(),
    }
}

/// Quotes, backslashes, control characters and non-ASCII bytes as Apache escapes them.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02X}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{Header, Version};
    use std::time::UNIX_EPOCH;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    fn head() -> RequestHead {
        RequestHead {
            method: "GET".into(),
            target: "/a?q=\"x\"".into(),
            version: Version::Http11,
            headers: vec![
                Header { name: "User-Agent".into(), value: b"curl/8.0".to_vec() },
                Header { name: "Referer".into(), value: b"http://r/\xff".to_vec() },
            ]
            .into(),
        }
    }

    fn entry(head: Option<&RequestHead>) -> Entry<'_> {
        Entry {
            time: at(1_000_000_000, 42),
            client: "10.0.0.7:5555".parse().unwrap(),
            head,
            tcp: false,
            status: 200,
            bytes: 1234,
            backend: Some("http://127.0.0.1:5001"),
            duration: Duration::from_micros(1_234_567),
        }
    }

    #[test]
    fn text_lines_keep_the_original_shape() {
        let h = head();
        assert_eq!(
            text_line(&entry(Some(&h))),
            "10.0.0.7:5555 \"GET /a?q=\"x\" HTTP/1.1\" 200 1234 http://127.0.0.1:5001 1234.6ms"
        );
    }

    #[test]
    fn json_lines_are_one_object_with_every_field() {
        let h = head();
        let line = json_line(&entry(Some(&h)));
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2001-09-09T01:46:40.042Z");
        assert_eq!(v["client"], "10.0.0.7:5555");
        assert_eq!(
            (v["method"].as_str(), v["target"].as_str(), v["version"].as_str()),
            (Some("GET"), Some("/a?q=\"x\""), Some("HTTP/1.1"))
        );
        assert_eq!((v["status"].as_u64(), v["bytes"].as_u64()), (Some(200), Some(1234)));
        assert_eq!(v["backend"], "http://127.0.0.1:5001");
        assert_eq!(v["duration_ms"].as_f64(), Some(1234.567));
        assert_eq!(v["mode"], "http");
        let v: serde_json::Value = serde_json::from_str(&json_line(&entry(None))).unwrap();
        assert!(v["method"].is_null() && v["target"].is_null(), "{v}");
    }

    #[test]
    fn tcp_connections_read_tcp_as_their_request_line() {
        let e = Entry { tcp: true, ..entry(None) };
        assert_eq!(text_line(&e), "10.0.0.7:5555 \"TCP\" 200 1234 http://127.0.0.1:5001 1234.6ms");
        let v: serde_json::Value = serde_json::from_str(&json_line(&e)).unwrap();
        assert_eq!((v["mode"].as_str(), v["method"].as_str()), (Some("tcp"), None), "{v}");
        assert!(combined_line(&e).contains("] \"TCP\" 200 1234 "), "{}", combined_line(&e));
    }

    #[test]
    fn combined_lines_follow_apache_with_backend_and_duration() {
        let h = head();
        assert_eq!(
            combined_line(&entry(Some(&h))),
            "10.0.0.7 - - [09/Sep/2001:01:46:40 +0000] \"GET /a?q=\\\"x\\\" HTTP/1.1\" 200 1234 \
             \"http://r/\\xFF\" \"curl/8.0\" \"http://127.0.0.1:5001\" 1234.567"
        );
        let mut e = entry(None);
        e.bytes = 0;
        e.backend = None;
        e.status = 408;
        assert_eq!(
            combined_line(&e),
            "10.0.0.7 - - [09/Sep/2001:01:46:40 +0000] \"-\" 408 - \"-\" \"-\" \"-\" 1234.567"
        );
    }

    #[test]
    fn a_file_log_gets_one_line_per_exchange_after_a_flush() {
        let path = std::env::temp_dir().join(format!("sluice-access-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let config = AccessLogConfig { format: AccessLogFormat::Json, path: Some(path.clone()) };
        let log = AccessLog::open(&config).unwrap();
        let h = head();
        log.write(&config, &entry(Some(&h)));
        log.write(&config, &entry(None));
        log.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(text.lines().count(), 2, "{text}");
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        }
    }

    #[test]
    fn reopening_lets_go_of_a_rotated_file() {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("sluice-rotate-{}.log", std::process::id()));
        let rotated = dir.join(format!("sluice-rotate-{}.log.1", std::process::id()));
        let config = AccessLogConfig { format: AccessLogFormat::Combined, path: Some(path.clone()) };
        let log = AccessLog::open(&config).unwrap();
        log.write(&config, &entry(None));
        log.flush();
        std::fs::rename(&path, &rotated).unwrap();
        log.write(&config, &entry(None));
        log.reopen(&config).unwrap();
        log.write(&config, &entry(None));
        log.flush();
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        let _ = (std::fs::remove_file(&path), std::fs::remove_file(&rotated));
        assert_eq!((old.lines().count(), new.lines().count()), (2, 1), "old:\n{old}\nnew:\n{new}");
    }
}
