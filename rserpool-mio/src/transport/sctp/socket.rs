//! Kernel SCTP sockets: one-to-one style (`SOCK_STREAM`) listening and association sockets.

use super::sys;
use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::OnceLock;

/// Settings of SCTP sockets (`TransportConfig::sctp_for` adapts them to a socket's channel
/// kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SctpOptions {
    /// Outbound streams requested (`SCTP_INITMSG`).
    pub ostreams: u16,
    /// Maximum inbound streams accepted.
    pub instreams: u16,
    /// INIT retransmissions before an association set-up fails (0 = kernel default).
    pub max_init_attempts: u16,
    /// Largest INIT retransmission timeout in ms (0 = kernel default).
    pub max_init_timeo_ms: u16,
    /// Acknowledge every DATA packet at once (`SCTP_DELAYED_SACK`, `sack_freq` 1) instead
    /// of after up to 200 ms. The pool users set it: the kernel of a PE whose process was
    /// killed sends its SHUTDOWN only once its last reply was acknowledged, so a delayed
    /// SACK delays the failover by up to 200 ms (`rsplib-measured.md` defect 1). Costs one
    /// SACK packet per message received that no reply carries.
    pub sack_immediately: bool,
    /// Keep one socket created and configured ahead for the next outgoing association
    /// ([`SctpSocket::spare`]): a connect is then `sctp_connectx` alone, not nine system
    /// calls (socket, options, event subscriptions) between a failover's Handle Resolution
    /// answer and the INIT. The pool users set it; the spare is made well after a connect,
    /// off the failover's path.
    pub spare_socket: bool,
}

impl Default for SctpOptions {
    fn default() -> Self {
        // RSPLIB asks for 1 stream each way on ASAP/ENRP; sessions may use more. 16 costs
        // nothing and covers every RSerPool use.
        SctpOptions {
            ostreams: 16,
            instreams: 16,
            max_init_attempts: 4,
            max_init_timeo_ms: 5000,
            sack_immediately: false,
            spare_socket: false,
        }
    }
}

/// True when this kernel has SCTP: `socket(AF_INET, SOCK_SEQPACKET, IPPROTO_SCTP)` works.
/// Probed once per process.
pub fn sctp_available() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(|| Socket::new(Domain::IPV4, Type::SEQPACKET, Some(Protocol::SCTP)).is_ok())
}

/// An SCTP socket registered with mio (owns the fd; closing it takes it out of the poll set:
/// it must not be duplicated).
#[derive(Debug)]
pub struct SctpSocket {
    sock: Socket,
}

/// True when a socket for `addrs` must be `AF_INET6` (dual-stack: it takes IPv4 addresses
/// too); `AF_INET` otherwise.
pub fn needs_ipv6(addrs: &[SocketAddr]) -> bool {
    addrs.iter().any(SocketAddr::is_ipv6)
}

fn domain(v6: bool) -> Domain {
    if v6 { Domain::IPV6 } else { Domain::IPV4 }
}

fn domain_for(addrs: &[SocketAddr]) -> Domain {
    domain(needs_ipv6(addrs))
}

fn no_address() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "no address")
}

impl SctpSocket {
    fn new(domain: Domain, opts: &SctpOptions) -> io::Result<SctpSocket> {
        // Non-blocking and close-on-exec in the one `socket()` call (socket2 adds
        // SOCK_CLOEXEC): no `fcntl` round trips on the failover path.
        let sock = Socket::new(domain, Type::STREAM.nonblocking(), Some(Protocol::SCTP))?;
        if domain == Domain::IPV6 {
            sock.set_only_v6(false)?;
        }
        let s = SctpSocket { sock };
        s.configure(opts)?;
        Ok(s)
    }

    /// Options every association socket needs (an accepted socket inherits them from its
    /// listener).
    fn configure(&self, opts: &SctpOptions) -> io::Result<()> {
        let fd = self.sock.as_fd();
        sys::set_nodelay(fd)?;
        sys::set_recvrcvinfo(fd)?;
        sys::set_initmsg(
            fd,
            opts.ostreams,
            opts.instreams,
            opts.max_init_attempts,
            opts.max_init_timeo_ms,
        )?;
        if opts.sack_immediately {
            sys::set_sack_immediately(fd)?;
        }
        for t in [
            sys::SCTP_ASSOC_CHANGE,
            sys::SCTP_SHUTDOWN_EVENT,
            sys::SCTP_SEND_FAILED_EVENT,
        ] {
            sys::subscribe(fd, t)?;
        }
        Ok(())
    }

    /// A listening one-to-one socket bound to all of `addrs` (the first by `bind`, the rest
    /// by `sctp_bindx`), all with the same port (the first address's, which may be 0).
    pub fn listen(
        addrs: &[SocketAddr],
        backlog: i32,
        opts: &SctpOptions,
    ) -> io::Result<SctpSocket> {
        Self::listen_with(addrs, backlog, opts, false)
    }

    /// [`SctpSocket::listen`] with `SO_REUSEPORT`, so that associations set up with
    /// [`SctpSocket::connect_from`] can leave from the listener's port: a pool element's
    /// ASAP endpoint must accept associations (takeover keep-alives) on the port it
    /// registered from, as RSPLIB's one-to-many socket does (`asap.md` §5.5). Incoming
    /// INITs find the listener: the kernel looks up only listening one-to-one sockets.
    pub fn listen_shared(
        addrs: &[SocketAddr],
        backlog: i32,
        opts: &SctpOptions,
    ) -> io::Result<SctpSocket> {
        Self::listen_with(addrs, backlog, opts, true)
    }

    /// `addrs` with the port this socket is bound to (the local endpoint of a listener bound
    /// with port 0): what associations set up with [`SctpSocket::connect_from`] leave from.
    pub fn endpoint_of(&self, addrs: &[SocketAddr]) -> io::Result<Vec<SocketAddr>> {
        let port = self
            .local_addrs()?
            .first()
            .map(SocketAddr::port)
            .ok_or_else(|| io::Error::other("SCTP listener without a local address"))?;
        Ok(addrs
            .iter()
            .map(|a| SocketAddr::new(a.ip(), port))
            .collect())
    }

    fn listen_with(
        addrs: &[SocketAddr],
        backlog: i32,
        opts: &SctpOptions,
        reuse_port: bool,
    ) -> io::Result<SctpSocket> {
        if reuse_port && addrs.first().is_some_and(|a| a.port() != 0) {
            // SO_REUSEPORT would let a second listener of the same user share a fixed port
            // (two registrars on 9901, silently load-balanced): a plain listener must be
            // possible there first. (Linux checks listeners against each other at listen(),
            // not at bind().)
            drop(Self::listen_with(addrs, 1, opts, false)?);
        }
        let s = SctpSocket::new(domain_for(addrs), opts)?;
        s.sock.set_reuse_address(true)?;
        if reuse_port {
            s.sock.set_reuse_port(true)?;
        }
        s.bind_all(addrs)?;
        s.sock.listen(backlog)?;
        Ok(s)
    }

    /// Binds to all of `addrs` with the first address's port (`bind` + `sctp_bindx`).
    fn bind_all(&self, addrs: &[SocketAddr]) -> io::Result<()> {
        let first = *addrs.first().ok_or_else(no_address)?;
        self.sock.bind(&SockAddr::from(first))?;
        if addrs.len() > 1 {
            let port = self
                .local_addrs()?
                .first()
                .map(SocketAddr::port)
                .unwrap_or(first.port());
            let rest: Vec<SocketAddr> = addrs
                .get(1..)
                .unwrap_or_default()
                .iter()
                .map(|a| SocketAddr::new(a.ip(), port))
                .collect();
            sys::bindx_add(self.sock.as_fd(), &rest)?;
        }
        Ok(())
    }

    /// Starts a non-blocking association set-up to `addrs` (one multi-homed peer) with
    /// `sctp_connectx`. Completion arrives as `SCTP_COMM_UP` / `SCTP_CANT_STR_ASSOC`.
    pub fn connect(addrs: &[SocketAddr], opts: &SctpOptions) -> io::Result<SctpSocket> {
        // A dual-stack (AF_INET6) socket takes IPv4 peers as `sockaddr_in` as they are.
        SctpSocket::new(domain_for(addrs), opts)?.connect_spare(addrs)
    }

    /// A socket configured as [`SctpSocket::connect`] configures it, not yet connected: for
    /// [`SctpSocket::connect_spare`] later. `v6`: dual-stack `AF_INET6` (takes IPv4 peers
    /// too) instead of `AF_INET`.
    pub fn spare(v6: bool, opts: &SctpOptions) -> io::Result<SctpSocket> {
        SctpSocket::new(domain(v6), opts)
    }

    /// Starts an association to `addrs` on a [`SctpSocket::spare`] socket (one system call).
    pub fn connect_spare(self, addrs: &[SocketAddr]) -> io::Result<SctpSocket> {
        if addrs.is_empty() {
            return Err(no_address());
        }
        sys::connectx(self.sock.as_fd(), addrs)?;
        Ok(self)
    }

    /// [`SctpSocket::connect`] from the local endpoint `local` (all addresses with the first
    /// one's port, `SO_REUSEPORT`): shares the port of a [`SctpSocket::listen_shared`]
    /// listener bound to the same addresses.
    pub fn connect_from(
        local: &[SocketAddr],
        addrs: &[SocketAddr],
        opts: &SctpOptions,
    ) -> io::Result<SctpSocket> {
        if addrs.is_empty() || local.is_empty() {
            return Err(no_address());
        }
        // The socket's family must hold both ends: AF_INET6 (dual-stack) if either is IPv6.
        let s = SctpSocket::new(domain(needs_ipv6(local) || needs_ipv6(addrs)), opts)?;
        s.sock.set_reuse_address(true)?;
        s.sock.set_reuse_port(true)?;
        s.bind_all(local)?;
        sys::connectx(s.sock.as_fd(), addrs)?;
        Ok(s)
    }

    /// Accepts one pending association, `Ok(None)` when there is none. One system call:
    /// `accept4` makes the socket non-blocking and close-on-exec, and the kernel copies the
    /// listener's SCTP options (`sctp_sock_migrate`: no delay, event subscriptions, receive
    /// info, INIT parameters), which [`SctpSocket::listen`] set as every association needs.
    pub fn accept(&self, opts: &SctpOptions) -> io::Result<Option<SctpSocket>> {
        let _ = opts;
        match self.sock.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) {
            Ok((sock, _)) => Ok(Some(SctpSocket { sock })),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `sack_freq` of `SCTP_DELAYED_SACK` (1: every packet acknowledged at once).
    pub fn sack_freq(&self) -> io::Result<u32> {
        sys::sack_freq(self.sock.as_fd())
    }

    /// Sets `sack_freq` of `SCTP_DELAYED_SACK` ([`sys::set_sack_freq`]).
    pub fn set_sack_freq(&self, freq: u32) -> io::Result<()> {
        sys::set_sack_freq(self.sock.as_fd(), freq)
    }

    /// True when an association waits to be accepted on this listener (or, on an association
    /// socket, something to read), without sleeping: see [`sys::readable_now`].
    pub fn readable_now(&self) -> io::Result<bool> {
        sys::readable_now(self.sock.as_fd())
    }

    /// The peer's addresses (`sctp_getpaddrs`).
    pub fn peer_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        sys::peer_addrs(self.sock.as_fd())
    }

    /// Our addresses (`sctp_getladdrs`).
    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        sys::local_addrs(self.sock.as_fd())
    }

    /// Sends one whole message; `WouldBlock` when the send buffer is full.
    pub fn send(&self, ppid: u32, stream: u16, data: &[u8]) -> io::Result<usize> {
        sys::send_message(self.sock.as_fd(), ppid, stream, 0, data)
    }

    /// Sends several whole messages with one `sendmmsg` (see [`sys::send_messages`]).
    pub fn send_batch(&self, msgs: &[sys::OutMessage<'_>]) -> io::Result<usize> {
        sys::send_messages(self.sock.as_fd(), msgs)
    }

    /// Several `recvmsg`s with one `recvmmsg` (see [`sys::recv_messages`]).
    pub fn recv_batch(&self, buf: &mut [u8], out: &mut [sys::Received]) -> io::Result<usize> {
        sys::recv_messages(self.sock.as_fd(), buf, out)
    }

    /// One `recvmsg`; `Ok(None)` at end of stream.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<sys::Received>> {
        sys::recv_message(self.sock.as_fd(), buf)
    }

    /// Graceful shutdown (SHUTDOWN after queued data; one-to-one form of `SCTP_EOF`).
    pub fn shutdown(&self) -> io::Result<()> {
        self.sock.shutdown(std::net::Shutdown::Write)
    }

    /// Arms abort-on-close (`SO_LINGER` 0: closing sends ABORT).
    pub fn set_abort_on_close(&self) -> io::Result<()> {
        self.sock.set_linger(Some(std::time::Duration::ZERO))
    }

    /// Makes sure one `sendmsg` of `len` bytes is allowed: Linux refuses a message longer
    /// than the socket's send buffer (`EMSGSIZE`, RFC 6458 §7.1.7 reading), so raise
    /// `SO_SNDBUF` (capped by `net.core.wmem_max`), then try `SO_SNDBUFFORCE` (needs
    /// `CAP_NET_ADMIN`). Returns the send buffer size in force afterwards.
    pub fn ensure_send_buffer(&self, len: usize) -> io::Result<usize> {
        let cur = self.sock.send_buffer_size()?;
        if cur >= len {
            return Ok(cur);
        }
        let want = len / 2 + 1; // the kernel doubles the value set
        let _ = self.sock.set_send_buffer_size(want);
        let cur = self.sock.send_buffer_size()?;
        if cur >= len {
            return Ok(cur);
        }
        let v = i32::try_from(want).unwrap_or(i32::MAX);
        let _ = sys::set_int(self.sock.as_fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, v);
        self.sock.send_buffer_size()
    }

    /// Pending socket error (`SO_ERROR`).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.sock.take_error()
    }
}

/// The socket's fd, for other reactors (e.g. `async_io::Async<SctpSocket>`). Still owned
/// by the `SctpSocket`.
impl AsFd for SctpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Source for SctpSocket {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.sock.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.sock.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.sock.as_raw_fd()).deregister(registry)
    }
}
