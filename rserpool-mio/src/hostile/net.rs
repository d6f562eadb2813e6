//! A small blocking layer over [`Transports`] for the hostile runner: open associations
//! (kernel SCTP or RTF over TCP), send, and pump events into per-association inboxes until
//! a condition holds or a deadline passes. One thread, no callbacks: the runner calls
//! [`Net::pump`] and then looks at what arrived.

use bytes::Bytes;
use mio::{Events, Poll};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rserpool_core::{AssocId, Protocol};
use rserpool_proto::rtf::{ChannelKind, ChannelKinds};

use crate::transport::{
    DownReason, SendError, SocketId, TransportConfig, TransportEvent, TransportKind, Transports,
};

/// State of an association of a [`Net`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Set-up running.
    Connecting,
    /// Up.
    Up {
        /// Our addresses.
        local: Vec<SocketAddr>,
        /// The peer's addresses.
        peer: Vec<SocketAddr>,
    },
    /// Gone.
    Down(DownReason),
}

/// The association table, inboxes and accepted-association queue over one [`Transports`].
pub struct Net {
    poll: Poll,
    events: Events,
    tr: Transports,
    kind: TransportKind,
    tev: Vec<TransportEvent>,
    state: HashMap<AssocId, LinkState>,
    inbox: HashMap<AssocId, VecDeque<(u32, Bytes)>>,
    accepted: VecDeque<(SocketId, AssocId)>,
    /// Messages received (all associations).
    pub received: u64,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("kind", &self.kind)
            .field("associations", &self.state.len())
            .finish_non_exhaustive()
    }
}

impl Net {
    /// A net on `kind` (SCTP or RTF over TCP).
    pub fn new(kind: TransportKind) -> io::Result<Net> {
        let poll = Poll::new()?;
        let config = TransportConfig {
            // The floods pipeline thousands of messages: let them queue.
            max_queued_bytes: 64 * 1024 * 1024,
            close_linger: Duration::from_secs(1),
            ..TransportConfig::default()
        };
        let tr = Transports::new(poll.registry(), 1..1 << 20, config)?;
        Ok(Net {
            poll,
            events: Events::with_capacity(1024),
            tr,
            kind,
            tev: Vec::new(),
            state: HashMap::new(),
            inbox: HashMap::new(),
            accepted: VecDeque::new(),
            received: 0,
        })
    }

    /// The transport in use.
    pub fn kind(&self) -> TransportKind {
        self.kind
    }

    /// Listens on `addr` for `channels`; returns the socket and its bound address.
    pub fn listen(
        &mut self,
        addr: SocketAddr,
        channels: impl Into<ChannelKinds>,
    ) -> io::Result<(SocketId, SocketAddr)> {
        let id = self.tr.listen(&[addr], self.kind, channels)?;
        let bound = self
            .tr
            .socket_local_addrs(id)?
            .first()
            .copied()
            .unwrap_or(addr);
        Ok((id, bound))
    }

    /// Starts an association (returns at once; see [`Net::wait_up`]).
    pub fn connect(
        &mut self,
        addrs: &[SocketAddr],
        channel: ChannelKind,
        protocol: Protocol,
    ) -> io::Result<AssocId> {
        let a = self.tr.connect(addrs, self.kind, channel, protocol)?;
        self.state.insert(a, LinkState::Connecting);
        Ok(a)
    }

    /// Waits until `assoc` is up (true) or down / `timeout` passed (false).
    pub fn wait_up(&mut self, assoc: AssocId, timeout: Duration) -> io::Result<bool> {
        let end = Instant::now() + timeout;
        loop {
            match self.state.get(&assoc) {
                Some(LinkState::Up { .. }) => return Ok(true),
                Some(LinkState::Down(_)) | None => return Ok(false),
                Some(LinkState::Connecting) => {}
            }
            let now = Instant::now();
            if now >= end {
                return Ok(false);
            }
            self.pump(end - now)?;
        }
    }

    /// Connects and waits: the association, or `None` if it did not come up.
    pub fn connect_wait(
        &mut self,
        addrs: &[SocketAddr],
        channel: ChannelKind,
        protocol: Protocol,
        timeout: Duration,
    ) -> io::Result<Option<AssocId>> {
        let a = match self.connect(addrs, channel, protocol) {
            Ok(a) => a,
            Err(e) if is_refusal(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        if self.wait_up(a, timeout)? {
            Ok(Some(a))
        } else {
            self.close(a, true);
            Ok(None)
        }
    }

    /// Queues one message.
    pub fn send(&mut self, assoc: AssocId, ppid: u32, data: Bytes) -> Result<(), SendError> {
        self.tr.send(assoc, ppid, 0, data)
    }

    /// Bytes waiting in `assoc`'s send queue.
    pub fn queued(&self, assoc: AssocId) -> usize {
        self.tr.queued_bytes(assoc).unwrap_or(0)
    }

    /// Closes an association (forgets its inbox).
    pub fn close(&mut self, assoc: AssocId, abort: bool) {
        self.tr.close(assoc, abort);
        self.state.remove(&assoc);
        self.inbox.remove(&assoc);
    }

    /// The state of an association (`None` once closed by us).
    pub fn state(&self, assoc: AssocId) -> Option<&LinkState> {
        self.state.get(&assoc)
    }

    /// True while `assoc` is up.
    pub fn is_up(&self, assoc: AssocId) -> bool {
        matches!(self.state.get(&assoc), Some(LinkState::Up { .. }))
    }

    /// Our addresses of an association that is up.
    pub fn local_addrs(&self, assoc: AssocId) -> Vec<SocketAddr> {
        match self.state.get(&assoc) {
            Some(LinkState::Up { local, .. }) => local.clone(),
            _ => Vec::new(),
        }
    }

    /// The next message received on `assoc`.
    pub fn take(&mut self, assoc: AssocId) -> Option<(u32, Bytes)> {
        self.inbox.get_mut(&assoc)?.pop_front()
    }

    /// Number of messages waiting on `assoc`.
    pub fn pending(&self, assoc: AssocId) -> usize {
        self.inbox.get(&assoc).map_or(0, VecDeque::len)
    }

    /// The next association accepted by one of our listeners.
    pub fn take_accepted(&mut self) -> Option<(SocketId, AssocId)> {
        self.accepted.pop_front()
    }

    /// Every association we know (for sweeping inboxes).
    pub fn assocs(&self) -> Vec<AssocId> {
        let mut v: Vec<AssocId> = self.state.keys().copied().collect();
        v.sort();
        v
    }

    /// One wake-up: waits at most `timeout` for events and handles them.
    pub fn pump(&mut self, timeout: Duration) -> io::Result<()> {
        let now = Instant::now();
        let mut wait = timeout;
        if let Some(t) = self.tr.poll_timeout() {
            wait = wait.min(t.saturating_duration_since(now));
        }
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        for ev in self.events.iter() {
            self.tr.handle_event(ev, now, &mut self.tev);
        }
        self.tr.handle_timeout(now, &mut self.tev);
        for ev in std::mem::take(&mut self.tev) {
            match ev {
                TransportEvent::Up {
                    assoc,
                    listener,
                    peer_addrs,
                    local_addrs,
                    ..
                } => {
                    self.state.insert(
                        assoc,
                        LinkState::Up {
                            local: local_addrs,
                            peer: peer_addrs,
                        },
                    );
                    if let Some(l) = listener {
                        self.accepted.push_back((l, assoc));
                    }
                }
                TransportEvent::Message {
                    assoc, ppid, data, ..
                } => {
                    self.received += 1;
                    self.inbox.entry(assoc).or_default().push_back((ppid, data));
                }
                TransportEvent::Down { assoc, reason } => {
                    if self.state.contains_key(&assoc) {
                        self.state.insert(assoc, LinkState::Down(reason));
                    }
                }
                TransportEvent::Datagram { .. } => {}
            }
        }
        Ok(())
    }

    /// Pumps without waiting until nothing is ready.
    pub fn drain(&mut self) -> io::Result<()> {
        self.pump(Duration::ZERO)
    }
}

/// True for the errors that mean "nobody listens there".
pub fn is_refusal(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::NotConnected
            | io::ErrorKind::AddrNotAvailable
    ) || e.raw_os_error() == Some(libc::ECONNREFUSED)
}
