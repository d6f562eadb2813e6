//! Unit tests of the pcap module: formats, link types, IP, SCTP and TCP reassembly.

use super::*;
use proptest::prelude::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn t(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

const PE: &str = "10.0.0.4:40000";
const PR: &str = "10.0.0.1:3863";

/// Runs `f` on a writer, then returns the raw IP packets it wrote with their timestamps.
fn packets(f: impl FnOnce(&mut PcapWriter<Vec<u8>>)) -> Vec<(Duration, Vec<u8>)> {
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    f(&mut w);
    PcapReader::new(w.into_inner().unwrap().into())
        .unwrap()
        .map(|f| {
            let f = f.unwrap();
            assert_eq!(f.link_type, link_type::RAW);
            (f.timestamp, f.data.to_vec())
        })
        .collect()
}

/// A classic pcap of `frames` (captured bytes, original length).
fn classic(link: u32, le: bool, nanos: bool, frames: &[(Duration, Vec<u8>, u32)]) -> Vec<u8> {
    let u32b = |v: u32| if le { v.to_le_bytes() } else { v.to_be_bytes() };
    let u16b = |v: u16| if le { v.to_le_bytes() } else { v.to_be_bytes() };
    let mut o = Vec::new();
    o.extend(u32b(if nanos { 0xA1B2_3C4D } else { 0xA1B2_C3D4 }));
    o.extend(u16b(2));
    o.extend(u16b(4));
    o.extend([0; 8]);
    o.extend(u32b(65535));
    o.extend(u32b(link));
    for (ts, data, orig) in frames {
        o.extend(u32b(ts.as_secs() as u32));
        o.extend(u32b(if nanos {
            ts.subsec_nanos()
        } else {
            ts.subsec_micros()
        }));
        o.extend(u32b(data.len() as u32));
        o.extend(u32b(*orig));
        o.extend(data);
    }
    o
}

fn plain(frames: Vec<(Duration, Vec<u8>)>) -> Vec<(Duration, Vec<u8>, u32)> {
    frames
        .into_iter()
        .map(|(t, d)| {
            let n = d.len() as u32;
            (t, d, n)
        })
        .collect()
}

fn ng_block(le: bool, ty: u32, body: &[u8]) -> Vec<u8> {
    let u32b = |v: u32| if le { v.to_le_bytes() } else { v.to_be_bytes() };
    let mut body = body.to_vec();
    body.resize(body.len().next_multiple_of(4), 0);
    let len = body.len() as u32 + 12;
    let mut o = Vec::new();
    o.extend(u32b(ty));
    o.extend(u32b(len));
    o.extend(body);
    o.extend(u32b(len));
    o
}

/// A pcapng file: SHB, an unrelated block, IDB (optional `if_tsresol`), then EPBs or SPBs.
fn pcapng(
    le: bool,
    link: u16,
    tsresol: Option<u8>,
    spb: bool,
    frames: &[(Duration, Vec<u8>)],
) -> Vec<u8> {
    let u32b = |v: u32| if le { v.to_le_bytes() } else { v.to_be_bytes() };
    let u16b = |v: u16| if le { v.to_le_bytes() } else { v.to_be_bytes() };
    let mut shb = Vec::new();
    shb.extend(u32b(0x1A2B_3C4D));
    shb.extend(u16b(1));
    shb.extend(u16b(0));
    shb.extend((-1i64).to_le_bytes());
    let mut o = ng_block(le, 0x0A0D_0D0A, &shb);
    // A Name Resolution Block (type 4) with just the end marker: skipped.
    o.extend(ng_block(le, 4, &[0, 0, 0, 0]));
    let mut idb = Vec::new();
    idb.extend(u16b(link));
    idb.extend(u16b(0));
    idb.extend(u32b(0));
    if let Some(r) = tsresol {
        idb.extend(u16b(9));
        idb.extend(u16b(1));
        idb.extend([r, 0, 0, 0]);
    }
    idb.extend([0, 0, 0, 0]);
    o.extend(ng_block(le, 1, &idb));
    let units: u128 = match tsresol {
        None => 1_000_000,
        Some(r) if r & 0x80 == 0 => 10u128.pow(u32::from(r)),
        Some(r) => 1u128 << (r & 0x7f),
    };
    for (ts, data) in frames {
        let mut b = Vec::new();
        if spb {
            b.extend(u32b(data.len() as u32));
            b.extend(data);
            o.extend(ng_block(le, 3, &b));
        } else {
            let v = (ts.as_nanos() * units / 1_000_000_000) as u64;
            b.extend(u32b(0));
            b.extend(u32b((v >> 32) as u32));
            b.extend(u32b(v as u32));
            b.extend(u32b(data.len() as u32));
            b.extend(u32b(data.len() as u32));
            b.extend(data);
            o.extend(ng_block(le, 6, &b));
        }
    }
    o
}

fn read(file: Vec<u8>) -> Capture {
    Capture::read(file.into(), &CaptureConfig::default()).unwrap()
}

fn read_with(file: Vec<u8>, cfg: &CaptureConfig) -> Capture {
    Capture::read(file.into(), cfg).unwrap()
}

/// (transport, src, dst, payload) of each message.
fn summary(c: &Capture) -> Vec<(Transport, SocketAddr, SocketAddr, Vec<u8>)> {
    c.messages
        .iter()
        .map(|m| (m.transport, m.src, m.dst, m.payload.to_vec()))
        .collect()
}

/// A few messages over SCTP, UDP (v4 and v6): the reference traffic for format tests.
fn sample() -> Vec<(Duration, Vec<u8>)> {
    packets(|w| {
        w.write_sctp_data(
            t(1_000_001),
            sa(PE),
            sa(PR),
            7,
            1,
            0,
            11,
            b"\x01\x00\x00\x08abcd",
        )
        .unwrap();
        w.write_udp(
            t(1_500_250),
            sa(PR),
            sa("239.0.0.50:3863"),
            b"\x0a\x00\x00\x08\x01\x02\x03\x04",
        )
        .unwrap();
        w.write_udp(
            t(2_000_000),
            sa("[fd00::1]:9901"),
            sa("[ff05::51]:9901"),
            b"\x01\x00\x00\x04",
        )
        .unwrap();
        w.write_sctp_data(
            t(2_000_999),
            sa("[fd00::4]:5000"),
            sa("[fd00::1]:9901"),
            9,
            5,
            2,
            12,
            b"xyz",
        )
        .unwrap();
    })
}

fn expected_sample() -> Vec<(Transport, SocketAddr, SocketAddr, Vec<u8>)> {
    vec![
        (
            Transport::Sctp {
                ppid: 11,
                stream: 0,
            },
            sa(PE),
            sa(PR),
            b"\x01\x00\x00\x08abcd".to_vec(),
        ),
        (
            Transport::Udp,
            sa(PR),
            sa("239.0.0.50:3863"),
            b"\x0a\x00\x00\x08\x01\x02\x03\x04".to_vec(),
        ),
        (
            Transport::Udp,
            sa("[fd00::1]:9901"),
            sa("[ff05::51]:9901"),
            b"\x01\x00\x00\x04".to_vec(),
        ),
        (
            Transport::Sctp {
                ppid: 12,
                stream: 2,
            },
            sa("[fd00::4]:5000"),
            sa("[fd00::1]:9901"),
            b"xyz".to_vec(),
        ),
    ]
}

fn assert_clean(c: &Capture) {
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert!(c.skipped.is_empty(), "{:?}", c.skipped);
}

#[test]
fn crc32c_check_values() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    // RFC 3720 B.4.
    assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
    let inc: Vec<u8> = (0..32).collect();
    assert_eq!(crc32c(&inc), 0x46DD_794E);
    // Shorter than a common header: checksummed as it is, never a panic.
    assert_eq!(sctp_checksum(&[1, 2]), crc32c(&[1, 2]).swap_bytes());
}

#[test]
fn classic_pcap_byte_orders_and_resolutions_agree() {
    let frames = plain(sample());
    for le in [true, false] {
        for nanos in [false, true] {
            let c = read(classic(link_type::RAW, le, nanos, &frames));
            assert_clean(&c);
            assert_eq!(summary(&c), expected_sample(), "le={le} nanos={nanos}");
            let ts: Vec<Duration> = c.messages.iter().map(|m| m.timestamp).collect();
            assert_eq!(
                ts,
                vec![t(1_000_001), t(1_500_250), t(2_000_000), t(2_000_999)]
            );
            assert_eq!(
                c.messages.iter().map(|m| m.frame_no).collect::<Vec<_>>(),
                vec![1, 2, 3, 4]
            );
        }
    }
    // Nanosecond timestamps keep their precision.
    let f = vec![(
        Duration::new(5, 123_456_789),
        frames[0].1.clone(),
        frames[0].2,
    )];
    let c = read(classic(link_type::RAW, true, true, &f));
    assert_eq!(c.messages[0].timestamp, Duration::new(5, 123_456_789));
}

#[test]
fn pcapng_variants_agree() {
    let frames = sample();
    for le in [true, false] {
        for (res, exact) in [(None, true), (Some(9u8), true), (Some(0x80 | 20), false)] {
            let c = read(pcapng(le, link_type::RAW as u16, res, false, &frames));
            assert_clean(&c);
            assert_eq!(summary(&c), expected_sample(), "le={le} res={res:?}");
            for (m, (ts, _)) in c.messages.iter().zip(&frames) {
                if exact {
                    assert_eq!(m.timestamp, *ts);
                } else {
                    assert!(
                        ts.abs_diff(m.timestamp) < Duration::from_micros(2),
                        "{:?} {ts:?}",
                        m.timestamp
                    );
                }
            }
        }
        let c = read(pcapng(le, link_type::RAW as u16, None, true, &frames));
        assert_clean(&c);
        assert_eq!(summary(&c), expected_sample(), "SPB le={le}");
    }
}

#[test]
fn pcapng_two_sections_with_different_byte_orders() {
    let frames = sample();
    let mut f = pcapng(true, link_type::RAW as u16, None, false, &frames[..2]);
    f.extend(pcapng(
        false,
        link_type::RAW as u16,
        Some(9),
        false,
        &frames[2..],
    ));
    let c = read(f);
    assert_clean(&c);
    assert_eq!(summary(&c), expected_sample());
    assert_eq!(c.messages[3].frame_no, 4);
}

fn eth(tags: &[u16], ethertype: u16, ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for tpid in tags {
        f.extend(tpid.to_be_bytes());
        f.extend(0x0064u16.to_be_bytes()); // VLAN 100
    }
    f.extend(ethertype.to_be_bytes());
    f.extend(ip);
    f.extend([0; 6]); // padding / FCS after the IP packet
    f
}

fn ethertype_of(ip: &[u8]) -> u16 {
    if ip[0] >> 4 == 4 { 0x0800 } else { 0x86DD }
}

#[test]
fn link_types_agree() {
    let frames = sample();
    type Wrap = Box<dyn Fn(&[u8]) -> Vec<u8>>;
    let wraps: Vec<(&str, u32, Wrap)> = vec![
        (
            "ethernet",
            link_type::ETHERNET,
            Box::new(|ip| eth(&[], ethertype_of(ip), ip)),
        ),
        (
            "802.1Q",
            link_type::ETHERNET,
            Box::new(|ip| eth(&[0x8100], ethertype_of(ip), ip)),
        ),
        (
            "QinQ",
            link_type::ETHERNET,
            Box::new(|ip| eth(&[0x88A8, 0x8100], ethertype_of(ip), ip)),
        ),
        (
            "SLL",
            link_type::LINUX_SLL,
            Box::new(|ip| {
                let mut f = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
                f.extend(ethertype_of(ip).to_be_bytes());
                f.extend(ip);
                f
            }),
        ),
        (
            "SLL2",
            link_type::LINUX_SLL2,
            Box::new(|ip| {
                let mut f = ethertype_of(ip).to_be_bytes().to_vec();
                f.extend([0, 0, 0, 0, 0, 2, 0, 1, 4, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
                f.extend(ip);
                f
            }),
        ),
        (
            "null LE",
            link_type::NULL,
            Box::new(|ip| {
                let af: u32 = if ip[0] >> 4 == 4 { 2 } else { 30 };
                let mut f = af.to_le_bytes().to_vec();
                f.extend(ip);
                f
            }),
        ),
        (
            "null BE",
            link_type::NULL,
            Box::new(|ip| {
                let af: u32 = if ip[0] >> 4 == 4 { 2 } else { 10 };
                let mut f = af.to_be_bytes().to_vec();
                f.extend(ip);
                f
            }),
        ),
        (
            "loop",
            link_type::LOOP,
            Box::new(|ip| {
                let af: u32 = if ip[0] >> 4 == 4 { 2 } else { 24 };
                let mut f = af.to_be_bytes().to_vec();
                f.extend(ip);
                f
            }),
        ),
        ("raw", link_type::RAW, Box::new(|ip| ip.to_vec())),
    ];
    for (name, link, wrap) in wraps {
        let fs: Vec<_> = frames.iter().map(|(ts, ip)| (*ts, wrap(ip))).collect();
        let c = read(classic(link, true, false, &plain(fs)));
        assert_clean(&c);
        assert_eq!(summary(&c), expected_sample(), "{name}");
    }
    // Raw IPv4 / IPv6 link types, split by family.
    let v4: Vec<_> = frames
        .iter()
        .filter(|(_, p)| p[0] >> 4 == 4)
        .cloned()
        .collect();
    let v6: Vec<_> = frames
        .iter()
        .filter(|(_, p)| p[0] >> 4 == 6)
        .cloned()
        .collect();
    let c4 = read(classic(link_type::IPV4, true, false, &plain(v4)));
    let c6 = read(classic(link_type::IPV6, true, false, &plain(v6)));
    assert_clean(&c4);
    assert_clean(&c6);
    let mut all = summary(&c4);
    all.extend(summary(&c6));
    let mut want = expected_sample();
    want.sort_by_key(|m| m.1.is_ipv6());
    assert_eq!(all, want);
}

#[test]
fn non_ip_and_unsupported_links() {
    let frames = sample();
    let arp = eth(&[], 0x0806, &[0; 28]);
    let c = read(classic(
        link_type::ETHERNET,
        true,
        false,
        &plain(vec![(t(1), arp)]),
    ));
    assert_clean(&c);
    assert_eq!(c.stats.non_ip, 1);
    let c = read(classic(147, true, false, &plain(frames.clone())));
    assert!(c.messages.is_empty());
    assert_eq!(c.skipped.len(), 4);
    assert_eq!(
        c.skipped[0],
        SkippedFrame {
            frame_no: 1,
            reason: SkipReason::UnsupportedLinkType(147)
        }
    );
}

/// The first sample packet (IPv4 + SCTP) with a 4-byte IPv4 option (NOP ×3 + EOL).
fn with_ipv4_options(ip: &[u8]) -> Vec<u8> {
    let mut p = ip[..20].to_vec();
    p[0] = 0x46;
    let total = u16::from_be_bytes([p[2], p[3]]) + 4;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend([1, 1, 1, 0]);
    p.extend(&ip[20..]);
    p
}

#[test]
fn ipv4_options_and_fragments() {
    let frames = sample();
    let opt = with_ipv4_options(&frames[0].1);
    let mut first_frag = frames[0].1.clone();
    first_frag[6] = 0x20; // MF, offset 0
    let mut later_frag = frames[0].1.clone();
    later_frag[6] = 0x00;
    later_frag[7] = 0x03; // offset 24
    let c = read(classic(
        link_type::RAW,
        true,
        false,
        &plain(vec![(t(1), opt), (t(2), first_frag), (t(3), later_frag)]),
    ));
    assert!(c.errors.is_empty());
    assert_eq!(summary(&c), expected_sample()[..1].to_vec());
    assert_eq!(
        c.skipped,
        vec![
            SkippedFrame {
                frame_no: 2,
                reason: SkipReason::IpFragment {
                    offset: 0,
                    more: true
                }
            },
            SkippedFrame {
                frame_no: 3,
                reason: SkipReason::IpFragment {
                    offset: 24,
                    more: false
                }
            },
        ]
    );
}

/// Inserts IPv6 extension headers (given as (type, bytes)) in front of the payload.
fn with_ipv6_ext(ip: &[u8], exts: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut p = ip[..40].to_vec();
    let upper = p[6];
    let mut chain = Vec::new();
    for (i, (_, body)) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(upper, |e| e.0);
        let mut b = body.clone();
        b[0] = next;
        chain.extend(b);
    }
    p[6] = exts[0].0;
    let plen = u16::from_be_bytes([p[4], p[5]]) + chain.len() as u16;
    p[4..6].copy_from_slice(&plen.to_be_bytes());
    p.extend(chain);
    p.extend(&ip[40..]);
    p
}

#[test]
fn ipv6_extension_headers_and_fragments() {
    let frames = sample();
    let v6 = &frames[2].1;
    let hbh = (0u8, vec![0, 0, 1, 4, 0, 0, 0, 0]); // PadN
    let dst = (60u8, vec![0, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let rt = (43u8, vec![0, 0, 4, 0, 0, 0, 0, 0]); // type 4, segments left 0
    let ah = (51u8, vec![0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]); // (1+2)*4 = 12 bytes
    let ok = with_ipv6_ext(v6, &[hbh.clone(), dst, rt, ah]);
    let frag = with_ipv6_ext(v6, &[hbh, (44, vec![0, 0, 0, 0x19, 0, 0, 0, 1])]); // offset 24, M
    let c = read(classic(
        link_type::RAW,
        true,
        false,
        &plain(vec![(t(1), ok), (t(2), frag)]),
    ));
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert_eq!(summary(&c), expected_sample()[2..3].to_vec());
    assert_eq!(
        c.skipped,
        vec![SkippedFrame {
            frame_no: 2,
            reason: SkipReason::IpFragment {
                offset: 24,
                more: true
            }
        }]
    );
}

#[test]
fn snapped_frames_are_skipped_not_malformed() {
    let frames = sample();
    let (ts, ip) = &frames[0];
    let cut = ip[..30].to_vec();
    let c = read(classic(
        link_type::RAW,
        true,
        false,
        &[(*ts, cut.clone(), ip.len() as u32)],
    ));
    assert!(c.errors.is_empty());
    assert_eq!(
        c.skipped,
        vec![SkippedFrame {
            frame_no: 1,
            reason: SkipReason::SnapLength {
                captured: 30,
                original: ip.len() as u32
            }
        }]
    );
    // Same bytes without the snap explanation: malformed.
    let c = read(classic(
        link_type::RAW,
        true,
        false,
        &plain(vec![(*ts, cut)]),
    ));
    assert_eq!(c.errors.len(), 1);
    assert_eq!(c.errors[0].layer, Layer::Ipv4);
    assert!(matches!(c.errors[0].kind, ErrorKind::Truncated { .. }));
}

#[test]
fn file_level_errors() {
    assert_eq!(
        Capture::read(
            Bytes::from_static(b"\x00\x01\x02\x03rest"),
            &CaptureConfig::default()
        )
        .unwrap_err()
        .kind,
        ErrorKind::Invalid("capture file magic (neither pcap nor pcapng)")
    );
    assert!(matches!(
        Capture::read(Bytes::new(), &CaptureConfig::default())
            .unwrap_err()
            .kind,
        ErrorKind::Truncated { .. }
    ));
    // A truncated last record: the frames before it are dissected, then one File error.
    let mut f = classic(link_type::RAW, true, false, &plain(sample()));
    f.truncate(f.len() - 5);
    let c = read(f);
    assert_eq!(c.messages.len(), 3);
    assert_eq!(c.errors.len(), 1);
    assert_eq!(c.errors[0].layer, Layer::File);
    assert_eq!(c.errors[0].frame_no, 4);
    // pcapng trailing block length mismatch.
    let mut ng = pcapng(true, link_type::RAW as u16, None, false, &sample());
    let n = ng.len();
    ng[n - 4] ^= 0x40;
    let c = read(ng);
    assert_eq!(c.messages.len(), 3);
    assert_eq!(c.errors.len(), 1);
    assert_eq!(
        c.errors[0].kind,
        ErrorKind::Invalid("pcapng trailing block length")
    );
    // An EPB naming an interface that has no IDB.
    let mut ng = pcapng(false, link_type::RAW as u16, None, false, &sample()[..1]);
    // SHB 28 bytes, NRB 16, IDB 24: the EPB starts at 68; its interface id at 76.
    assert_eq!(ng[68..72], [0, 0, 0, 6]);
    ng[76..80].copy_from_slice(&3u32.to_be_bytes());
    let c = read(ng);
    assert_eq!(c.errors.len(), 1);
    assert_eq!(
        c.errors[0].kind,
        ErrorKind::Invalid("packet block interface id (no such IDB)")
    );
}

fn cfg_any() -> CaptureConfig {
    CaptureConfig {
        udp_ports: PortFilter::Any,
        tcp_ports: PortFilter::Any,
        ..Default::default()
    }
}

#[test]
fn udp_port_filter_and_errors() {
    let frames = packets(|w| {
        w.write_udp(t(1), sa("10.0.0.1:5000"), sa("10.0.0.2:5001"), b"other")
            .unwrap();
        w.write_udp(t(2), sa("10.0.0.1:5000"), sa("10.0.0.2:2960"), b"csp")
            .unwrap();
    });
    let c = read(classic(link_type::RAW, true, false, &plain(frames.clone())));
    assert_clean(&c);
    assert_eq!(c.messages.len(), 1);
    assert_eq!(&c.messages[0].payload[..], b"csp");
    let c = read_with(
        classic(link_type::RAW, true, false, &plain(frames.clone())),
        &cfg_any(),
    );
    assert_eq!(c.messages.len(), 2);
    let custom = CaptureConfig {
        udp_ports: PortFilter::List(vec![5001]),
        ..Default::default()
    };
    let c = read_with(
        classic(link_type::RAW, true, false, &plain(frames.clone())),
        &custom,
    );
    assert_eq!(c.messages.len(), 1);
    assert_eq!(&c.messages[0].payload[..], b"other");
    // UDP length 4 (< 8), and a length beyond the IP payload.
    let mut bad = frames[0].1.clone();
    bad[24..26].copy_from_slice(&4u16.to_be_bytes());
    let mut long = frames[0].1.clone();
    long[24..26].copy_from_slice(&200u16.to_be_bytes());
    let c = read(classic(
        link_type::RAW,
        true,
        false,
        &plain(vec![(t(1), bad), (t(2), long)]),
    ));
    assert_eq!(c.errors.len(), 2);
    assert_eq!(c.errors[0].kind, ErrorKind::Invalid("UDP length < 8"));
    assert_eq!(c.errors[0].offset, 24);
    assert!(matches!(
        c.errors[1].kind,
        ErrorKind::Truncated { needed: 200, .. }
    ));
}

fn data(flags: u8, tsn: u32, stream: u16, ssn: u16, ppid: u32, payload: &[u8]) -> SctpChunk<'_> {
    SctpChunk::Data {
        flags,
        tsn,
        stream,
        ssn,
        ppid,
        payload,
    }
}

fn sctp_file(f: impl FnOnce(&mut PcapWriter<Vec<u8>>)) -> Vec<u8> {
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    f(&mut w);
    w.into_inner().unwrap()
}

#[test]
fn sctp_bundled_chunks_are_all_walked() {
    let sack = [0u8, 0, 0, 9, 0, 0, 0x10, 0, 0, 0, 0, 0];
    let f = sctp_file(|w| {
        w.write_sctp(
            t(1),
            sa(PE),
            sa(PR),
            1,
            &[
                SctpChunk::Raw {
                    chunk_type: 3,
                    flags: 0,
                    value: &sack,
                },
                data(3, 10, 0, 0, 11, b"first"),
                SctpChunk::Raw {
                    chunk_type: 4,
                    flags: 0,
                    value: b"hb\x00",
                }, // odd length, padded
                data(3, 11, 1, 0, 12, b"second"),
            ],
        )
        .unwrap();
    });
    let c = read(f);
    assert_clean(&c);
    assert_eq!(c.stats.sctp_chunks, 4);
    assert_eq!(c.stats.sctp_data_chunks, 2);
    let s = summary(&c);
    assert_eq!(
        s[0].0,
        Transport::Sctp {
            ppid: 11,
            stream: 0
        }
    );
    assert_eq!(
        s[1].0,
        Transport::Sctp {
            ppid: 12,
            stream: 1
        }
    );
    assert_eq!(s[1].3, b"second");
}

#[test]
fn sctp_fragments_reassemble_in_tsn_order_and_duplicates_drop() {
    let f = sctp_file(|w| {
        let (pe, pr) = (sa(PE), sa(PR));
        // Stream 1: message "ABCDEF" in fragments TSN 20 (B), 21, 22 (E), arriving E, B, B
        // again (retransmission), then the middle. Stream 2 interleaves a whole message.
        w.write_sctp(t(1), pe, pr, 5, &[data(1, 22, 1, 3, 12, b"EF")])
            .unwrap();
        w.write_sctp(t(2), pe, pr, 5, &[data(2, 20, 1, 3, 12, b"AB")])
            .unwrap();
        w.write_sctp(
            t(3),
            pe,
            pr,
            5,
            &[data(2, 20, 1, 3, 12, b"AB"), data(3, 23, 2, 0, 11, b"x")],
        )
        .unwrap();
        w.write_sctp(t(4), pe, pr, 5, &[data(0, 21, 1, 3, 12, b"CD")])
            .unwrap();
        // Complete retransmission of TSN 23: dropped.
        w.write_sctp(t(5), pe, pr, 5, &[data(3, 23, 2, 0, 11, b"x")])
            .unwrap();
        // Same TSNs under another verification tag: a different association.
        w.write_sctp(t(6), pe, pr, 6, &[data(3, 23, 2, 0, 11, b"y")])
            .unwrap();
    });
    let c = read(f);
    assert_clean(&c);
    let got: Vec<(u64, Transport, Vec<u8>)> = c
        .messages
        .iter()
        .map(|m| (m.frame_no, m.transport, m.payload.to_vec()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                3,
                Transport::Sctp {
                    ppid: 11,
                    stream: 2
                },
                b"x".to_vec()
            ),
            (
                4,
                Transport::Sctp {
                    ppid: 12,
                    stream: 1
                },
                b"ABCDEF".to_vec()
            ),
            (
                6,
                Transport::Sctp {
                    ppid: 11,
                    stream: 2
                },
                b"y".to_vec()
            ),
        ]
    );
    assert_eq!(c.stats.sctp_duplicate_tsns, 2);
    assert_eq!(c.stats.sctp_messages, 3);
}

#[test]
fn sctp_tsn_wraparound_and_incomplete_messages() {
    let f = sctp_file(|w| {
        let (pe, pr) = (sa(PE), sa(PR));
        w.write_sctp(t(1), pe, pr, 5, &[data(2, u32::MAX, 0, 1, 12, b"wr")])
            .unwrap();
        w.write_sctp(t(2), pe, pr, 5, &[data(1, 0, 0, 1, 12, b"ap")])
            .unwrap();
        // Ordered fragments whose SSNs disagree never form a message.
        w.write_sctp(
            t(3),
            pe,
            pr,
            5,
            &[data(2, 1, 3, 1, 12, b"no"), data(1, 2, 3, 2, 12, b"pe")],
        )
        .unwrap();
    });
    let c = read(f);
    assert!(c.errors.is_empty());
    assert_eq!(
        summary(&c).into_iter().map(|m| m.3).collect::<Vec<_>>(),
        vec![b"wrap".to_vec()]
    );
    assert_eq!(
        c.skipped,
        vec![SkippedFrame {
            frame_no: 3,
            reason: SkipReason::IncompleteSctpMessage {
                stream: 3,
                bytes: 4
            }
        }]
    );
}

#[test]
fn sctp_idata_reassembles_by_fsn() {
    let idata = |flags, tsn, mid, ppid_fsn, payload| SctpChunk::IData {
        flags,
        tsn,
        stream: 4,
        mid,
        ppid_fsn,
        payload,
    };
    let f = sctp_file(|w| {
        let (pe, pr) = (sa(PE), sa(PR));
        // Two interleaved messages (MID 1 and 2) on stream 4; MID 1 arrives E, B, middle.
        w.write_sctp(t(1), pe, pr, 5, &[idata(1, 102, 1, 2, b"3")])
            .unwrap();
        w.write_sctp(
            t(2),
            pe,
            pr,
            5,
            &[idata(2, 100, 1, 11, b"1"), idata(2, 101, 2, 12, b"a")],
        )
        .unwrap();
        w.write_sctp(
            t(3),
            pe,
            pr,
            5,
            &[idata(0, 103, 1, 1, b"2"), idata(1, 104, 2, 1, b"b")],
        )
        .unwrap();
        w.write_sctp(t(4), pe, pr, 5, &[idata(3, 105, 7, 13, b"whole")])
            .unwrap();
    });
    let c = read(f);
    assert_clean(&c);
    let got: Vec<(u64, Transport, Vec<u8>)> = c
        .messages
        .iter()
        .map(|m| (m.frame_no, m.transport, m.payload.to_vec()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                3,
                Transport::Sctp {
                    ppid: 11,
                    stream: 4
                },
                b"123".to_vec()
            ),
            (
                3,
                Transport::Sctp {
                    ppid: 12,
                    stream: 4
                },
                b"ab".to_vec()
            ),
            (
                4,
                Transport::Sctp {
                    ppid: 13,
                    stream: 4
                },
                b"whole".to_vec()
            ),
        ]
    );
}

#[test]
fn sctp_checksum_and_chunk_errors() {
    let good = sctp_file(|w| {
        w.write_sctp_data(t(1), sa(PE), sa(PR), 5, 1, 0, 11, b"hello")
            .unwrap()
    });
    let frames: Vec<_> = PcapReader::new(good.into())
        .unwrap()
        .map(|f| f.unwrap().data.to_vec())
        .collect();
    let mut bad_sum = frames[0].clone();
    bad_sum[20 + 8] ^= 1;
    let c = read(classic(
        link_type::RAW,
        true,
        false,
        &plain(vec![(t(1), bad_sum.clone())]),
    ));
    assert!(c.messages.is_empty());
    assert_eq!(c.errors.len(), 1);
    assert_eq!(c.errors[0].layer, Layer::Sctp);
    assert_eq!(c.errors[0].offset, 28);
    assert!(matches!(c.errors[0].kind, ErrorKind::BadChecksum { .. }));
    let lax = CaptureConfig {
        verify_sctp_checksum: false,
        ..Default::default()
    };
    let c = read_with(
        classic(link_type::RAW, true, false, &plain(vec![(t(1), bad_sum)])),
        &lax,
    );
    assert_clean(&c);
    assert_eq!(&c.messages[0].payload[..], b"hello");

    let errs = |chunks: &[SctpChunk<'_>]| {
        let f = sctp_file(|w| w.write_sctp(t(1), sa(PE), sa(PR), 5, chunks).unwrap());
        read(f).errors
    };
    // A DATA chunk without user data.
    let e = errs(&[data(3, 1, 0, 0, 11, b"")]);
    assert_eq!(
        e[0].kind,
        ErrorKind::Invalid("DATA chunk without user data")
    );
    // A DATA chunk shorter than its header.
    let e = errs(&[SctpChunk::Raw {
        chunk_type: 0,
        flags: 3,
        value: &[0; 8],
    }]);
    assert_eq!(e[0].kind, ErrorKind::Invalid("DATA chunk length < 16"));
    // Chunk length < 4: rewrite a chunk length field and fix the checksum.
    let f = sctp_file(|w| {
        w.write_sctp(t(1), sa(PE), sa(PR), 5, &[data(3, 1, 0, 0, 11, b"x")])
            .unwrap()
    });
    let mut p = PcapReader::new(f.into())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .data
        .to_vec();
    p[20 + 12 + 2..20 + 12 + 4].copy_from_slice(&2u16.to_be_bytes());
    let sum = sctp_checksum(&p[20..]);
    p[28..32].copy_from_slice(&sum.to_be_bytes());
    let c = read(classic(
        link_type::RAW,
        true,
        false,
        &plain(vec![(t(1), p)]),
    ));
    assert_eq!(
        c.errors[0].kind,
        ErrorKind::Invalid("SCTP chunk length < 4")
    );
    assert_eq!(c.errors[0].offset, 34);
}

#[test]
fn sctp_reassembly_limit() {
    let cfg = CaptureConfig {
        max_reassembly_bytes: 10,
        ..Default::default()
    };
    let f = sctp_file(|w| {
        w.write_sctp(t(1), sa(PE), sa(PR), 5, &[data(2, 1, 0, 0, 11, b"123456")])
            .unwrap();
        w.write_sctp(t(2), sa(PE), sa(PR), 5, &[data(0, 2, 0, 0, 11, b"789012")])
            .unwrap();
        w.write_sctp(t(3), sa(PE), sa(PR), 5, &[data(3, 3, 0, 0, 11, b"small")])
            .unwrap();
    });
    let c = read_with(f, &cfg);
    assert_eq!(c.errors.len(), 1);
    assert_eq!(c.errors[0].kind, ErrorKind::ReassemblyLimit);
    assert_eq!(c.errors[0].frame_no, 2);
    assert_eq!(
        summary(&c).into_iter().map(|m| m.3).collect::<Vec<_>>(),
        vec![b"small".to_vec()]
    );
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;
const FIN_ACK: u8 = 0x11;
const RST: u8 = 0x04;

#[test]
fn tcp_stream_reassembly() {
    let (c1, s1) = (sa("10.0.0.5:50000"), sa("10.0.0.1:3863"));
    let isn = u32::MAX - 3; // the stream wraps the sequence space
    let f = sctp_file(|w| {
        w.write_tcp(t(1), c1, s1, isn, 0, SYN, b"").unwrap();
        w.write_tcp(t(2), s1, c1, 500, isn.wrapping_add(1), SYN | ACK, b"")
            .unwrap();
        let s = |o: u32| isn.wrapping_add(1).wrapping_add(o);
        w.write_tcp(t(3), c1, s1, s(0), 501, PSH_ACK, b"hello")
            .unwrap(); // 0..5
        w.write_tcp(t(4), c1, s1, s(0), 501, PSH_ACK, b"hello")
            .unwrap(); // retransmission
        w.write_tcp(t(5), c1, s1, s(11), 501, PSH_ACK, b"!!!")
            .unwrap(); // 11..14, early
        w.write_tcp(t(6), c1, s1, s(3), 501, PSH_ACK, b"lo wo")
            .unwrap(); // 3..8, overlap
        w.write_tcp(t(7), c1, s1, s(8), 501, PSH_ACK, b"rld")
            .unwrap(); // 8..11, fills hole
        w.write_tcp(t(8), s1, c1, 501, s(14), PSH_ACK, b"reply")
            .unwrap();
        w.write_tcp(t(9), c1, s1, s(14), 506, FIN_ACK, b"").unwrap();
        // A new connection on the same address pair.
        w.write_tcp(t(10), c1, s1, 77, 0, SYN, b"").unwrap();
        w.write_tcp(t(11), c1, s1, 78, 0, PSH_ACK, b"again")
            .unwrap();
        w.write_tcp(t(12), c1, s1, 83, 0, RST, b"").unwrap();
    });
    let c = read(f);
    assert_clean(&c);
    assert_eq!(c.tcp_flows.len(), 3);
    let f0 = &c.tcp_flows[0];
    assert_eq!((f0.src, f0.dst), (c1, s1));
    assert_eq!(f0.data, b"hello world!!!");
    assert!(f0.syn_seen && f0.fin_seen && !f0.rst_seen);
    assert_eq!(
        f0.deliveries
            .iter()
            .map(|d| (d.offset, d.len, d.frame_no))
            .collect::<Vec<_>>(),
        vec![(0, 5, 3), (5, 3, 6), (8, 6, 7)]
    );
    assert_eq!(f0.delivery_at(9).unwrap().frame_no, 7);
    assert_eq!(f0.delivery_at(7).unwrap().timestamp, t(6));
    assert!(f0.delivery_at(14).is_none());
    assert_eq!(f0.bytes_of(&f0.deliveries[2]), b"rld!!!");
    assert_eq!(c.tcp_flows[1].data, b"reply");
    assert_eq!(c.tcp_flows[2].data, b"again");
    assert!(c.tcp_flows[2].rst_seen);
    // 5 (retransmission) + 2 (overlap) bytes dropped.
    assert_eq!(c.stats.tcp_retransmitted_bytes, 7);
    let msgs: Vec<(u64, Vec<u8>)> = c
        .messages
        .iter()
        .map(|m| (m.frame_no, m.payload.to_vec()))
        .collect();
    assert_eq!(
        msgs,
        vec![
            (3, b"hello".to_vec()),
            (6, b" wo".to_vec()),
            (7, b"rld!!!".to_vec()),
            (8, b"reply".to_vec()),
            (11, b"again".to_vec()),
        ]
    );
    assert!(
        c.messages
            .iter()
            .all(|m| m.transport == Transport::TcpStream)
    );
}

#[test]
fn tcp_mid_stream_start_gap_and_port_filter() {
    let (c1, s1) = (sa("10.0.0.5:50000"), sa("10.0.0.1:9901"));
    let f = sctp_file(|w| {
        w.write_tcp(t(1), c1, s1, 1000, 0, PSH_ACK, b"mid").unwrap();
        w.write_tcp(t(2), c1, s1, 1010, 0, PSH_ACK, b"after hole")
            .unwrap();
        w.write_tcp(
            t(3),
            sa("10.0.0.5:1"),
            sa("10.0.0.6:2"),
            1,
            0,
            PSH_ACK,
            b"ignored",
        )
        .unwrap();
    });
    let c = read(f);
    assert!(c.errors.is_empty());
    assert_eq!(c.tcp_flows.len(), 1);
    assert!(!c.tcp_flows[0].syn_seen);
    assert_eq!(c.tcp_flows[0].data, b"mid");
    assert_eq!(
        c.skipped,
        vec![SkippedFrame {
            frame_no: 2,
            reason: SkipReason::TcpGap { bytes: 10 }
        }]
    );
    assert_eq!(c.stats.tcp_segments, 3);
}

#[test]
fn writer_rejects_mixed_families() {
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    let e = w
        .write_udp(t(1), sa("10.0.0.1:1"), sa("[::1]:2"), b"x")
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    let e = w
        .write_udp(t(1), sa("10.0.0.1:1"), sa("10.0.0.1:2"), &vec![0; 70_000])
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

proptest! {
    /// Any fragmentation of a message, delivered in any order with duplicates, yields the
    /// message exactly once.
    #[test]
    fn sctp_fragments_any_order(
        msg in proptest::collection::vec(any::<u8>(), 1..200),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        order in Just((0u32..64).collect::<Vec<u32>>()).prop_shuffle(),
        dups in proptest::collection::vec(0usize..16, 0..4),
        tsn0 in any::<u32>(),
    ) {
        let mut points: Vec<usize> = cuts.iter().map(|c| 1 + c.index(msg.len())).filter(|&p| p < msg.len()).collect();
        points.sort();
        points.dedup();
        let mut bounds = vec![0];
        bounds.extend(points);
        bounds.push(msg.len());
        let n = bounds.len() - 1;
        let frags: Vec<(u8, u32, &[u8])> = (0..n)
            .map(|i| {
                let flags = (if i == 0 { 2 } else { 0 }) | (if i == n - 1 { 1 } else { 0 });
                (flags, tsn0.wrapping_add(i as u32), &msg[bounds[i]..bounds[i + 1]])
            })
            .collect();
        let mut seq: Vec<usize> = order.iter().map(|&o| o as usize).filter(|&o| o < n).collect();
        seq.extend(dups.iter().map(|d| d % n));
        let f = sctp_file(|w| {
            for (k, &i) in seq.iter().enumerate() {
                let (flags, tsn, p) = frags[i];
                w.write_sctp(t(k as u64), sa(PE), sa(PR), 5, &[data(flags, tsn, 0, 9, 12, p)]).unwrap();
            }
        });
        let c = read(f);
        prop_assert!(c.errors.is_empty() && c.skipped.is_empty());
        prop_assert_eq!(c.messages.len(), 1);
        prop_assert_eq!(&c.messages[0].payload[..], &msg[..]);
    }

    /// Any segmentation of a byte stream, with overlapping retransmissions, in any order,
    /// reassembles to the stream.
    #[test]
    fn tcp_segments_any_order(
        stream in proptest::collection::vec(any::<u8>(), 1..300),
        segs in proptest::collection::vec((any::<prop::sample::Index>(), 1usize..40), 1..30),
        isn in any::<u32>(),
    ) {
        let (c1, s1) = (sa("10.0.0.5:50000"), sa("10.0.0.1:3863"));
        // Random segments plus a covering in-order set, the latter placed last so that the
        // stream is complete whatever came before.
        let mut all: Vec<(usize, usize)> = segs.iter().map(|(i, l)| { let s = i.index(stream.len()); (s, (s + l).min(stream.len())) }).collect();
        let mut o = 0;
        while o < stream.len() { let e = (o + 37).min(stream.len()); all.push((o, e)); o = e; }
        let f = sctp_file(|w| {
            w.write_tcp(t(0), c1, s1, isn, 0, SYN, b"").unwrap();
            for (k, (s, e)) in all.iter().enumerate() {
                let seq = isn.wrapping_add(1).wrapping_add(*s as u32);
                w.write_tcp(t(k as u64 + 1), c1, s1, seq, 1, PSH_ACK, &stream[*s..*e]).unwrap();
            }
        });
        let c = read(f);
        prop_assert!(c.errors.is_empty() && c.skipped.is_empty());
        prop_assert_eq!(c.tcp_flows.len(), 1);
        prop_assert_eq!(&c.tcp_flows[0].data, &stream);
        let pieces: Vec<u8> = c.messages.iter().flat_map(|m| m.payload.to_vec()).collect();
        prop_assert_eq!(&pieces, &stream);
        let mut off = 0;
        for d in &c.tcp_flows[0].deliveries { prop_assert_eq!(d.offset, off); off += d.len as u64; }
    }

    /// Arbitrary bytes behind valid file headers never panic, with any link type.
    #[test]
    fn arbitrary_frames_never_panic(
        link in prop_oneof![Just(0u32), Just(1), Just(101), Just(108), Just(113), Just(228), Just(229), Just(276)],
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 1..8),
        ng in any::<bool>(),
    ) {
        let n = frames.len();
        let fs: Vec<_> = frames.into_iter().map(|d| (t(1), d)).collect();
        let file = if ng { pcapng(true, link as u16, None, false, &fs) } else { classic(link, true, false, &plain(fs)) };
        let c = read_with(file, &CaptureConfig { verify_sctp_checksum: false, ..cfg_any() });
        prop_assert_eq!(c.stats.frames, n as u64);
        prop_assert_eq!(c.stats.malformed as usize, c.errors.len());
        prop_assert_eq!(c.stats.skipped as usize, c.skipped.len());
    }
}
