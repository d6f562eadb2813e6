//! `rspwire`: decode and check single ASAP/ENRP messages.
//!
//! ```text
//! rspwire decode [--proto asap|enrp] FILE...     print each message; exit 1 if any is malformed
//! rspwire roundtrip [--proto asap|enrp] FILE...  exit 0 only if every file re-encodes identically
//! rspwire pcap FILE...                           list every ASAP/ENRP/CSP message of captures
//! ```
//!
//! `pcap` reads classic pcap and pcapng files: SCTP user messages with PPID 11 (ASAP) or 12
//! (ENRP), UDP datagrams on the ASAP announce (3863), ENRP presence (9901) and CSP (2960)
//! ports, and TCP-mapping (RTF) streams on ports 3863 and 9901. Every message is decoded and
//! re-encoded; it exits 1 if any message is malformed or does not re-encode byte-identical.
//! Messages that are well-formed but carry an unknown type or parameter whose action bits say
//! "stop" are listed as `REJECT` with the Operation Error a registrar answers them with.
//!
//! Each FILE holds one message, binary or hex text ('#' starts a comment), like
//! `shared/vectors/rsplib-captures/messages/*.hex`. The protocol comes from the file name
//! prefix (`asap`, `enrp`, `csp`) unless `--proto` is given.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bytes::Bytes;
use rserpool_proto::{AsapMessage, DecodeError, EnrpMessage};

const USAGE: &str = "\
usage: rspwire <command> [options] FILE...

commands:
  decode     print each message readably; exit 1 if any is malformed
  roundtrip  decode and re-encode each message; exit 0 only if all are byte-identical
  pcap       list every ASAP/ENRP/CSP message in captures (SCTP PPID 11/12, UDP 3863/9901/2960,
             TCP-mapping streams on 3863/9901); exit 1 if any is malformed

options:
  --proto asap|enrp   protocol of every FILE (default: from the file name prefix asap/enrp/csp)
  -h, --help          this text

FILE: one message, binary or hex text ('#' starts a comment; *.hex is always hex).
";

/// Protocol of a message file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Asap,
    Enrp,
    Csp,
}

impl Proto {
    fn parse(s: &str) -> Option<Proto> {
        match s.to_ascii_lowercase().as_str() {
            "asap" => Some(Proto::Asap),
            "enrp" => Some(Proto::Enrp),
            "csp" => Some(Proto::Csp),
            _ => None,
        }
    }

    fn from_file_name(path: &Path) -> Option<Proto> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        ["asap", "enrp", "csp"]
            .into_iter()
            .find(|p| name.starts_with(p))
            .and_then(Proto::parse)
    }
}

/// Common options of the message commands.
struct Options {
    proto: Option<Proto>,
    files: Vec<PathBuf>,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut proto = None;
    let mut files = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--proto" => {
                let v = it.next().ok_or("--proto needs a value")?;
                proto = Some(Proto::parse(v).ok_or_else(|| format!("unknown protocol '{v}'"))?);
            }
            s if s.starts_with("--proto=") => {
                let v = &s["--proto=".len()..];
                proto = Some(Proto::parse(v).ok_or_else(|| format!("unknown protocol '{v}'"))?);
            }
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown option '{s}'")),
            _ => files.push(PathBuf::from(a)),
        }
    }
    if files.is_empty() {
        return Err("no FILE given".into());
    }
    Ok(Options { proto, files })
}

/// Reads a message file: hex text (with '#' comments) or binary.
fn read_message(path: &Path) -> Result<Bytes, String> {
    let raw = std::fs::read(path).map_err(|e| e.to_string())?;
    let forced_hex = path.extension().is_some_and(|e| e == "hex" || e == "txt");
    let forced_bin = path.extension().is_some_and(|e| e == "bin");
    if !forced_bin && (forced_hex || looks_like_hex(&raw)) {
        parse_hex(&raw).map(Bytes::from)
    } else {
        Ok(Bytes::from(raw))
    }
}

fn strip_comments(raw: &[u8]) -> impl Iterator<Item = u8> + '_ {
    raw.split(|&b| b == b'\n')
        .flat_map(|line| line.split(|&b| b == b'#').next().unwrap_or_default())
        .copied()
}

fn looks_like_hex(raw: &[u8]) -> bool {
    let mut digits = 0usize;
    for b in strip_comments(raw) {
        if b.is_ascii_hexdigit() {
            digits += 1;
        } else if !b.is_ascii_whitespace() {
            return false;
        }
    }
    digits > 0 && raw.iter().all(|b| b.is_ascii())
}

fn parse_hex(raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut high: Option<u8> = None;
    for b in strip_comments(raw) {
        if b.is_ascii_whitespace() {
            continue;
        }
        let v = char::from(b)
            .to_digit(16)
            .ok_or_else(|| format!("not a hex digit: {:?}", char::from(b)))?;
        let v = u8::try_from(v).map_err(|e| e.to_string())?;
        match high.take() {
            None => high = Some(v),
            Some(h) => out.push(h << 4 | v),
        }
    }
    if high.is_some() {
        return Err("odd number of hex digits".into());
    }
    Ok(out)
}

/// A decoded message of either protocol.
enum Message {
    Asap(AsapMessage),
    Enrp(EnrpMessage),
    Csp(Box<rserpool_proto::csp::CspReport>),
}

impl Message {
    fn decode(proto: Proto, data: &Bytes) -> Result<Message, String> {
        let err = |e: DecodeError| {
            let mut s = format!("malformed: {e}");
            match e.operation_error() {
                Some(c) => s.push_str(&format!("\n  a registrar answers with: {c:?}")),
                None => s.push_str("\n  a registrar discards it silently"),
            }
            s
        };
        match proto {
            Proto::Asap => AsapMessage::decode_bytes(data)
                .map(Message::Asap)
                .map_err(err),
            Proto::Enrp => EnrpMessage::decode_bytes(data)
                .map(Message::Enrp)
                .map_err(err),
            Proto::Csp => rserpool_proto::csp::CspReport::decode(data)
                .map(|r| Message::Csp(Box::new(r)))
                .map_err(|e| format!("malformed: {e}")),
        }
    }

    fn to_bytes(&self) -> Bytes {
        match self {
            Message::Asap(m) => m.to_bytes(),
            Message::Enrp(m) => m.to_bytes(),
            Message::Csp(r) => r.to_bytes().unwrap_or_default(),
        }
    }

    fn summary(&self) -> String {
        let (name, ty, flags, len) = match self {
            Message::Asap(m) => (m.name(), m.message_type(), m.flags(), m.encoded_len()),
            Message::Enrp(m) => (m.name(), m.message_type(), m.flags(), m.encoded_len()),
            Message::Csp(r) => {
                return format!(
                    "CSP Component Status Report from {:?} ({} associations): {}",
                    r.sender_id,
                    r.associations.len(),
                    r.status
                );
            }
        };
        format!("{name} (type {ty:#04x}, flags {flags:#04x}, {len} bytes)")
    }

    fn details(&self) -> String {
        match self {
            Message::Asap(m) => format!("{m:#?}"),
            Message::Enrp(m) => format!("{m:#?}"),
            Message::Csp(r) => format!("{r:#?}"),
        }
    }
}

/// Loads one file and decodes it with the protocol from the options or its name.
fn load(opts: &Options, path: &Path) -> Result<(Bytes, Message), String> {
    let proto = opts
        .proto
        .or_else(|| Proto::from_file_name(path))
        .ok_or("cannot tell the protocol: name the file asap*/enrp*/csp* or use --proto")?;
    let data = read_message(path)?;
    let m = Message::decode(proto, &data)?;
    Ok((data, m))
}

fn cmd_decode(opts: &Options) -> ExitCode {
    let mut bad = 0;
    for path in &opts.files {
        match load(opts, path) {
            Ok((_, m)) => {
                println!("{}: {}", path.display(), m.summary());
                for line in m.details().lines() {
                    println!("    {line}");
                }
            }
            Err(e) => {
                bad += 1;
                println!("{}: {e}", path.display());
            }
        }
    }
    if bad > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn cmd_roundtrip(opts: &Options) -> ExitCode {
    let (mut ok, mut bad) = (0, 0);
    for path in &opts.files {
        let verdict = load(opts, path).and_then(|(data, m)| {
            let again = m.to_bytes();
            if again == data {
                Ok(m.summary())
            } else {
                let at = data
                    .iter()
                    .zip(again.iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(data.len().min(again.len()));
                Err(format!(
                    "re-encoding differs at byte {at} ({} bytes in, {} bytes out)",
                    data.len(),
                    again.len()
                ))
            }
        });
        match verdict {
            Ok(s) => {
                ok += 1;
                println!("OK   {}: {s}", path.display());
            }
            Err(e) => {
                bad += 1;
                println!("FAIL {}: {e}", path.display());
            }
        }
    }
    println!("rspwire roundtrip: {ok} OK, {bad} FAIL");
    if bad > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// A subcommand: runs on the arguments after its name.
type Command = fn(&[String]) -> ExitCode;

/// The subcommands by name (add new ones here, e.g. `pcap`).
const COMMANDS: &[(&str, Command)] = &[
    ("decode", |args| with_options(args, cmd_decode)),
    ("roundtrip", |args| with_options(args, cmd_roundtrip)),
    ("pcap", cmd_pcap),
];

/// What became of one message found in a capture.
enum Verdict {
    /// Decoded, and re-encodes byte-identical.
    Ok(String),
    /// Well-formed, but refused by its action bits (unknown type or parameter, "stop").
    Reject(String),
    /// Malformed, or does not re-encode identically.
    Malformed(String),
}

fn judge(proto: Proto, data: &Bytes) -> Verdict {
    let decoded = match proto {
        Proto::Asap => AsapMessage::decode_bytes(data).map(Message::Asap),
        Proto::Enrp => EnrpMessage::decode_bytes(data).map(Message::Enrp),
        Proto::Csp => {
            return match Message::decode(proto, data) {
                Ok(m) if m.to_bytes() == *data => Verdict::Ok(m.summary()),
                Ok(m) => Verdict::Malformed(format!("{}: re-encoding differs", m.summary())),
                Err(e) => Verdict::Malformed(e),
            };
        }
    };
    match decoded {
        Ok(m) => {
            if m.to_bytes() == *data {
                Verdict::Ok(m.summary())
            } else {
                Verdict::Malformed(format!("{}: re-encoding differs", m.summary()))
            }
        }
        Err(e) => {
            use rserpool_proto::DecodeErrorKind as K;
            let answer = match e.operation_error() {
                Some(c) => format!("answered with cause {:#06x}", c.code),
                None => "discarded silently".to_string(),
            };
            match e.kind {
                K::UnknownMessageType(_) | K::UnknownParameter { .. } => {
                    Verdict::Reject(format!("{e} ({answer})"))
                }
                _ => Verdict::Malformed(format!("{e} ({answer})")),
            }
        }
    }
}

/// Tally of `rspwire pcap`.
#[derive(Default)]
struct Counts {
    ok: u64,
    rejected: u64,
    bad: u64,
}

fn cmd_pcap(args: &[String]) -> ExitCode {
    use rserpool_mio::pcap::{Capture, CaptureConfig, Transport};
    use rserpool_proto::rtf::{Frame, FrameDecoder};

    if args.is_empty() {
        return usage_error("pcap needs at least one capture file");
    }
    let config = CaptureConfig::default();
    let mut counts = Counts::default();
    let report = |counts: &mut Counts, line: String, v: Verdict| match v {
        Verdict::Ok(s) => {
            counts.ok += 1;
            println!("{line} {s}");
        }
        Verdict::Reject(s) => {
            counts.rejected += 1;
            println!("{line} REJECT {s}");
        }
        Verdict::Malformed(s) => {
            counts.bad += 1;
            println!("{line} MALFORMED {s}");
        }
    };
    for file in args {
        let capture = match Capture::read_file(Path::new(file), &config) {
            Ok(c) => c,
            Err(e) => {
                println!("{file}: cannot read: {e}");
                counts.bad += 1;
                continue;
            }
        };
        println!("== {file}: {} frames", capture.stats.frames);
        for e in &capture.errors {
            println!("frame {}: MALFORMED frame: {e}", e.frame_no);
            counts.bad += 1;
        }
        for m in &capture.messages {
            let proto = match m.transport {
                Transport::Sctp { ppid: 11, .. } => Proto::Asap,
                Transport::Sctp { ppid: 12, .. } => Proto::Enrp,
                Transport::Udp => match (m.src.port(), m.dst.port()) {
                    (_, 3863) | (3863, _) => Proto::Asap,
                    (_, 9901) | (9901, _) => Proto::Enrp,
                    (_, 2960) | (2960, _) => Proto::Csp,
                    _ => continue,
                },
                _ => continue,
            };
            let kind = match m.transport {
                Transport::Sctp { .. } => "sctp",
                _ => "udp",
            };
            let line = format!(
                "frame {:>5} {:>10.6}s {} -> {} {kind}:",
                m.frame_no,
                m.timestamp.as_secs_f64(),
                m.src,
                m.dst
            );
            report(&mut counts, line, judge(proto, &m.payload));
        }
        for flow in &capture.tcp_flows {
            if ![3863, 9901].contains(&flow.src.port()) && ![3863, 9901].contains(&flow.dst.port())
            {
                continue;
            }
            let mut decoder = FrameDecoder::new(16 << 20);
            let mut frames = Vec::new();
            let result = decoder.decode(&flow.data, |f| frames.push(f));
            for f in frames {
                if let Frame::Data { ppid, payload, .. } = f {
                    let proto = match ppid {
                        11 => Proto::Asap,
                        12 => Proto::Enrp,
                        _ => continue,
                    };
                    let line = format!("tcp {} -> {} rtf:", flow.src, flow.dst);
                    report(&mut counts, line, judge(proto, &payload));
                }
            }
            if let Err(e) = result {
                println!(
                    "tcp {} -> {}: MALFORMED RTF stream: {e}",
                    flow.src, flow.dst
                );
                counts.bad += 1;
            }
        }
    }
    println!(
        "rspwire pcap: {} OK, {} REJECT, {} MALFORMED",
        counts.ok, counts.rejected, counts.bad
    );
    if counts.bad > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn with_options(args: &[String], run: fn(&Options) -> ExitCode) -> ExitCode {
    match parse_options(args) {
        Ok(opts) => run(&opts),
        Err(e) => usage_error(&e),
    }
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("rspwire: {msg}\n\n{USAGE}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        return usage_error("no command given");
    };
    if cmd == "-h" || cmd == "--help" || args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match COMMANDS.iter().find(|(name, _)| name == cmd) {
        Some((_, run)) => run(args.get(1..).unwrap_or_default()),
        None => usage_error(&format!("unknown command '{cmd}'")),
    }
}
