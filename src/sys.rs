//! The only file that talks to the operating system below std: an epoll set for the waiting
//! room, `poll(2)` for tunnels and acceptors, a one-call non-blocking peek for idle backend
//! connections, the pipe response bodies are spliced through, raising the open-file limit at
//! start, a file system's size for `host`, and the descriptors an upgrade hands to the next
//! process (taking inherited ones, keeping them open across `exec`). Each `unsafe` block is
//! one system call on values it owns, with the reason it is sound beside it.
#![allow(unsafe_code)]

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::Duration;

/// An epoll set whose events carry a caller-chosen token.
pub struct Epoll {
    fd: OwnedFd,
}

/// Readable, or the peer hung up; one-shot, so a ready connection is reported once.
const PARK_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32;

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new descriptor
        // that nothing else owns, so OwnedFd may take it.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by no one else.
        Ok(Epoll { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Watches `fd` until it is readable once, reporting `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token)
    }

    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events: PARK_EVENTS, u64: token };
        // SAFETY: `event` lives across the call; the kernel copies it and keeps no pointer.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` and appends the tokens of ready descriptors to `ready`.
    pub fn wait(&self, ready: &mut Vec<u64>, timeout: Duration) -> io::Result<()> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
        let millis = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: the pointer and length describe `events`, which outlives the call; the
        // kernel writes at most that many entries.
        let n =
            unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), events.len() as libc::c_int, millis) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
        }
        ready.extend(events[..n as usize].iter().map(|e| e.u64));
        Ok(())
    }
}

/// What to wait for on one socket in [`poll`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
}

/// Waits up to `timeout` until any of `sockets` is ready as asked, or has hung up or failed
/// (the caller then finds out which by trying). Returns at once when one already is.
pub fn poll(sockets: &[(&TcpStream, Interest)], timeout: Duration) -> io::Result<()> {
    let mut fds = [libc::pollfd { fd: -1, events: 0, revents: 0 }; 4];
    let n = sockets.len().min(fds.len());
    for (slot, (socket, interest)) in fds.iter_mut().zip(sockets) {
        let read = if interest.read { libc::POLLIN } else { 0 };
        let write = if interest.write { libc::POLLOUT } else { 0 };
        *slot = libc::pollfd { fd: socket.as_raw_fd(), events: read | write, revents: 0 };
    }
    let millis = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: the pointer and count describe the first `n` entries of `fds`, which outlive the
    // call; each descriptor belongs to a socket borrowed for the call.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, millis) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
    }
    Ok(())
}

/// Blocks until one of `fds` is readable (or hung up); returns which, one flag per descriptor.
pub fn wait_readable(fds: &[BorrowedFd<'_>; 2]) -> io::Result<[bool; 2]> {
    let mut polled = fds.map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 });
    // SAFETY: the pointer and count describe `polled`, which outlives the call; each descriptor
    // is borrowed for the call.
    let rc = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, -1) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok([false; 2]) } else { Err(e) };
    }
    Ok(polled.map(|p| p.revents != 0))
}

/// Takes descriptor `fd`, inherited from the process that started this one, as a listening
/// TCP socket: it must be open, a socket, of the stream type and listening. Marks it
/// close-on-exec, as every descriptor sluice opens is.
pub fn inherited_listener(fd: RawFd) -> io::Result<TcpListener> {
    check_open(fd)?;
    let listening = socket_option(fd, libc::SO_ACCEPTCONN)?;
    let kind = socket_option(fd, libc::SO_TYPE)?;
    let domain = socket_option(fd, libc::SO_DOMAIN)?;
    if kind != libc::SOCK_STREAM || listening != 1 || !matches!(domain, libc::AF_INET | libc::AF_INET6) {
        return Err(io::Error::other("not a listening TCP socket"));
    }
    set_close_on_exec(fd)?;
    // SAFETY: `fd` is open and a listening socket that this process inherited; the caller takes
    // each inherited number once, so nothing else owns it.
    Ok(unsafe { TcpListener::from_raw_fd(fd) })
}

/// Takes descriptor `fd`, inherited from the process that started this one, as one end of a
/// Unix stream socket pair (the upgrade's readiness channel). Marks it close-on-exec.
pub fn inherited_unix_stream(fd: RawFd) -> io::Result<UnixStream> {
    check_open(fd)?;
    if socket_option(fd, libc::SO_DOMAIN)? != libc::AF_UNIX {
        return Err(io::Error::other("not a Unix socket"));
    }
    set_close_on_exec(fd)?;
    // SAFETY: `fd` is open and a Unix socket this process inherited; it is taken once.
    Ok(unsafe { UnixStream::from_raw_fd(fd) })
}

fn check_open(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFD takes no pointer; on a descriptor that is not open it fails with EBADF.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::other(format!("descriptor {fd} is not open")));
    }
    Ok(())
}

fn socket_option(fd: RawFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the pointers describe `value` and `len`, which outlive the call; the kernel writes
    // at most `len` bytes.
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, option, (&mut value as *mut libc::c_int).cast(), &mut len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

fn set_close_on_exec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD takes an integer, no pointer.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Starts `command` with the descriptors `keep` left open in the new program (their
/// close-on-exec flag is cleared in the child, between fork and exec, so the parent's own
/// descriptors keep theirs and no other child inherits them).
pub fn spawn_keeping(command: &mut Command, keep: Vec<RawFd>) -> io::Result<Child> {
    // SAFETY: the closure runs in the child between fork and exec; it only calls fcntl, which
    // is async-signal-safe, and allocates nothing. The descriptors stay open in the parent
    // until `spawn` returns, so they are open in the child.
    unsafe {
        command.pre_exec(move || {
            for &fd in &keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command.spawn()
}

/// CLOCK_MONOTONIC in microseconds, as systemd's `MONOTONIC_USEC` wants it.
pub fn monotonic_micros() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64).saturating_mul(1_000_000).saturating_add(now.tv_nsec as u64 / 1_000)
}

/// Asks process `pid` to stop (SIGTERM).
pub fn terminate(pid: u32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: kill takes no pointers.
    if unsafe { libc::kill(pid, libc::SIGTERM) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Looks at the next byte of `stream` without taking it and without waiting: `Ok(0)` when the
/// peer has closed, `Ok(1)` when a byte is waiting, an error of kind `WouldBlock` when
/// nothing is. One system call (`recv` with `MSG_PEEK | MSG_DONTWAIT`), where std needs three
/// (non-blocking on, peek, non-blocking off).
pub fn peek_now(stream: &TcpStream) -> io::Result<usize> {
    peek_into_now(stream, &mut [0u8])
}

/// Copies the bytes waiting on `stream` into `buf` (as many as fit) without taking them and
/// without waiting, as [`peek_now`] does for one byte.
pub fn peek_into_now(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT;
    // SAFETY: the pointer and length describe `buf`, which outlives the call; the descriptor
    // belongs to `stream`, which is borrowed for the call.
    let n = unsafe { libc::recv(stream.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Asks the kernel to acknowledge what arrives on `stream` at once rather than delaying the
/// acknowledgement (`TCP_QUICKACK`; the kernel returns to delaying on its own later, so it is
/// asked again before each read it should apply to).
pub fn quick_ack(stream: &TcpStream) -> io::Result<()> {
    let on: libc::c_int = 1;
    let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the pointer and size describe `on`, which outlives the call; the descriptor
    // belongs to the borrowed stream.
    let done = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&on as *const libc::c_int).cast(),
            size,
        )
    };
    if done < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bytes written to `stream` that the peer has not acknowledged yet (`SIOCOUTQ`): what sits
/// in the kernel's send buffer. Written minus this is what the peer has really taken.
pub fn unsent_bytes(stream: &TcpStream) -> io::Result<usize> {
    let mut unsent: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ for sockets) writes one c_int through the pointer, which
    // points at `unsent` and outlives the call; the descriptor belongs to the borrowed stream.
    let done = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut unsent as *mut libc::c_int) };
    if done < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(unsent).unwrap_or(0))
}

/// A pipe that response bodies pass through on their way from one socket to another with
/// `splice(2)`: the kernel moves references to the received pages into it and out again, so
/// the bytes are never copied into user space.
pub struct SplicePipe {
    read_end: OwnedFd,
    write_end: OwnedFd,
    capacity: usize,
}

/// The size asked for a splice pipe: fewer, larger moves than the default 64 KiB. An
/// unprivileged process past its share of pipe memory keeps the default.
const SPLICE_PIPE_BYTES: libc::c_int = 256 * 1024;

impl SplicePipe {
    pub fn new() -> io::Result<SplicePipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into `fds`, which outlives the call.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just opened by pipe2 and are owned by nothing else.
        let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ takes an int and changes only the size of the pipe, owned
        // here; it returns the size the pipe now has.
        let mut capacity = unsafe { libc::fcntl(write_end.as_raw_fd(), libc::F_SETPIPE_SZ, SPLICE_PIPE_BYTES) };
        if capacity <= 0 {
            // SAFETY: F_GETPIPE_SZ takes no argument and reads the size of the pipe, owned here.
            capacity = unsafe { libc::fcntl(write_end.as_raw_fd(), libc::F_GETPIPE_SZ) };
        }
        if capacity <= 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SplicePipe { read_end, write_end, capacity: capacity as usize })
    }

    /// The most bytes one move into the pipe takes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Moves up to `len` received bytes from `from` into the pipe, waiting as a read on the
    /// socket would (its read timeout applies). `Ok(0)`: the peer finished sending.
    pub fn fill_from(&self, from: &TcpStream, len: usize) -> io::Result<usize> {
        splice(from.as_raw_fd(), self.write_end.as_raw_fd(), len, libc::SPLICE_F_MOVE)
    }

    /// Moves up to `len` bytes from the pipe into `to`, waiting as a write to the socket
    /// would (its write timeout applies). `more`: further bytes follow at once.
    pub fn drain_into(&self, to: &TcpStream, len: usize, more: bool) -> io::Result<usize> {
        let flags = libc::SPLICE_F_MOVE | if more { libc::SPLICE_F_MORE } else { 0 };
        splice(self.read_end.as_raw_fd(), to.as_raw_fd(), len, flags)
    }
}

fn splice(from: RawFd, to: RawFd, len: usize, flags: libc::c_uint) -> io::Result<usize> {
    // SAFETY: both descriptors are borrowed from live owners for the call; the null offsets
    // mean "the descriptor's own position", which splice requires for sockets and pipes.
    let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The soft and hard limits on open files, before and after raising the soft one.
pub struct FileLimit {
    pub before: u64,
    pub after: u64,
    pub hard: u64,
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, so many connections can be open.
pub fn raise_open_file_limit() -> io::Result<FileLimit> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a valid rlimit; the kernel only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(FileLimit { before, after: limit.rlim_cur, hard: limit.rlim_max })
}

/// The soft RLIMIT_NOFILE: how many files this process may have open.
pub fn open_file_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit.rlim_cur)
}

/// The soft and hard RLIMIT_NOFILE, in that order.
pub fn open_file_limits() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// A file system's size and the bytes unprivileged users may still write, in that order.
pub fn file_system_space(path: &std::path::Path) -> io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string and `stats` points to writable memory of
    // the right type, both alive for the duration of the call.
    if unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `stats` completely.
    let stats = unsafe { stats.assume_init() };
    // Block counts and sizes are 64-bit on the 64-bit Linux sluice builds for.
    let block = stats.f_frsize;
    Ok((stats.f_blocks.saturating_mul(block), stats.f_bavail.saturating_mul(block)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn reports_a_descriptor_once_when_it_becomes_readable() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let epoll = Epoll::new().unwrap();
        epoll.add(server.as_raw_fd(), 7).unwrap();
        let mut ready = Vec::new();
        epoll.wait(&mut ready, Duration::from_millis(20)).unwrap();
        assert!(ready.is_empty());
        client.write_all(b"x").unwrap();
        epoll.wait(&mut ready, Duration::from_secs(5)).unwrap();
        assert_eq!(ready, [7]);
        ready.clear();
        client.write_all(b"y").unwrap();
        epoll.wait(&mut ready, Duration::from_millis(20)).unwrap();
        assert!(ready.is_empty(), "one-shot: reported only once");
        epoll.remove(server.as_raw_fd()).unwrap();
    }

    #[test]
    fn bytes_the_peer_has_not_taken_are_counted_as_unsent() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        assert_eq!(unsent_bytes(&server).unwrap(), 0);
        server.set_nonblocking(true).unwrap();
        let chunk = [b'x'; 64 * 1024];
        let mut written = 0;
        while let Ok(n) = server.write(&chunk) {
            written += n;
            assert!(written < 1 << 30, "the client never stopped taking bytes");
        }
        let unsent = unsent_bytes(&server).unwrap();
        assert!(unsent > 0 && unsent <= written, "{unsent} unsent of {written} written");
        drop(client);
    }

    #[test]
    fn peeking_tells_nothing_waiting_from_a_byte_from_a_close() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let waiting = peek_now(&server).map_err(|e| e.kind());
        assert_eq!(waiting, Err(io::ErrorKind::WouldBlock));
        client.write_all(b"x").unwrap();
        drop(client);
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut first = [0u8; 1];
        assert_eq!(server.peek(&mut first).unwrap(), 1, "wait until the byte is there");
        assert_eq!(peek_now(&server).unwrap(), 1, "peeking leaves the byte in place");
        assert_eq!((&server).read(&mut first).unwrap(), 1);
        assert_eq!(peek_now(&server).unwrap(), 0, "then the close");
    }

    #[test]
    fn the_root_file_system_has_a_size() {
        let (total, available) = file_system_space(std::path::Path::new("/")).unwrap();
        assert!(total > 0 && available <= total, "{total} {available}");
        assert!(file_system_space(std::path::Path::new("/no/such/dir")).is_err());
    }

    #[test]
    fn the_soft_open_file_limit_reaches_the_hard_one() {
        let limit = raise_open_file_limit().unwrap();
        assert_eq!(limit.after, limit.hard);
        assert!(limit.after >= limit.before);
    }
}
