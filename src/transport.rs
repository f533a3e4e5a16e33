//! The byte stream under an exchange: a plain TCP socket, or TLS over one. The same type
//! serves both sides: [`ClientTransport`] (sluice is the TLS server) and [`BackendTransport`]
//! (sluice is the TLS client of an `https://` backend).
//!
//! TLS is rustls driven by hand over the blocking socket, so that the rest of sluice reads
//! and writes a `Transport` as it would a `TcpStream`, with the socket's timeouts. One
//! difference matters: a read that took bytes from the socket but completed no TLS record
//! returns the error [`is_progress_only`] recognises instead of blocking again, so the head
//! reader can ask whether to wait in the waiting room (as it does between the bytes of a
//! plain head) and can count the handshake against the head's deadline. Body relays simply
//! read again.
//!
//! Also the non-blocking steps the tunnel uses ([`Pipe`]), and `close_notify` on the way out.

use crate::http::stream::{is_progress_only, progress_only, TimedRead};
use crate::sys;
use rustls::{ClientConnection, ConnectionCommon, ServerConnection, SideData};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

/// A client connection to sluice.
pub type ClientTransport = Transport<ServerConnection>;
/// A connection from sluice to a backend.
pub type BackendTransport = Transport<ClientConnection>;

pub enum Transport<C> {
    Plain(TcpStream),
    Tls(Box<TlsSocket<C>>),
}

/// A rustls connection and the socket it runs over.
pub struct TlsSocket<C> {
    pub tls: C,
    pub socket: TcpStream,
    /// TLS bytes read from the socket so far (a handshake that never began has none).
    pub received: u64,
}

/// What a non-blocking read found.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadNow {
    Data(usize),
    /// Nothing to read yet.
    Nothing,
    /// The peer finished sending.
    Eof,
}

impl<C> Transport<C> {
    /// The socket under the transport: for timeouts, readiness and shutting down.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(socket) => socket,
            Transport::Tls(tls) => &tls.socket,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }
}

impl<C, S> Transport<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    /// Wraps `socket` in TLS with `tls`, a new connection whose handshake happens on the first
    /// reads and writes.
    pub fn tls(tls: C, socket: TcpStream) -> Transport<C> {
        Transport::Tls(Box::new(TlsSocket { tls, socket, received: 0 }))
    }

    /// Whether decrypted bytes wait inside TLS, which the socket no longer shows as readable.
    pub fn has_buffered_plaintext(&mut self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.tls.process_new_packets().is_ok_and(|state| state.plaintext_bytes_to_read() > 0),
        }
    }

    /// Runs the handshake to its end, blocking under the socket's timeouts.
    pub fn complete_handshake(&mut self) -> io::Result<()> {
        let Transport::Tls(t) = self else { return Ok(()) };
        while t.tls.is_handshaking() {
            t.tls.complete_io(&mut t.socket)?;
        }
        t.flush_tls()
    }

    /// Says goodbye properly: TLS's `close_notify`, best effort, so the peer can tell the end
    /// of the data from a cut connection. Plain sockets need nothing.
    pub fn send_close(&mut self) {
        if let Transport::Tls(t) = self {
            t.tls.send_close_notify();
            let _ = t.flush_tls();
        }
    }
}

impl<C, S> TlsSocket<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    /// Plaintext from TLS: what is already decrypted, or else one read from the socket and
    /// whatever records it completes. A read that completes none says so with
    /// [`is_progress_only`]; the peer's close reads as `Ok(0)`.
    fn read_plaintext(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.tls.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e),
        }
        self.send_pending_now()?;
        let arrived = self.tls.read_tls(&mut self.socket)?;
        self.received += arrived as u64;
        let state = self.tls.process_new_packets().map_err(|e| {
            // Tell the peer why (the alert rustls queued), then give up on the connection.
            let _ = self.tls.write_tls(&mut self.socket);
            io::Error::new(io::ErrorKind::InvalidData, e)
        })?;
        self.send_pending_now()?;
        if state.plaintext_bytes_to_read() > 0 || arrived == 0 || state.peer_has_closed() {
            return match self.tls.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof || e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                other => other,
            };
        }
        Err(progress_only())
    }

    /// Sends everything TLS has for the socket, blocking under its write timeout.
    fn flush_tls(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            self.tls.write_tls(&mut self.socket)?;
        }
        Ok(())
    }

    /// Sends pending TLS bytes; on a non-blocking socket stops when it takes no more (false).
    fn send_pending_now(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl<C, S> Read for Transport<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => socket.read(buf),
            Transport::Tls(t) => t.read_plaintext(buf),
        }
    }
}

impl<C, S> Write for Transport<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => socket.write(buf),
            Transport::Tls(t) => {
                let n = t.tls.writer().write(buf)?;
                t.flush_tls()?;
                Ok(n)
            }
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => socket.write_vectored(bufs),
            Transport::Tls(t) => {
                let n = t.tls.writer().write_vectored(bufs)?;
                t.flush_tls()?;
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(t) => t.flush_tls(),
        }
    }
}

impl<C, S> TimedRead for Transport<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket().set_read_timeout(timeout)
    }

    fn acknowledge_promptly(&self) {
        let _ = sys::quick_ack(self.socket());
    }
}

/// A transport as the tunnel drives it: non-blocking steps on either kind of connection.
pub trait Pipe {
    fn socket(&self) -> &TcpStream;
    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<ReadNow>;
    fn write_now(&mut self, buf: &[u8]) -> io::Result<usize>;
    fn has_pending_output(&self) -> bool;
    fn send_pending_now(&mut self) -> io::Result<bool>;
    fn shutdown_write(&mut self);
}

impl<C, S> Pipe for Transport<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    fn socket(&self) -> &TcpStream {
        Transport::socket(self)
    }

    /// Reads what can be read without waiting (the socket must be non-blocking).
    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<ReadNow> {
        let result = match self {
            Transport::Plain(socket) => socket.read(buf),
            Transport::Tls(t) => t.read_plaintext(buf),
        };
        match result {
            Ok(0) => Ok(ReadNow::Eof),
            Ok(n) => Ok(ReadNow::Data(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || is_progress_only(&e) => Ok(ReadNow::Nothing),
            Err(e) => Err(e),
        }
    }

    /// Writes what the socket takes without waiting (it must be non-blocking): `Ok(0)` when it
    /// takes nothing now. TLS takes the plaintext into its own buffer (bounded by rustls) and
    /// sends as much as the socket accepts.
    fn write_now(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => match socket.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                other => other,
            },
            Transport::Tls(t) => {
                let n = t.tls.writer().write(buf)?;
                t.send_pending_now()?;
                Ok(n)
            }
        }
    }

    /// Whether TLS holds bytes for the socket that it did not take yet.
    fn has_pending_output(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.tls.wants_write(),
        }
    }

    /// Sends pending TLS bytes without waiting; true when none are left.
    fn send_pending_now(&mut self) -> io::Result<bool> {
        match self {
            Transport::Plain(_) => Ok(true),
            Transport::Tls(t) => t.send_pending_now(),
        }
    }

    /// Ends this side's sending: `close_notify` for TLS, then the socket's write half.
    fn shutdown_write(&mut self) {
        self.send_close();
        let _ = self.socket().shutdown(std::net::Shutdown::Write);
    }
}
