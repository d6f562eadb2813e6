//! UDP sockets of the transports: opening one with [`UdpOptions`], and the queue of
//! datagrams that waits while the socket buffer is full.

use super::{SendError, UdpOptions};
use bytes::Bytes;
use socket2::{Domain, Socket, Type};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

impl UdpOptions {
    /// A non-blocking, close-on-exec UDP socket with these options, bound to `addr`.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
        let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
        sock.set_nonblocking(true)?;
        sock.set_cloexec(true)?;
        if self.reuse_addr {
            sock.set_reuse_address(true)?;
        }
        if self.reuse_port {
            sock.set_reuse_port(true)?;
        }
        if let Some(ttl) = self.multicast_ttl {
            if addr.is_ipv4() {
                sock.set_multicast_ttl_v4(ttl)?;
            } else {
                sock.set_multicast_hops_v6(ttl)?;
            }
        }
        if let Some(l) = self.multicast_loop {
            if addr.is_ipv4() {
                sock.set_multicast_loop_v4(l)?;
            } else {
                sock.set_multicast_loop_v6(l)?;
            }
        }
        if let Some(ifa) = self.multicast_if_v4 {
            sock.set_multicast_if_v4(&ifa)?;
        }
        if let Some(ifi) = self.multicast_if_v6 {
            sock.set_multicast_if_v6(ifi)?;
        }
        sock.bind(&addr.into())?;
        Ok(sock.into())
    }
}

/// Datagrams waiting for room in a UDP socket's buffer, in order, with their byte count.
#[derive(Debug, Default)]
pub(crate) struct UdpQueue {
    queue: VecDeque<(SocketAddr, Bytes)>,
    queued: usize,
}

impl UdpQueue {
    /// Queues a datagram to `to`, unless `cap` bytes would be exceeded (one datagram is
    /// always taken into an empty queue).
    pub(crate) fn push(
        &mut self,
        cap: usize,
        to: SocketAddr,
        data: Bytes,
    ) -> Result<(), SendError> {
        if self.queued > 0 && self.queued + data.len() > cap {
            return Err(SendError::QueueFull {
                queued: self.queued,
                cap,
            });
        }
        self.queued += data.len();
        self.queue.push_back((to, data));
        Ok(())
    }

    /// Sends the queued datagrams in order with `send_to` until the queue is empty (true) or
    /// the socket would block (false). A datagram the socket refuses for any other reason
    /// (unreachable destination, too large, ...) is dropped, as UDP would.
    pub(crate) fn flush(
        &mut self,
        mut send_to: impl FnMut(&[u8], SocketAddr) -> io::Result<usize>,
    ) -> bool {
        while let Some((to, data)) = self.queue.front() {
            match send_to(data, *to) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {}
            }
            self.drop_front();
        }
        true
    }

    /// Drops the first datagram (sent, or refused by the socket).
    fn drop_front(&mut self) {
        if let Some((_, data)) = self.queue.pop_front() {
            self.queued = self.queued.saturating_sub(data.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    #[test]
    fn the_queue_keeps_order_and_its_cap() {
        let mut q = UdpQueue::default();
        // One datagram always fits into an empty queue, even above the cap.
        q.push(4, addr(), Bytes::from_static(b"hello")).unwrap();
        assert!(matches!(
            q.push(4, addr(), Bytes::from_static(b"x")),
            Err(SendError::QueueFull { queued: 5, cap: 4 })
        ));
        q.push(100, addr(), Bytes::from_static(b"world")).unwrap();
        let mut sent = Vec::new();
        // The socket takes one datagram, then would block.
        let done = q.flush(|d, _| {
            if sent.is_empty() {
                sent.push(d.to_vec());
                Ok(d.len())
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            }
        });
        assert!(!done);
        assert_eq!(sent, vec![b"hello".to_vec()]);
        // A refused datagram is dropped; the queue empties.
        assert!(q.flush(|_, _| Err(io::ErrorKind::ConnectionRefused.into())));
        assert!(q.push(1, addr(), Bytes::from_static(b"again")).is_ok());
    }

    #[test]
    fn bind_applies_the_options() {
        let o = UdpOptions {
            reuse_addr: true,
            multicast_ttl: Some(3),
            multicast_loop: Some(false),
            ..UdpOptions::default()
        };
        let s = o.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(s.multicast_ttl_v4().unwrap(), 3);
        assert!(!s.multicast_loop_v4().unwrap());
        assert!(socket2::SockRef::from(&s).reuse_address().unwrap());
    }
}
