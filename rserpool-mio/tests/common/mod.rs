//! Test harness: two `Transports` (A and B) in one `mio::Poll`, driven in one thread.
#![allow(dead_code)]

use mio::{Events, Poll};
use rserpool_core::AssocId;
use rserpool_mio::transport::{TransportConfig, TransportEvent, Transports};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The directory of the workspace's program binaries (those of this test's build).
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_rspserver"))
        .parent()
        .expect("binary directory")
        .to_path_buf()
}

pub struct Net {
    pub poll: Poll,
    events: Events,
    pub a: Transports,
    pub b: Transports,
    pub ea: Vec<TransportEvent>,
    pub eb: Vec<TransportEvent>,
    /// Called on every step (e.g. to serve a raw socket).
    pub started: Instant,
}

impl Net {
    pub fn new(ca: TransportConfig, cb: TransportConfig) -> Net {
        let poll = Poll::new().unwrap();
        let a = Transports::new(poll.registry(), 1000..2000, ca).unwrap();
        let b = Transports::new(poll.registry(), 2000..3000, cb).unwrap();
        Net {
            poll,
            events: Events::with_capacity(256),
            a,
            b,
            ea: Vec::new(),
            eb: Vec::new(),
            started: Instant::now(),
        }
    }

    /// One event-loop turn: waits at most 10 ms (or until the next transport timer).
    pub fn step(&mut self) {
        let now = Instant::now();
        let mut wait = Duration::from_millis(10);
        for t in [self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
        {
            wait = wait.min(t.saturating_duration_since(now));
        }
        self.poll.poll(&mut self.events, Some(wait)).unwrap();
        let now = Instant::now();
        for ev in self.events.iter() {
            if self.a.owns(ev.token()) {
                self.a.handle_event(ev, now, &mut self.ea);
            } else if self.b.owns(ev.token()) {
                self.b.handle_event(ev, now, &mut self.eb);
            }
        }
        self.a.handle_timeout(now, &mut self.ea);
        self.b.handle_timeout(now, &mut self.eb);
    }

    /// Steps until `f` returns `Some`, failing the test after `limit`.
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut f: impl FnMut(&mut Net) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(x) = f(self) {
                return x;
            }
            assert!(
                start.elapsed() < limit,
                "timed out waiting for {what}; A saw {:?}; B saw {:?}",
                summarize(&self.ea),
                summarize(&self.eb)
            );
            self.step();
        }
    }

    /// Steps for `d`, whatever happens.
    pub fn run_for(&mut self, d: Duration) {
        let start = Instant::now();
        while start.elapsed() < d {
            self.step();
        }
    }
}

pub fn summarize(ev: &[TransportEvent]) -> Vec<String> {
    ev.iter()
        .map(|e| match e {
            TransportEvent::Message {
                assoc,
                ppid,
                stream,
                data,
            } => format!(
                "Message({assoc:?}, ppid {ppid}, stream {stream}, {} bytes)",
                data.len()
            ),
            other => format!("{other:?}"),
        })
        .collect()
}

/// Removes and returns the first event matching `f`.
pub fn take(
    ev: &mut Vec<TransportEvent>,
    f: impl Fn(&TransportEvent) -> bool,
) -> Option<TransportEvent> {
    let i = ev.iter().position(f)?;
    Some(ev.remove(i))
}

pub fn take_up(ev: &mut Vec<TransportEvent>) -> Option<TransportEvent> {
    take(ev, |e| matches!(e, TransportEvent::Up { .. }))
}

pub fn up_assoc(e: &TransportEvent) -> AssocId {
    match e {
        TransportEvent::Up { assoc, .. } => *assoc,
        other => panic!("not Up: {other:?}"),
    }
}

pub fn take_message(ev: &mut Vec<TransportEvent>, of: AssocId) -> Option<(u32, u16, bytes::Bytes)> {
    match take(
        ev,
        |e| matches!(e, TransportEvent::Message { assoc, .. } if *assoc == of),
    )? {
        TransportEvent::Message {
            ppid, stream, data, ..
        } => Some((ppid, stream, data)),
        _ => None,
    }
}

pub fn take_down(
    ev: &mut Vec<TransportEvent>,
    of: AssocId,
) -> Option<rserpool_mio::transport::DownReason> {
    match take(
        ev,
        |e| matches!(e, TransportEvent::Down { assoc, .. } if *assoc == of),
    )? {
        TransportEvent::Down { reason, .. } => Some(reason),
        _ => None,
    }
}

/// A payload of `len` bytes whose content depends on `seed` (first 8 bytes = seed).
pub fn payload(seed: u64, len: usize) -> bytes::Bytes {
    let mut v: Vec<u8> = (0..len)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(seed) as u8)
        .collect();
    if len >= 8 {
        v[..8].copy_from_slice(&seed.to_be_bytes());
    }
    bytes::Bytes::from(v)
}

pub const LIMIT: Duration = Duration::from_secs(5);
