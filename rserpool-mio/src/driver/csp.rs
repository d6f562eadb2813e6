//! Component Status Protocol reporter (RSPLIB's monitoring protocol, `shared/spec/csp.md`
//! §4–5): one UDP report to the `cspmonitor` every `-cspinterval`, the first one at once, a
//! final report (flag F) on clean shutdown.
//!
//! The reporter builds and sends the datagrams; what goes into them (status text,
//! workload, association entries) comes from a closure the binary gives the driver
//! ([`super::Driver::enable_csp`]), called with the machine and the driver's association
//! table at every report. The Location text is fixed when the reporter is made; build it
//! with [`component_location`] (hostname + addresses, RSPLIB's format).
//!
//! Differences from RSPLIB, on purpose: one sender socket for all reports instead of a new
//! socket per report (the monitor keys reports by Sender ID, not by source port); a report
//! that cannot be sent right now (`EAGAIN`) is dropped, as a lost datagram would be.

use rserpool_proto::csp::{
    CSP_MAX_ASSOCIATIONS, ComponentId, CspAssociation, CspReport, Location, StatusText, Workload,
};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Where, how often and as whom to report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CspConfig {
    /// The `cspmonitor`'s address (`-cspserver=`).
    pub server: SocketAddr,
    /// Report interval (`-cspinterval=`).
    pub interval: Duration,
    /// Our component id (group + object). Reports of an id whose object is 0 are not sent,
    /// as in RSPLIB.
    pub component: ComponentId,
    /// The Location text ([`component_location`]).
    pub location: Location,
}

impl CspConfig {
    /// A configuration from the parsed `-cspserver=` / `-cspinterval=` options.
    pub fn from_target(
        target: crate::cli::CspTarget,
        component: ComponentId,
        location: Location,
    ) -> Self {
        CspConfig {
            server: target.server,
            interval: target.interval,
            component,
            location,
        }
    }
}

/// The variable part of one report, supplied by the binary at every report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CspStatus {
    /// Status text (e.g. [`rserpool_proto::csp::registrar_status_text`],
    /// [`rserpool_proto::csp::session_status_text`]).
    pub status: StatusText,
    /// Workload ([`Workload::UNKNOWN`] when not applicable).
    pub workload: Workload,
    /// Association entries (at most [`CSP_MAX_ASSOCIATIONS`]; more are cut off).
    pub associations: Vec<CspAssociation>,
}

impl CspStatus {
    /// A status with this text, unknown workload and no associations.
    pub fn text(status: &str) -> Self {
        CspStatus {
            status: StatusText::from(status),
            workload: Workload::UNKNOWN,
            associations: Vec::new(),
        }
    }
}

/// Sends CSP reports over one UDP socket.
#[derive(Debug)]
pub struct CspReporter {
    config: CspConfig,
    socket: UdpSocket,
    /// Time of the first report: the Sender Time Stamp counts from it (RSPLIB 3.5.10).
    first: Option<Instant>,
    next: Option<Instant>,
    sent: u64,
}

impl CspReporter {
    /// A reporter sending from an ephemeral port of the server's address family. The first
    /// report is due at once.
    pub fn new(config: CspConfig) -> io::Result<Self> {
        let bind: SocketAddr = if config.server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(bind)?;
        socket.set_nonblocking(true)?;
        Ok(CspReporter {
            config,
            socket,
            first: None,
            next: Some(Instant::now()),
            sent: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CspConfig {
        &self.config
    }

    /// When the next periodic report is due (`None` after the final report).
    pub fn next_due(&self) -> Option<Instant> {
        self.next
    }

    /// Reports sent so far (final one included).
    pub fn reports_sent(&self) -> u64 {
        self.sent
    }

    fn timestamp_us(&mut self, now: Instant) -> u64 {
        let first = *self.first.get_or_insert(now);
        u64::try_from(now.saturating_duration_since(first).as_micros()).unwrap_or(u64::MAX)
    }

    fn interval_us(&self) -> u32 {
        u32::try_from(self.config.interval.as_micros()).unwrap_or(u32::MAX)
    }

    /// The report for `status` at `now` (pure apart from fixing the time-stamp origin at the
    /// first call).
    pub fn build_report(&mut self, now: Instant, mut status: CspStatus) -> CspReport {
        status.associations.truncate(CSP_MAX_ASSOCIATIONS);
        let mut report = CspReport::new(
            self.config.component,
            self.timestamp_us(now),
            self.interval_us(),
            self.config.location.clone(),
            status.status,
        );
        report.workload = status.workload;
        report.associations = status.associations;
        report
    }

    /// Sends one periodic report and schedules the next one an interval after `now`.
    pub fn report(&mut self, now: Instant, status: CspStatus) -> io::Result<()> {
        if self.next.is_none() {
            return Ok(());
        }
        self.next = Some(now + self.config.interval.max(Duration::from_millis(1)));
        let report = self.build_report(now, status);
        self.send(&report)
    }

    /// Sends the final report (flag F: the monitor forgets us) and stops reporting.
    pub fn report_final(&mut self, now: Instant) -> io::Result<()> {
        if self.next.take().is_none() {
            return Ok(());
        }
        let report = CspReport::final_report(
            self.config.component,
            self.timestamp_us(now),
            self.interval_us(),
        );
        self.send(&report)
    }

    fn send(&mut self, report: &CspReport) -> io::Result<()> {
        if self.config.component.is_unknown() {
            return Ok(());
        }
        let bytes = report
            .to_bytes()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        match self.socket.send_to(&bytes, self.config.server) {
            Ok(_) => {
                self.sent += 1;
                Ok(())
            }
            // A full socket buffer loses this report; the next one supersedes it.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }
}

// --- Location --------------------------------------------------------------------------------

/// This host's name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`, else `localhost`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_owned())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Unusable,
    Site,
    Global,
}

fn plain(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn scope(ip: IpAddr) -> Scope {
    match plain(ip) {
        IpAddr::V4(a) => {
            if a.is_loopback() || a.is_unspecified() || a.is_link_local() || a.is_multicast() {
                Scope::Unusable
            } else if a.is_private() {
                Scope::Site
            } else {
                Scope::Global
            }
        }
        IpAddr::V6(a) => {
            let seg0 = a.segments()[0];
            if a.is_loopback() || a.is_unspecified() || a.is_multicast() || seg0 & 0xffc0 == 0xfe80
            {
                Scope::Unusable
            } else if seg0 & 0xfe00 == 0xfc00 || seg0 & 0xffc0 == 0xfec0 {
                Scope::Site
            } else {
                Scope::Global
            }
        }
    }
}

/// The addresses of this host's interfaces (IPv4 from `/proc/net/fib_trie` local host
/// routes, IPv6 from `/proc/net/if_inet6`), for expanding a wildcard-bound socket.
pub fn interface_addresses() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    if let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") {
        let mut last: Option<Ipv4Addr> = None;
        for line in trie.lines() {
            let t = line.trim();
            if let Some(a) = t.strip_prefix("|-- ") {
                last = a.trim().parse().ok();
            } else if t.starts_with("/32 host LOCAL")
                && let Some(a) = last
                && !out.contains(&IpAddr::V4(a))
            {
                out.push(IpAddr::V4(a));
            }
        }
    }
    if let Ok(v6) = std::fs::read_to_string("/proc/net/if_inet6") {
        for line in v6.lines() {
            let Some(hex) = line.split_whitespace().next() else {
                continue;
            };
            if hex.len() != 32 {
                continue;
            }
            let mut b = [0u8; 16];
            let ok = b.iter_mut().enumerate().all(|(i, byte)| {
                hex.get(2 * i..2 * i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .map(|v| *byte = v)
                    .is_some()
            });
            if ok {
                let a = IpAddr::V6(Ipv6Addr::from(b));
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
    }
    out
}

/// RSPLIB's Location text: `"<hostname>: <addr>[:<port>][, <addr>…]"` — the global-scope
/// addresses of `addrs` (or, when there are none, the site-local ones), IPv4-mapped IPv6
/// printed as IPv4, a wildcard address expanded to the interface addresses, the port of the
/// first address appended when `with_port`; `"<hostname>: (local only)"` when nothing usable
/// remains (e.g. a component bound to loopback only).
pub fn component_location(addrs: &[SocketAddr], with_port: bool) -> Location {
    component_location_with(&hostname(), addrs, with_port, interface_addresses)
}

fn component_location_with(
    host: &str,
    addrs: &[SocketAddr],
    with_port: bool,
    interfaces: impl FnOnce() -> Vec<IpAddr>,
) -> Location {
    let mut ips: Vec<IpAddr> = Vec::new();
    let mut expanded = false;
    let mut interfaces = Some(interfaces);
    for a in addrs {
        if a.ip().is_unspecified() {
            if !expanded && let Some(f) = interfaces.take() {
                expanded = true;
                for ip in f() {
                    let ip = plain(ip);
                    // A v4 wildcard covers v4 only; a v6 wildcard (dual-stack) covers both.
                    if (a.is_ipv6() || ip.is_ipv4()) && !ips.contains(&ip) {
                        ips.push(ip);
                    }
                }
            }
        } else {
            let ip = plain(a.ip());
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }
    let best = ips
        .iter()
        .map(|ip| scope(*ip))
        .max()
        .unwrap_or(Scope::Unusable);
    let chosen: Vec<IpAddr> = if best == Scope::Unusable {
        Vec::new()
    } else {
        ips.into_iter().filter(|ip| scope(*ip) == best).collect()
    };
    let mut text = format!("{host}: ");
    if chosen.is_empty() {
        text.push_str("(local only)");
    }
    let port = addrs.first().map(SocketAddr::port).unwrap_or(0);
    for (i, ip) in chosen.iter().enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        match ip {
            IpAddr::V4(a) => text.push_str(&a.to_string()),
            IpAddr::V6(a) if with_port && i == 0 => text.push_str(&format!("[{a}]")),
            IpAddr::V6(a) => text.push_str(&a.to_string()),
        }
        if with_port && i == 0 {
            text.push_str(&format!(":{port}"));
        }
    }
    Location::from(text.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rserpool_proto::csp::{CSPF_FINAL, ComponentGroup};

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn location_prefers_global_then_site_addresses() {
        let ifs = || vec!["127.0.0.1".parse().unwrap(), "10.1.2.3".parse().unwrap()];
        let l = component_location_with(
            "h",
            &[
                sa("10.0.0.1:3863"),
                sa("198.51.100.7:3863"),
                sa("127.0.0.1:3863"),
            ],
            true,
            ifs,
        );
        assert_eq!(l.to_string_lossy(), "h: 198.51.100.7:3863");
        let l = component_location_with("h", &[sa("0.0.0.0:99")], true, ifs);
        assert_eq!(l.to_string_lossy(), "h: 10.1.2.3:99");
        let l = component_location_with(
            "h",
            &[sa("[::ffff:10.9.9.9]:5"), sa("10.0.0.2:5")],
            false,
            ifs,
        );
        assert_eq!(l.to_string_lossy(), "h: 10.9.9.9, 10.0.0.2");
        let l = component_location_with("h", &[sa("127.0.0.1:1")], true, ifs);
        assert_eq!(l.to_string_lossy(), "h: (local only)");
        let l = component_location_with("h", &[sa("[2001:db8::1]:7")], true, ifs);
        assert_eq!(l.to_string_lossy(), "h: [2001:db8::1]:7");
    }

    #[test]
    fn interface_addresses_include_loopback() {
        // /proc is there on Linux; the loopback address is always configured.
        let a = interface_addresses();
        if std::path::Path::new("/proc/net/fib_trie").exists() {
            assert!(a.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{a:?}");
        }
    }

    #[test]
    fn reports_are_sent_and_decodable() {
        let monitor = UdpSocket::bind("127.0.0.1:0").unwrap();
        monitor
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let id = ComponentId::new(ComponentGroup::PoolElement, 0x1234);
        let mut r = CspReporter::new(CspConfig {
            server: monitor.local_addr().unwrap(),
            interval: Duration::from_millis(500),
            component: id,
            location: Location::from("here: 10.0.0.1:1"),
        })
        .unwrap();
        let t0 = Instant::now();
        assert!(r.next_due().unwrap() <= Instant::now());
        r.report(t0, CspStatus::text("1 Session")).unwrap();
        assert_eq!(r.next_due(), Some(t0 + Duration::from_millis(500)));
        r.report(
            t0 + Duration::from_millis(500),
            CspStatus::text("2 Sessions"),
        )
        .unwrap();
        r.report_final(t0 + Duration::from_millis(700)).unwrap();
        assert_eq!(r.next_due(), None);
        // No more reports after the final one.
        r.report(t0 + Duration::from_secs(1), CspStatus::text("x"))
            .unwrap();
        assert_eq!(r.reports_sent(), 3);
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        for _ in 0..3 {
            let n = monitor.recv(&mut buf).unwrap();
            got.push(CspReport::decode(&buf[..n]).unwrap());
        }
        assert_eq!(got[0].sender_id, id);
        assert_eq!(got[0].sender_timestamp_us, 0);
        assert_eq!(got[0].report_interval_us, 500_000);
        assert_eq!(got[0].status.to_string_lossy(), "1 Session");
        assert_eq!(got[0].location.to_string_lossy(), "here: 10.0.0.1:1");
        assert_eq!(got[1].sender_timestamp_us, 500_000);
        assert_eq!(got[2].flags, CSPF_FINAL);
        assert_eq!(got[2].sender_timestamp_us, 700_000);
    }

    #[test]
    fn unknown_component_sends_nothing() {
        let mut r = CspReporter::new(CspConfig {
            server: sa("127.0.0.1:9"),
            interval: Duration::from_secs(1),
            component: ComponentId::new(ComponentGroup::PoolUser, 0),
            location: Location::empty(),
        })
        .unwrap();
        r.report(Instant::now(), CspStatus::text("x")).unwrap();
        assert_eq!(r.reports_sent(), 0);
    }
}
