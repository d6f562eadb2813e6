//! The pcap reader against RSPLIB's real captures (`shared/vectors/rsplib-captures`), and
//! the pcap writer against tshark.

use bytes::Bytes;
use proptest::prelude::*;
use rserpool_mio::pcap::{
    Capture, CaptureConfig, CapturedMessage, PcapReader, PcapWriter, PortFilter, SctpChunk,
    Transport, sctp_checksum,
};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// `shared/vectors`: `$RSERPOOL_VECTORS`, else `../../shared/vectors` from this crate.
fn vectors_dir() -> PathBuf {
    let dir = match std::env::var_os("RSERPOOL_VECTORS") {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"),
    };
    assert!(
        dir.join("rsplib-captures").is_dir(),
        "test vectors not found at {} (set RSERPOOL_VECTORS to the shared/vectors directory)",
        dir.display()
    );
    dir
}

fn captures_dir() -> PathBuf {
    vectors_dir().join("rsplib-captures")
}

/// All vector pcaps, sorted by name, with their bytes.
fn vector_pcaps() -> &'static [(String, Bytes)] {
    static V: OnceLock<Vec<(String, Bytes)>> = OnceLock::new();
    V.get_or_init(|| {
        let mut v: Vec<(String, Bytes)> = std::fs::read_dir(captures_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, Bytes::from(std::fs::read(&p).unwrap()))
            })
            .collect();
        v.sort();
        assert!(
            v.len() >= 5,
            "expected the five RSPLIB captures, found {}",
            v.len()
        );
        v
    })
}

fn capture_of(name: &str) -> Capture {
    let (_, data) = vector_pcaps()
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name}"));
    Capture::read(data.clone(), &CaptureConfig::default()).unwrap()
}

/// ASAP message types are 0x01..=0x0e, ENRP 0x01..=0x0a; the length field (bytes 2..4)
/// covers the whole message.
fn plausible_header(ppid: u32, p: &[u8]) -> bool {
    let max_type = if ppid == 11 { 0x0e } else { 0x0a };
    p.len() >= 4
        && (1..=max_type).contains(&p[0])
        && usize::from(u16::from_be_bytes([p[2], p[3]])) <= p.len()
}

#[test]
fn every_vector_parses_without_malformed_frames() {
    for (name, data) in vector_pcaps() {
        let cap = Capture::read(data.clone(), &CaptureConfig::default()).unwrap();
        let frames = PcapReader::new(data.clone()).unwrap().count() as u64;
        println!("{name}: {:?}", cap.stats);
        assert_eq!(cap.stats.frames, frames, "{name}");
        assert!(cap.errors.is_empty(), "{name}: {:?}", cap.errors);
        assert!(cap.skipped.is_empty(), "{name}: {:?}", cap.skipped);
        assert!(
            cap.stats.sctp_packets > 0 && cap.stats.udp_datagrams > 0,
            "{name}"
        );
    }
}

#[test]
fn asap_and_enrp_messages_per_file() {
    let mut forged = 0;
    for (name, _) in vector_pcaps() {
        let cap = capture_of(name);
        let mut sctp = [0usize; 2];
        let mut udp = [0usize; 2];
        for m in &cap.messages {
            match m.transport {
                Transport::Sctp {
                    ppid: ppid @ (11 | 12),
                    ..
                } => {
                    sctp[(ppid - 11) as usize] += 1;
                    if !plausible_header(ppid, &m.payload) {
                        // 07 sends an ASAP message of the unknown type 0x7e on purpose.
                        assert!(
                            name.starts_with("07") && ppid == 11 && m.payload[0] == 0x7e,
                            "{name}: {m:?}"
                        );
                        forged += 1;
                    }
                }
                Transport::Udp => {
                    let port = m.dst.port();
                    let ppid = match port {
                        3863 => 11,
                        9901 => 12,
                        _ => panic!("{name}: unexpected UDP {m:?}"),
                    };
                    udp[(ppid - 11) as usize] += 1;
                    assert!(plausible_header(ppid, &m.payload), "{name}: {m:?}");
                }
                _ => {}
            }
        }
        println!(
            "{name}: SCTP ASAP {} ENRP {}; UDP ASAP {} ENRP {}; duplicates dropped {}",
            sctp[0], sctp[1], udp[0], udp[1], cap.stats.sctp_duplicate_tsns
        );
        assert!(sctp[0] + sctp[1] > 0, "{name}");
        assert!(udp[0] > 0 && udp[1] > 0, "{name}");
        if name.starts_with("05") || name.starts_with("06") {
            assert!(sctp[1] > 0, "{name}: ENRP over SCTP expected");
        }
    }
    assert_eq!(forged, 1);
}

fn hex_decode(s: &str) -> Vec<u8> {
    let s: Vec<u8> = s.bytes().filter(|c| c.is_ascii_hexdigit()).collect();
    assert!(s.len().is_multiple_of(2));
    s.chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
        .collect()
}

/// Every messages/*.hex: the message appears byte-identical at the frame, addresses and
/// transport its comment names.
#[test]
fn message_files_appear_in_their_captures() {
    let dir = captures_dir().join("messages");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut checked = 0;
    let mut caps: Vec<(String, Capture)> = Vec::new();
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
    {
        let text = std::fs::read_to_string(path).unwrap();
        let comment = text.lines().find(|l| l.starts_with('#')).unwrap();
        let hex: String = text.lines().filter(|l| !l.starts_with('#')).collect();
        let msg = hex_decode(&hex);
        let words: Vec<&str> = comment.split_whitespace().collect();
        let file = words
            .iter()
            .find(|w| w.ends_with(".pcap"))
            .unwrap()
            .to_string();
        let fpos = words.iter().position(|w| *w == "frame").unwrap();
        let frame: u64 = words[fpos + 1].trim_end_matches(',').parse().unwrap();
        let src: IpAddr = words[fpos + 2].parse().unwrap();
        let dst: IpAddr = words[fpos + 4].parse().unwrap();
        let transport = if comment.contains("(UDP)") {
            Transport::Udp
        } else {
            let ppid: u32 = comment
                .rsplit("PPID ")
                .next()
                .unwrap()
                .trim_end_matches(')')
                .parse()
                .unwrap();
            Transport::Sctp { ppid, stream: 0 }
        };
        if !caps.iter().any(|(n, _)| *n == file) {
            caps.push((file.clone(), capture_of(&file)));
        }
        let cap = &caps.iter().find(|(n, _)| *n == file).unwrap().1;
        let same_kind = |m: &CapturedMessage| match (m.transport, transport) {
            (Transport::Sctp { ppid: a, .. }, Transport::Sctp { ppid: b, .. }) => a == b,
            (a, b) => a == b,
        };
        let found = cap
            .messages
            .iter()
            .find(|m| m.frame_no == frame && m.payload[..] == msg[..])
            .unwrap_or_else(|| panic!("{}: not found at frame {frame} of {file}", path.display()));
        assert!(same_kind(found), "{}: {found:?}", path.display());
        assert_eq!(
            (found.src.ip(), found.dst.ip()),
            (src, dst),
            "{}",
            path.display()
        );
        // And it is the first message of its kind with these bytes.
        let first = cap
            .messages
            .iter()
            .find(|m| same_kind(m) && m.payload[..] == msg[..])
            .unwrap();
        assert_eq!(first.frame_no, frame, "{}", path.display());
        checked += 1;
    }
    println!("{checked} message files found byte-identical in their captures");
    assert!(checked >= 29, "{checked}");
}

#[test]
fn vector_checksums_match_our_crc32c() {
    // Frame 16 of 01 (the registration): Ethernet (14) + IPv4 (20) + SCTP.
    let (_, data) = &vector_pcaps()[0];
    let frame = PcapReader::new(data.clone())
        .unwrap()
        .nth(15)
        .unwrap()
        .unwrap();
    assert_eq!(frame.frame_no, 16);
    let total = usize::from(u16::from_be_bytes([frame.data[16], frame.data[17]]));
    let sctp = &frame.data[34..14 + total];
    let stored = u32::from_be_bytes(sctp[8..12].try_into().unwrap());
    assert_eq!(sctp_checksum(sctp), stored);
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Synthetic capture: every message file as SCTP (or UDP), one ENRP message fragmented
/// into three DATA chunks across two packets, an I-DATA message, IPv6 UDP, a TCP stream.
fn synthetic_capture() -> (Vec<u8>, Vec<(Transport, Vec<u8>)>) {
    let dir = captures_dir().join("messages");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    let mut expect = Vec::new();
    let (pe, pr) = (addr("10.0.0.4:40000"), addr("10.0.0.1:3863"));
    let (pr1, pr2) = (addr("10.0.0.1:9901"), addr("10.0.0.2:9901"));
    let mut tsn = 100;
    for (i, path) in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
        .enumerate()
    {
        let text = std::fs::read_to_string(path).unwrap();
        let msg = hex_decode(
            &text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<String>(),
        );
        let ts = Duration::from_millis(1000 + 10 * i as u64);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if text.contains("(UDP)") {
            let (src, dst) = if name.starts_with("asap") {
                (addr("10.0.0.1:3863"), addr("239.0.0.50:3863"))
            } else {
                (addr("10.0.0.1:9901"), addr("239.0.0.51:9901"))
            };
            w.write_udp(ts, src, dst, &msg).unwrap();
            expect.push((Transport::Udp, msg));
        } else {
            let (ppid, src, dst) = if name.starts_with("asap") {
                (11, pe, pr)
            } else {
                (12, pr1, pr2)
            };
            w.write_sctp_data(ts, src, dst, 0xC0FFEE, tsn, 0, ppid, &msg)
                .unwrap();
            tsn += 1;
            expect.push((Transport::Sctp { ppid, stream: 0 }, msg));
        }
    }
    // A fragmented ENRP Handle Table Response: B in one packet, middle + E in the next.
    let big = hex_decode(
        &std::fs::read_to_string(dir.join("enrp-handle-table-response.hex"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<String>(),
    );
    let (a, rest) = big.split_at(20);
    let (b, c) = rest.split_at(20);
    let t = Duration::from_secs(3);
    let frag = |flags, tsn, payload| SctpChunk::Data {
        flags,
        tsn,
        stream: 1,
        ssn: 7,
        ppid: 12,
        payload,
    };
    w.write_sctp(t, pr1, pr2, 0xC0FFEE, &[frag(0x02, tsn, a)])
        .unwrap();
    w.write_sctp(
        t,
        pr1,
        pr2,
        0xC0FFEE,
        &[frag(0x00, tsn + 1, b), frag(0x01, tsn + 2, c)],
    )
    .unwrap();
    expect.push((
        Transport::Sctp {
            ppid: 12,
            stream: 1,
        },
        big.clone(),
    ));
    // IPv6 UDP.
    let announce = hex_decode("0a0000081de0434e");
    w.write_udp(
        t,
        addr("[fd00::1]:3863"),
        addr("[ff05::50]:3863"),
        &announce,
    )
    .unwrap();
    expect.push((Transport::Udp, announce));
    // A TCP stream on neutral ports (tshark would dissect 3863 as ASAP).
    let (c1, s1) = (addr("10.0.0.5:50000"), addr("10.0.0.6:50001"));
    w.write_tcp(t, c1, s1, 1000, 0, 0x02, b"").unwrap();
    w.write_tcp(t, c1, s1, 1001, 1, 0x18, b"hello ").unwrap();
    w.write_tcp(t, c1, s1, 1007, 1, 0x19, b"world").unwrap();
    (w.into_inner().unwrap(), expect)
}

#[test]
fn writer_output_reads_back() {
    let (pcap, expect) = synthetic_capture();
    let cfg = CaptureConfig {
        tcp_ports: PortFilter::Any,
        udp_ports: PortFilter::Any,
        ..Default::default()
    };
    let cap = Capture::read(pcap.into(), &cfg).unwrap();
    assert!(cap.errors.is_empty(), "{:?}", cap.errors);
    assert!(cap.skipped.is_empty(), "{:?}", cap.skipped);
    let got: Vec<(Transport, Vec<u8>)> = cap
        .messages
        .iter()
        .filter(|m| m.transport != Transport::TcpStream)
        .map(|m| (m.transport, m.payload.to_vec()))
        .collect();
    assert_eq!(got, expect);
    assert_eq!(cap.tcp_flows.len(), 1);
    assert_eq!(cap.tcp_flows[0].data, b"hello world");
    assert!(cap.tcp_flows[0].syn_seen && cap.tcp_flows[0].fin_seen);
}

fn tshark_available() -> bool {
    Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn writer_output_is_clean_for_tshark() {
    if !tshark_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "tshark is required when CI is set"
        );
        eprintln!("NOTE: tshark not installed; writer_output_is_clean_for_tshark skipped");
        return;
    }
    let (pcap, expect) = synthetic_capture();
    let path =
        std::env::temp_dir().join(format!("rserpool-pcap-writer-{}.pcap", std::process::id()));
    std::fs::write(&path, &pcap).unwrap();
    let prefs = [
        "sctp.checksum:crc-32c",
        "sctp.reassembly:TRUE",
        "ip.check_checksum:TRUE",
        "udp.check_checksum:TRUE",
        "tcp.check_checksum:TRUE",
    ];
    let run = |extra: &[&str]| {
        let mut c = Command::new("tshark");
        c.arg("-n").arg("-r").arg(&path);
        for p in prefs {
            c.args(["-o", p]);
        }
        let out = c.args(extra).output().unwrap();
        assert!(
            out.status.success(),
            "tshark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let verbose = run(&["-V"]);
    for bad in [
        "Malformed",
        "incorrect",
        "Status: Bad",
        "status: Bad",
        "Expert Info (Error",
        "Expert Info (Warning",
    ] {
        let hits: Vec<&str> = verbose.lines().filter(|l| l.contains(bad)).collect();
        assert!(hits.is_empty(), "tshark reports {bad:?}: {hits:?}");
    }
    // Every IPv4 header, UDP, TCP and SCTP checksum was verified good.
    let good = verbose
        .lines()
        .filter(|l| l.contains("Checksum Status: Good") || l.contains("checksum status: Good"))
        .count();
    let ipv4 = verbose
        .lines()
        .filter(|l| l.starts_with("Internet Protocol Version 4"))
        .count();
    // Each frame holds exactly one UDP, TCP or SCTP header.
    let l4 = verbose.lines().filter(|l| l.starts_with("Frame ")).count();
    println!("tshark: {good} checksums good, {ipv4} IPv4 headers, {l4} transport headers");
    assert!(l4 >= expect.len(), "{l4}");
    assert_eq!(good, ipv4 + l4);
    let expert = run(&["-q", "-z", "expert,warn"]);
    assert!(!expert.contains("Malformed"), "{expert}");
    let rsp = run(&["-Y", "asap || enrp", "-T", "fields", "-e", "frame.number"]);
    let frames = rsp.lines().filter(|l| !l.trim().is_empty()).count();
    let rserpool = expect
        .iter()
        .filter(|(t, _)| *t != Transport::TcpStream)
        .count();
    // The fragmented message is reassembled into one frame.
    assert_eq!(frames, rserpool, "{rsp}");
    let _ = std::fs::remove_file(&path);
}

proptest! {
    // Case count from PROPTEST_CASES (default 256); no regression files next to tests/.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// Random byte mutations and truncations of the vector pcaps never panic.
    #[test]
    fn mutated_vectors_never_panic(
        file in 0usize..5,
        muts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..24),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
        verify in any::<bool>(),
    ) {
        let (_, data) = &vector_pcaps()[file % vector_pcaps().len()];
        let mut v = data.to_vec();
        for (i, b) in muts {
            let i = i.index(v.len());
            v[i] = b;
        }
        if truncate {
            v.truncate(cut.index(v.len() + 1));
        }
        let cfg = CaptureConfig { verify_sctp_checksum: verify, ..Default::default() };
        if let Ok(cap) = Capture::read(v.into(), &cfg) {
            prop_assert!(cap.stats.frames <= 600);
            prop_assert_eq!(cap.stats.malformed as usize, cap.errors.len());
        }
    }
}
