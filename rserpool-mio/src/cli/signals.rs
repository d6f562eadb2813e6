//! SIGINT/SIGTERM as a mio event source.

use std::io;

use mio::event::Source;
use mio::{Interest, Registry, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

/// A termination request received by the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TerminationSignal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (`kill`, systemd stop).
    Terminate,
}

/// SIGINT and SIGTERM delivered through the event loop instead of killing the process.
///
/// Built on `signal-hook-mio` (mio 1.x support): the signal handler only writes to a
/// self-pipe, so nothing async-signal-unsafe runs in it. Register the value with a
/// [`mio::Poll`] like a socket (readable interest); when its token fires, call
/// [`TerminationSignals::pending`] until it yields nothing and start the clean shutdown
/// (deregister PEs, final CSP report) — what RSPLIB's break detector does.
///
/// While a value exists the default action of both signals (terminate) is replaced; the
/// event loop is then responsible for exiting.
pub struct TerminationSignals {
    signals: Signals,
}

impl std::fmt::Debug for TerminationSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminationSignals").finish_non_exhaustive()
    }
}

impl TerminationSignals {
    /// Installs handlers for SIGINT and SIGTERM.
    pub fn new() -> io::Result<Self> {
        Ok(TerminationSignals {
            signals: Signals::new([SIGINT, SIGTERM])?,
        })
    }

    /// The signals received since the last call (non-blocking; empty when none).
    pub fn pending(&mut self) -> impl Iterator<Item = TerminationSignal> + '_ {
        self.signals.pending().filter_map(|s| match s {
            SIGINT => Some(TerminationSignal::Interrupt),
            SIGTERM => Some(TerminationSignal::Terminate),
            _ => None,
        })
    }
}

impl Source for TerminationSignals {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.signals.register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.signals.reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.signals.deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::time::{Duration, Instant};

    #[test]
    fn sigterm_wakes_the_poll() {
        let mut poll = Poll::new().unwrap();
        let mut signals = TerminationSignals::new().unwrap();
        poll.registry()
            .register(&mut signals, Token(7), Interest::READABLE)
            .unwrap();
        assert_eq!(signals.pending().count(), 0);
        signal_hook::low_level::raise(SIGTERM).unwrap();
        let mut events = Events::with_capacity(4);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.is_empty() && Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(200)))
                .unwrap();
            if events.iter().any(|e| e.token() == Token(7)) {
                got.extend(signals.pending());
            }
        }
        assert_eq!(got, vec![TerminationSignal::Terminate]);
        poll.registry().deregister(&mut signals).unwrap();
    }
}
