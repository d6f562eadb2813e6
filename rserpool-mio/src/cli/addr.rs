//! Transport address options: `addr:port`, `[v6]:port`, bare addresses (the option's
//! default port), host names, and comma lists for SCTP multi-homing
//! (`-asap=10.0.0.1:3863,10.0.1.1`). Also `auto`/`off` announce settings and CIDR networks.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// Well-known ASAP port (RFC 5352 §8.2); also the ASAP announce port.
pub const ASAP_PORT: u16 = 3863;
/// Well-known ENRP port (RFC 5353 §5.2); also the ENRP announce port.
pub const ENRP_PORT: u16 = 9901;
/// RSPLIB's Component Status Protocol port (UDP).
pub const CSP_PORT: u16 = 2960;
/// RSPLIB's ASAP announce group (`-asapannounce=auto`).
pub const ASAP_ANNOUNCE_DEFAULT: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(239, 0, 0, 50)), ASAP_PORT);
/// RSPLIB's ENRP announce group (`-enrpannounce=auto`).
pub const ENRP_ANNOUNCE_DEFAULT: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(239, 0, 0, 51)), ENRP_PORT);

/// A non-empty list of transport addresses of one (multi-homed) endpoint.
///
/// Written `a[:port],b[:port],…`. An element without a port takes the first port written
/// anywhere in the list, or the option's default port if none is. A host name stands for all
/// the addresses it resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressList(Vec<SocketAddr>);

impl AddressList {
    /// A list of one address.
    pub fn single(addr: SocketAddr) -> Self {
        AddressList(vec![addr])
    }

    /// Builds a list; `None` if `addrs` is empty.
    pub fn new(addrs: Vec<SocketAddr>) -> Option<Self> {
        if addrs.is_empty() {
            None
        } else {
            Some(AddressList(addrs))
        }
    }

    /// All addresses, in the order given.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.0
    }

    /// The first (primary) address.
    pub fn primary(&self) -> SocketAddr {
        // The constructors guarantee at least one element.
        self.0
            .first()
            .copied()
            .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))
    }

    /// The port of the primary address (0 means "choose one").
    pub fn port(&self) -> u16 {
        self.primary().port()
    }

    /// The IP addresses without ports.
    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.0.iter().map(SocketAddr::ip)
    }

    /// Parses a list with `default_port` for elements (and lists) without a port.
    pub fn parse(s: &str, default_port: u16) -> Result<Self, AddressError> {
        let mut elements = Vec::new();
        for part in s.split(',') {
            elements.push(parse_element(part.trim())?);
        }
        let list_port = elements.iter().find_map(|e| e.port).unwrap_or(default_port);
        let mut addrs = Vec::new();
        for e in elements {
            let port = e.port.unwrap_or(list_port);
            addrs.extend(e.ips.into_iter().map(|ip| SocketAddr::new(ip, port)));
        }
        if addrs.len() > rserpool_proto::transport::RSPLIB_MAX_ADDRESSES {
            return Err(AddressError::TooMany(addrs.len()));
        }
        AddressList::new(addrs).ok_or_else(|| AddressError::Empty(s.to_owned()))
    }
}

impl fmt::Display for AddressList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// Why an address option could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressError {
    /// Nothing usable was written.
    Empty(String),
    /// Neither an IP address nor a host name.
    Invalid(String),
    /// A port that is not a number in 0..=65535.
    BadPort(String),
    /// The host name did not resolve.
    Unresolved(String, String),
    /// More addresses than RSPLIB's 64 per endpoint.
    TooMany(usize),
    /// A list was given where one address is expected.
    NotSingle(String),
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::Empty(s) => write!(f, "no address in '{s}'"),
            AddressError::Invalid(s) => write!(
                f,
                "'{s}' is not an address (use address:port, [IPv6]:port or host:port)"
            ),
            AddressError::BadPort(s) => write!(f, "bad port in '{s}'"),
            AddressError::Unresolved(s, e) => write!(f, "cannot resolve '{s}': {e}"),
            AddressError::TooMany(n) => write!(
                f,
                "{n} addresses given; at most {} per endpoint",
                rserpool_proto::transport::RSPLIB_MAX_ADDRESSES
            ),
            AddressError::NotSingle(s) => write!(f, "'{s}': only one address is allowed here"),
        }
    }
}

impl std::error::Error for AddressError {}

struct Element {
    ips: Vec<IpAddr>,
    port: Option<u16>,
}

fn parse_port(p: &str, whole: &str) -> Result<u16, AddressError> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddressError::BadPort(whole.to_owned()));
    }
    p.parse::<u16>()
        .map_err(|_| AddressError::BadPort(whole.to_owned()))
}

fn is_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && h.bytes().any(|b| b.is_ascii_alphabetic())
}

fn parse_element(s: &str) -> Result<Element, AddressError> {
    if s.is_empty() {
        return Err(AddressError::Empty(s.to_owned()));
    }
    // [v6] or [v6]:port
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| AddressError::Invalid(s.to_owned()))?;
        let ip: Ipv6Addr = inner
            .parse()
            .map_err(|_| AddressError::Invalid(s.to_owned()))?;
        let port = match after {
            "" => None,
            _ => Some(parse_port(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| AddressError::Invalid(s.to_owned()))?,
                s,
            )?),
        };
        return Ok(Element {
            ips: vec![IpAddr::V6(ip)],
            port,
        });
    }
    // A bare IPv6 address (several colons, no brackets) never carries a port.
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(Element {
            ips: vec![ip],
            port: None,
        });
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(parse_port(p, s)?)),
        Some(_) => return Err(AddressError::Invalid(s.to_owned())),
        None => (s, None),
    };
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(Element {
            ips: vec![IpAddr::V4(ip)],
            port,
        });
    }
    if !is_host_name(host) {
        return Err(AddressError::Invalid(s.to_owned()));
    }
    let resolved = (host, port.unwrap_or(0))
        .to_socket_addrs()
        .map_err(|e| AddressError::Unresolved(host.to_owned(), e.to_string()))?;
    let mut ips: Vec<IpAddr> = Vec::new();
    for a in resolved {
        if !ips.contains(&a.ip()) {
            ips.push(a.ip());
        }
    }
    if ips.is_empty() {
        return Err(AddressError::Unresolved(
            host.to_owned(),
            "no addresses".into(),
        ));
    }
    Ok(Element { ips, port })
}

/// Parses one socket address (the first address of a host name), `default_port` if none.
pub fn parse_socket_addr(s: &str, default_port: u16) -> Result<SocketAddr, AddressError> {
    if s.contains(',') {
        return Err(AddressError::NotSingle(s.to_owned()));
    }
    Ok(AddressList::parse(s, default_port)?.primary())
}

/// clap value parser: an [`AddressList`] with default port `PORT`.
pub fn address_list<const PORT: u16>(s: &str) -> Result<AddressList, String> {
    AddressList::parse(s, PORT).map_err(|e| e.to_string())
}

/// clap value parser: one socket address with default port `PORT`.
pub fn socket_addr<const PORT: u16>(s: &str) -> Result<SocketAddr, String> {
    parse_socket_addr(s, PORT).map_err(|e| e.to_string())
}

/// Local endpoint of a registrar socket (`-asap=`, `-enrp=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindSpec {
    /// `auto`: RSPLIB binds the wildcard address on a random port in 10000..=59999, and
    /// pool elements find the registrar through announces only.
    Auto,
    /// Explicit addresses; a port of 0 means "a random port" as with `auto`.
    Addresses(AddressList),
}

impl BindSpec {
    /// True for `auto`.
    pub fn is_auto(&self) -> bool {
        matches!(self, BindSpec::Auto)
    }
}

/// clap value parser for [`BindSpec`]; addresses without port get port 0 (random), as in
/// RSPLIB.
pub fn bind_spec(s: &str) -> Result<BindSpec, String> {
    if s.trim().eq_ignore_ascii_case("auto") {
        Ok(BindSpec::Auto)
    } else {
        AddressList::parse(s, 0)
            .map(BindSpec::Addresses)
            .map_err(|e| e.to_string())
    }
}

/// An announce channel setting (`-asapannounce=`, `-enrpannounce=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnnounceSpec {
    /// RSPLIB's default multicast group of the channel.
    Auto,
    /// `off` or `none`: no announces.
    Off,
    /// An explicit (multicast or unicast) address.
    Address(SocketAddr),
}

impl AnnounceSpec {
    /// The address to use, given the channel's default group; `None` when off.
    pub fn resolve(self, default: SocketAddr) -> Option<SocketAddr> {
        match self {
            AnnounceSpec::Auto => Some(default),
            AnnounceSpec::Off => None,
            AnnounceSpec::Address(a) => Some(a),
        }
    }
}

/// clap value parser for [`AnnounceSpec`] with default port `PORT`.
pub fn announce_spec<const PORT: u16>(s: &str) -> Result<AnnounceSpec, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("auto") {
        Ok(AnnounceSpec::Auto)
    } else if t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("none") {
        Ok(AnnounceSpec::Off)
    } else {
        parse_socket_addr(t, PORT)
            .map(AnnounceSpec::Address)
            .map_err(|e| e.to_string())
    }
}

/// An IP network in CIDR notation (`10.0.0.0/8`, `fd00::/8`; a bare address is a host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNetwork {
    addr: IpAddr,
    prefix: u8,
}

/// Maps IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) to IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl IpNetwork {
    /// A network; `None` if `prefix` is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(IpNetwork { addr, prefix })
    }

    /// The network address as written.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// True if `ip` lies in this network (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpNetwork {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (a, p) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let addr: IpAddr = a
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("'{s}' is not an IP network (use address/prefix)"))?;
        let max = if canonical(addr).is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .map_err(|_| format!("bad prefix length in '{s}'"))?,
        };
        // An IPv4-mapped network written in IPv6 form has its prefix counted from bit 0
        // of the IPv6 address; convert it to the IPv4 prefix.
        let prefix = match addr {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && p.is_some() => prefix
                .checked_sub(96)
                .ok_or_else(|| format!("bad prefix length in '{s}'"))?,
            _ => prefix,
        };
        IpNetwork::new(addr, prefix).ok_or_else(|| format!("prefix length too long in '{s}'"))
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn single_addresses() {
        assert_eq!(
            AddressList::parse("10.0.0.1:1234", 3863).unwrap().addrs(),
            &[sa("10.0.0.1:1234")]
        );
        assert_eq!(
            AddressList::parse("10.0.0.1", 3863).unwrap().addrs(),
            &[sa("10.0.0.1:3863")]
        );
        assert_eq!(
            AddressList::parse("[::1]:9901", 0).unwrap().addrs(),
            &[sa("[::1]:9901")]
        );
        assert_eq!(
            AddressList::parse("[fe80::1]", 9901).unwrap().addrs(),
            &[sa("[fe80::1]:9901")]
        );
        assert_eq!(
            AddressList::parse("::1", 3863).unwrap().addrs(),
            &[sa("[::1]:3863")]
        );
        assert_eq!(
            AddressList::parse("2001:db8::1:3863", 1).unwrap().addrs(),
            &[sa("[2001:db8::1:3863]:1")],
            "a bare IPv6 address never carries a port"
        );
    }

    #[test]
    fn multihomed_lists() {
        let l = AddressList::parse("10.0.0.1:5000,10.0.1.1,[2001:db8::7]", 3863).unwrap();
        assert_eq!(
            l.addrs(),
            &[
                sa("10.0.0.1:5000"),
                sa("10.0.1.1:5000"),
                sa("[2001:db8::7]:5000")
            ]
        );
        assert_eq!(l.port(), 5000);
        assert_eq!(
            l.to_string(),
            "10.0.0.1:5000,10.0.1.1:5000,[2001:db8::7]:5000"
        );
        // The port may come later in the list.
        let l = AddressList::parse("10.0.0.1, 10.0.1.1:77", 3863).unwrap();
        assert_eq!(l.addrs(), &[sa("10.0.0.1:77"), sa("10.0.1.1:77")]);
        assert_eq!(l.ips().count(), 2);
    }

    #[test]
    fn bad_addresses() {
        for bad in [
            "",
            ",",
            "10.0.0.1:",
            "10.0.0.1:70000",
            "10.0.0.1:x",
            "[::1",
            "[::1]x",
            "[10.0.0.1]:5",
            "1.2.3.4.5:6",
            "a:b:c",
            "white space",
            "10.0.0.1,,10.0.0.2",
        ] {
            assert!(AddressList::parse(bad, 1).is_err(), "{bad:?} must fail");
        }
        let many = vec!["10.0.0.1"; 65].join(",");
        assert_eq!(AddressList::parse(&many, 1), Err(AddressError::TooMany(65)));
        assert!(parse_socket_addr("10.0.0.1,10.0.0.2", 1).is_err());
    }

    #[test]
    fn host_names_resolve() {
        let l = AddressList::parse("localhost:4000", 1).unwrap();
        assert!(
            l.addrs()
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 4000)
        );
        assert!(matches!(
            AddressList::parse("no-such-host.invalid", 1),
            Err(AddressError::Unresolved(..))
        ));
    }

    #[test]
    fn announce_and_bind() {
        assert_eq!(announce_spec::<3863>("auto"), Ok(AnnounceSpec::Auto));
        assert_eq!(announce_spec::<3863>("OFF"), Ok(AnnounceSpec::Off));
        assert_eq!(announce_spec::<3863>("none"), Ok(AnnounceSpec::Off));
        assert_eq!(
            announce_spec::<3863>("239.1.2.3"),
            Ok(AnnounceSpec::Address(sa("239.1.2.3:3863")))
        );
        assert_eq!(
            announce_spec::<3863>("[ff05::1]:4000"),
            Ok(AnnounceSpec::Address(sa("[ff05::1]:4000")))
        );
        assert_eq!(
            AnnounceSpec::Auto.resolve(ASAP_ANNOUNCE_DEFAULT),
            Some(sa("239.0.0.50:3863"))
        );
        assert_eq!(AnnounceSpec::Off.resolve(ASAP_ANNOUNCE_DEFAULT), None);
        assert_eq!(bind_spec("auto"), Ok(BindSpec::Auto));
        assert_eq!(
            bind_spec("10.0.0.1,10.0.0.2"),
            Ok(BindSpec::Addresses(
                AddressList::new(vec![sa("10.0.0.1:0"), sa("10.0.0.2:0")]).unwrap()
            ))
        );
        assert!(bind_spec("bogus address").is_err());
    }

    #[test]
    fn networks() {
        let n: IpNetwork = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains("10.1.200.3".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let all: IpNetwork = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let h: IpNetwork = "192.0.2.7".parse().unwrap();
        assert_eq!(h.prefix(), 32);
        assert!(h.contains("192.0.2.7".parse().unwrap()));
        assert!(!h.contains("192.0.2.8".parse().unwrap()));
        let v6: IpNetwork = "[fd00::]/8".parse().unwrap();
        assert!(v6.contains("fdab::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        let mapped: IpNetwork = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
        let all6: IpNetwork = "::/0".parse().unwrap();
        assert!(all6.contains("2001:db8::1".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0.0/x",
            "nonsense",
            "::ffff:1.2.3.4/8",
        ] {
            assert!(bad.parse::<IpNetwork>().is_err(), "{bad}");
        }
    }
}
