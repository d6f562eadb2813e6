//! Security building blocks: address checks, the peer policy and rate limits.
//!
//! The rules themselves live where the messages are handled (`asap_server.rs`,
//! `enrp.rs`, `takeover.rs`); summarised:
//! * a PE belongs to the association it registered over: while that association is up,
//!   no association from another host may re-register it (one from the same host may: a
//!   restarted PE process, or the PE moving off the association a registrar opened to
//!   take it over), no other association may deregister it, and Endpoint Unreachable
//!   reports cannot remove it while it answers keep-alives;
//! * the user addresses of a registration must be addresses of the registering
//!   association (of at least the configured scope);
//! * ENRP state changes are accepted only from registrars in the peer list, over an
//!   association bound to that registrar; only a PE's home registrar may add, update or
//!   delete it; takeovers follow RFC 5353 §3.5;
//! * every per-association and per-peer structure is bounded.

use core::net::IpAddr;

use super::config::{AddressScope, PeerPolicy};
use crate::Instant;

/// True if `ip` has at least scope `min`.
pub(crate) fn scope_ok(ip: IpAddr, min: AddressScope) -> bool {
    let s = AddressScope::of(ip);
    s != AddressScope::Unusable && s >= min
}

/// Canonical form for comparisons (IPv4-mapped IPv6 → IPv4).
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// True if `ip` is one of `set` (canonical comparison).
pub(crate) fn ip_in(ip: IpAddr, set: &[IpAddr]) -> bool {
    let ip = canonical(ip);
    set.iter().any(|&s| canonical(s) == ip)
}

/// True if the peer policy lets a registrar with these addresses join. `is_static` entries
/// are always accepted.
pub(crate) fn peer_allowed(policy: &PeerPolicy, ips: &[IpAddr], is_static: bool) -> bool {
    if is_static {
        return true;
    }
    match policy {
        PeerPolicy::StaticOnly => false,
        PeerPolicy::Any => true,
        PeerPolicy::AllowedNetworks(nets) => {
            !ips.is_empty() && ips.iter().all(|&ip| nets.iter().any(|n| n.contains(ip)))
        }
    }
}

/// A token bucket: `rate` requests per second, bursts up to one second's worth.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokenBucket {
    /// Tokens in millionths.
    tokens: u64,
    last: Instant,
}

const UNIT: u64 = 1_000_000;

impl TokenBucket {
    pub(crate) fn new(rate: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: u64::from(rate.max(1)) * UNIT,
            last: now,
        }
    }

    /// Takes one token; false if the bucket is empty.
    pub(crate) fn take(&mut self, rate: u32, now: Instant) -> bool {
        let rate = u64::from(rate.max(1));
        let cap = rate * UNIT;
        let dt = now.as_micros().saturating_sub(self.last.as_micros());
        self.last = now.max(self.last);
        // rate tokens per 1e6 µs = rate millionths of a token per µs.
        self.tokens = self.tokens.saturating_add(dt.saturating_mul(rate)).min(cap);
        if self.tokens >= UNIT {
            self.tokens -= UNIT;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registrar::config::IpNetwork;

    #[test]
    fn bucket_limits_rate() {
        let t0 = Instant::from_millis(1000);
        let mut b = TokenBucket::new(2, t0);
        assert!(b.take(2, t0));
        assert!(b.take(2, t0));
        assert!(!b.take(2, t0));
        assert!(!b.take(2, Instant::from_millis(1400)));
        assert!(b.take(2, Instant::from_millis(1500)));
        assert!(!b.take(2, Instant::from_millis(1500)));
        // Refill caps at one second's worth.
        let later = Instant::from_millis(100_000);
        assert!(b.take(2, later));
        assert!(b.take(2, later));
        assert!(!b.take(2, later));
    }

    #[test]
    fn policy() {
        let ip: IpAddr = "10.99.0.12".parse().unwrap();
        assert!(peer_allowed(&PeerPolicy::Any, &[ip], false));
        assert!(!peer_allowed(&PeerPolicy::StaticOnly, &[ip], false));
        assert!(peer_allowed(&PeerPolicy::StaticOnly, &[ip], true));
        let nets =
            PeerPolicy::AllowedNetworks(vec![IpNetwork::new("10.99.0.0".parse().unwrap(), 16)]);
        assert!(peer_allowed(&nets, &[ip], false));
        assert!(!peer_allowed(
            &nets,
            &[ip, "192.168.0.1".parse().unwrap()],
            false
        ));
        assert!(!peer_allowed(&nets, &[], false));
        assert!(scope_ok(ip, AddressScope::SiteLocal));
        assert!(!scope_ok(
            "127.0.0.1".parse().unwrap(),
            AddressScope::SiteLocal
        ));
        assert!(scope_ok(
            "127.0.0.1".parse().unwrap(),
            AddressScope::Loopback
        ));
    }
}

#[cfg(test)]
mod send_tests {
    /// A registrar can move to another thread (drivers on thread pools).
    #[test]
    fn registrar_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<crate::registrar::Registrar>();
        assert_send::<crate::registrar::RegistrarEvent>();
    }
}
