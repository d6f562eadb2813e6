//! Mutually authenticated TLS over the TCP mapping, on 127.0.0.1: certificates made at test
//! time with rcgen (a CA, two registrars, a PE, a stranger signed by another CA).
//! Transport level (two `Transports` in one poll) and the real programs: two registrars
//! peered over TLS, a PE and `rspterminal` over TLS, strangers and plain peers refused.
//! Every wait ends by itself.

mod common;
mod pki;

use common::*;
use pki::{leaf, new_ca};
use rcgen::{Issuer, KeyPair};
use rserpool_core::Protocol;
use rserpool_mio::programs::cluster::{
    Proc, Programs, TerminalProc, free_ports, wait_for_listener,
};
use rserpool_mio::transport::{
    DownReason, TlsPolicy, TlsSettings, TransportConfig, TransportEvent, TransportKind,
};
use rserpool_proto::rtf::ChannelKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TCP: TransportKind = TransportKind::Tcp;
const LIMIT: Duration = Duration::from_secs(20);

/// Certificate and key files of one party.
struct Party {
    cert: PathBuf,
    key: PathBuf,
    /// The CA this party trusts (always the deployment's CA).
    ca: PathBuf,
}

impl Party {
    fn args(&self) -> Vec<String> {
        vec![
            format!("-tls-cert={}", self.cert.display()),
            format!("-tls-key={}", self.key.display()),
            format!("-tls-ca={}", self.ca.display()),
        ]
    }

    fn settings(&self) -> Arc<TlsSettings> {
        Arc::new(TlsSettings::from_pem_files(&self.cert, &self.key, &self.ca, "rserpool").unwrap())
    }
}

/// The test PKI, written to a temporary directory (removed on drop).
struct Pki {
    dir: PathBuf,
    reg1: Party,
    reg2: Party,
    pe: Party,
    /// Signed by another CA (but trusting ours).
    stranger: Party,
}

impl Pki {
    fn new(test: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("rserpool-tls-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_pem, ca) = new_ca("rserpool test CA");
        let (_, other) = new_ca("stranger CA");
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca_pem).unwrap();
        let party = |name: &str, issuer: &Issuer<'static, KeyPair>| {
            let (cert, key) = leaf(name, issuer);
            let (c, k) = (
                dir.join(format!("{name}.pem")),
                dir.join(format!("{name}.key")),
            );
            std::fs::write(&c, cert).unwrap();
            std::fs::write(&k, key).unwrap();
            Party {
                cert: c,
                key: k,
                ca: ca_path.clone(),
            }
        };
        Pki {
            reg1: party("registrar1", &ca),
            reg2: party("registrar2", &ca),
            pe: party("pe", &ca),
            stranger: party("stranger", &other),
            dir,
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn tls_cfg(p: &Party, channels: ChannelKind) -> TransportConfig {
    TransportConfig {
        tls: Some(TlsPolicy::new(p.settings(), channels)),
        ..TransportConfig::default()
    }
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn ups(ev: &[TransportEvent]) -> usize {
    ev.iter()
        .filter(|e| matches!(e, TransportEvent::Up { .. }))
        .count()
}

#[test]
fn tls_association_carries_messages_and_closes_gracefully() {
    let pki = Pki::new("assoc");
    let mut net = Net::new(
        tls_cfg(&pki.reg1, ChannelKind::Enrp),
        tls_cfg(&pki.reg2, ChannelKind::Enrp),
    );
    let l = net.a.listen(&[any_port()], TCP, ChannelKind::Enrp).unwrap();
    let addr = net.a.socket_local_addrs(l).unwrap()[0];
    let on_b = net
        .b
        .connect(&[addr], TCP, ChannelKind::Enrp, Protocol::Enrp)
        .unwrap();
    // Queued before the handshake: leaves once it is done.
    net.b.send(on_b, 12, 0, payload(1, 100)).unwrap();
    let on_a = net.wait_for("Up on A", LIMIT, |n| {
        take_up(&mut n.ea).map(|e| up_assoc(&e))
    });
    net.wait_for("Up on B", LIMIT, |n| take_up(&mut n.eb));
    let (ppid, _, data) = net.wait_for("first message", LIMIT, |n| take_message(&mut n.ea, on_a));
    assert_eq!((ppid, data), (12, payload(1, 100)));
    // Large and many messages both ways, in order.
    for i in 0..50u64 {
        net.a.send(on_a, 12, 0, payload(100 + i, 70_000)).unwrap();
        net.b.send(on_b, 12, 0, payload(200 + i, 300)).unwrap();
    }
    for i in 0..50u64 {
        let (_, _, d) = net.wait_for("A→B", LIMIT, |n| take_message(&mut n.eb, on_b));
        assert_eq!(d, payload(100 + i, 70_000));
        let (_, _, d) = net.wait_for("B→A", LIMIT, |n| take_message(&mut n.ea, on_a));
        assert_eq!(d, payload(200 + i, 300));
    }
    // Graceful close: close_notify + FIN, A sees a shutdown.
    assert!(net.b.close(on_b, false));
    let r = net.wait_for("Down on A", LIMIT, |n| take_down(&mut n.ea, on_a));
    assert_eq!(r, DownReason::Shutdown);
}

#[test]
fn stranger_and_plain_clients_are_refused_and_the_listener_keeps_serving() {
    let pki = Pki::new("refuse");
    let server_cfg = tls_cfg(&pki.reg1, ChannelKind::AsapToRegistrar);
    for (client_cfg, why) in [
        (
            tls_cfg(&pki.stranger, ChannelKind::AsapToRegistrar),
            "stranger",
        ),
        (TransportConfig::default(), "plain"),
    ] {
        let mut net = Net::new(server_cfg.clone(), client_cfg);
        let l = net
            .a
            .listen(&[any_port()], TCP, ChannelKind::AsapToRegistrar)
            .unwrap();
        let addr = net.a.socket_local_addrs(l).unwrap()[0];
        let on_b = net
            .b
            .connect(&[addr], TCP, ChannelKind::AsapToRegistrar, Protocol::Asap)
            .unwrap();
        net.b.send(on_b, 11, 0, payload(7, 64)).unwrap();
        let r = net.wait_for(why, LIMIT, |n| take_down(&mut n.eb, on_b));
        assert_eq!(r, DownReason::ConnectFailed, "{why}");
        net.run_for(Duration::from_millis(200));
        assert_eq!(
            ups(&net.ea),
            0,
            "{why}: A reported {:?}",
            summarize(&net.ea)
        );
        assert!(
            !net.ea
                .iter()
                .any(|e| matches!(e, TransportEvent::Message { .. })),
            "{why}"
        );
        assert_eq!(net.a.association_count(), 0, "{why}");
        // The listener still serves a client with a good certificate.
        let mut good = Net::new(
            TransportConfig::default(),
            tls_cfg(&pki.pe, ChannelKind::AsapToRegistrar),
        );
        let on_g = good
            .b
            .connect(&[addr], TCP, ChannelKind::AsapToRegistrar, Protocol::Asap)
            .unwrap();
        good.b.send(on_g, 11, 0, payload(8, 64)).unwrap();
        let deadline = Instant::now() + LIMIT;
        let mut got = None;
        while got.is_none() {
            assert!(Instant::now() < deadline, "{why}: good client not served");
            net.step();
            good.step();
            got = net.ea.iter().find_map(|e| match e {
                TransportEvent::Message { data, .. } => Some(data.clone()),
                _ => None,
            });
        }
        assert_eq!(got, Some(payload(8, 64)), "{why}");
    }
}

#[test]
fn tls_over_sctp_is_refused() {
    let pki = Pki::new("sctp");
    let mut net = Net::new(
        tls_cfg(&pki.reg1, ChannelKind::Enrp),
        TransportConfig::default(),
    );
    let e = net
        .a
        .listen(&[any_port()], TransportKind::Sctp, ChannelKind::Enrp)
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{e}");
    let e = net
        .a
        .connect(
            &[any_port()],
            TransportKind::Sctp,
            ChannelKind::Enrp,
            Protocol::Enrp,
        )
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{e}");
    // A kind the policy does not cover is not affected.
    assert!(
        net.a
            .listen(&[any_port()], TCP, ChannelKind::Session)
            .is_ok()
    );
}

// --- the programs ---------------------------------------------------------------------------

fn programs() -> Programs {
    Programs::in_dir(
        Path::new(env!("CARGO_BIN_EXE_rspregistrar"))
            .parent()
            .expect("binary directory"),
    )
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn registrar_args(
    id: u32,
    asap: SocketAddr,
    enrp: SocketAddr,
    peers: &[SocketAddr],
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        format!("-identifier={id:#x}"),
        format!("-asap={asap}"),
        format!("-enrp={enrp}"),
        "-asapannounce=off".into(),
        "-enrpannounce=off".into(),
        "-minaddressscope=loopback".into(),
        "-transport=tcp".into(),
        "-peerheartbeatcycle=1000".into(),
        "-peermaxtimelastheard=1000".into(),
        "-peermaxtimenoresponse=1000".into(),
        "-quiet".into(),
        "-loglevel=3".into(),
    ];
    args.extend(peers.iter().map(|p| format!("-peer={p}")));
    args
}

fn pe_args(id: u32, registrar: SocketAddr) -> Vec<String> {
    vec![
        "-echo".into(),
        format!("-identifier={id:#x}"),
        format!("-registrar={registrar}"),
        "-local=127.0.0.1".into(),
        "-asapannounce=off".into(),
        "-transport=tcp".into(),
        "-quiet".into(),
        "-loglevel=3".into(),
    ]
}

/// `hsdump` of the registrar at `enrp` over TLS (`None`: it failed).
fn hsdump(enrp: SocketAddr, tls: &[String]) -> Option<String> {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hsdump"))
        .args([
            enrp.to_string(),
            "-transport=tcp".into(),
            "-timeout=3000".into(),
        ])
        .args(tls)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start hsdump");
    let end = Instant::now() + LIMIT;
    while child.try_wait().expect("hsdump status").is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("hsdump output");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `hsdump` until `pred` holds for the dump.
fn wait_dump(what: &str, enrp: SocketAddr, tls: &[String], pred: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + LIMIT;
    loop {
        let d = hsdump(enrp, tls);
        if let Some(d) = d.as_deref()
            && pred(d)
        {
            return d.to_owned();
        }
        assert!(
            Instant::now() < end,
            "timed out waiting until {what}: {d:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pe_lines(dump: &str) -> Vec<&str> {
    dump.lines().filter(|l| l.starts_with("  PE $")).collect()
}

#[test]
fn registrars_pe_and_terminal_over_tls_strangers_refused() {
    let pki = Pki::new("programs");
    let dir = programs();
    let p = free_ports(5).expect("free ports");
    let (asap1, enrp1, asap2, enrp2, enrp_x) =
        (addr(p[0]), addr(p[1]), addr(p[2]), addr(p[3]), addr(p[4]));
    let spawn = |name: &str, prog: &str, args: Vec<String>| {
        let log = pki.dir.join(format!("{name}.log"));
        Proc::spawn(&dir, prog, &args, name.to_owned(), Some(&log)).expect("spawn")
    };
    let with = |mut a: Vec<String>, extra: Vec<String>| {
        a.extend(extra);
        a
    };
    let tls_asap = |party: &Party| with(party.args(), vec!["-tls-asap".into()]);
    let _r1 = spawn(
        "registrar1",
        "rspregistrar",
        with(
            registrar_args(0x1001, asap1, enrp1, &[enrp2]),
            tls_asap(&pki.reg1),
        ),
    );
    let _r2 = spawn(
        "registrar2",
        "rspregistrar",
        with(
            registrar_args(0x1002, asap2, enrp2, &[enrp1]),
            tls_asap(&pki.reg2),
        ),
    );
    assert!(wait_for_listener(asap1, LIMIT) && wait_for_listener(asap2, LIMIT));
    let _pe = spawn("pe", "rspserver", with(pe_args(0x21, asap1), pki.pe.args()));
    // Strangers: a PE with a certificate of another CA, a PE without TLS, and a registrar
    // of another CA peering with registrar 1.
    let _pe_x = spawn(
        "pe-stranger",
        "rspserver",
        with(pe_args(0x66, asap1), pki.stranger.args()),
    );
    let _pe_plain = spawn("pe-plain", "rspserver", pe_args(0x67, asap2));
    let _rx = spawn(
        "registrar-stranger",
        "rspregistrar",
        with(
            registrar_args(0x1066, addr(0), enrp_x, &[enrp1]),
            tls_asap(&pki.stranger),
        ),
    );
    // Both registrars, asked over TLS, hold the one PE at home with registrar 1.
    let tls = pki.reg2.args();
    let d1 = wait_dump("registrar 1 knows the PE", enrp1, &tls, |d| {
        pe_lines(d).len() == 1
    });
    let d2 = wait_dump("registrar 2 knows the PE", enrp2, &tls, |d| {
        pe_lines(d).len() == 1
    });
    for d in [&d1, &d2] {
        assert!(
            pe_lines(d)[0].starts_with("  PE $00000021: home $00001001"),
            "{d}"
        );
    }
    assert!(d1.contains("Peer $00001002"), "{d1}");
    // rspterminal over TLS gets its lines echoed by the PE.
    let mut term_args = vec![
        "-asapannounce=off".into(),
        "-transport=tcp".into(),
        "-poolhandle=EchoPool".into(),
        format!("-registrar={asap2}"),
    ];
    term_args.extend(pki.pe.args());
    let mut t = TerminalProc::spawn(&dir, &term_args).expect("start rspterminal");
    for i in 1..=3 {
        t.send_line(&format!("line {i}"))
            .expect("write to rspterminal");
        let a = t
            .next_answer(LIMIT)
            .unwrap_or_else(|| panic!("no echo of line {i}: {:?}", t.stderr_lines()));
        assert_eq!(a.text, format!("line {i}"));
    }
    t.close_input();
    // Meanwhile the strangers got nowhere: still one PE, no foreign peer, and the
    // registrars refuse hsdump without TLS and with the stranger's certificate.
    std::thread::sleep(Duration::from_millis(1500));
    for enrp in [enrp1, enrp2] {
        let d = hsdump(enrp, &tls).expect("hsdump over TLS");
        assert_eq!(pe_lines(&d).len(), 1, "{d}");
        assert!(!d.contains("$00001066"), "{d}");
        assert!(hsdump(enrp, &[]).is_none(), "plain hsdump answered");
        assert!(
            hsdump(enrp, &pki.stranger.args()).is_none(),
            "stranger answered"
        );
    }
    let log = std::fs::read_to_string(pki.dir.join("registrar1.log")).unwrap_or_default();
    assert!(
        log.contains("TLS failed"),
        "registrar 1 logged no refused peer: {log}"
    );
}
