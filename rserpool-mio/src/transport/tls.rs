//! Mutually authenticated TLS for the TCP mapping (our addition, off by default).
//!
//! RFC 5355 (threats to RSerPool) recommends transport security between registrars and for
//! ASAP; RSPLIB has none, so it is opt-in here and a plain configuration stays wire-compatible
//! with RSPLIB. When a [`TlsPolicy`] is set in [`super::TransportConfig::tls`], every TCP
//! association whose RTF channel kind the policy covers runs RTF (`tcp-mapping.md` §3) inside
//! a TLS 1.3 connection:
//!
//! * an outgoing association of a covered kind is a TLS client that presents its certificate
//!   and checks the server's chain against the configured CA and its name against
//!   [`TlsSettings::server_name`] (default [`DEFAULT_SERVER_NAME`]);
//! * a TCP listener serving a covered kind is a TLS server that **requires** a client
//!   certificate signed by the CA (rustls `WebPkiClientVerifier`). A peer without one fails
//!   the handshake: not one RTF byte of it reaches RTF or the machine, and no `Up` is
//!   reported.
//!
//! # Why one server name
//! Registrars and PEs find registrars by address (announces, static peers, Server
//! Information parameters), never by a DNS name, so a per-host name cannot be checked.
//! Instead every certificate that acts as a TLS server (every registrar's) carries one
//! deployment-wide DNS name in its subjectAltName (`rserpool` unless configured otherwise).
//! Trust therefore means "holds a certificate and key issued by this deployment's CA with
//! that name": a dedicated CA per RSerPool deployment is assumed. Client certificates need
//! no particular name (a PE's certificate need not carry it).
//!
//! # The layer
//! [`TlsLayer`] is rustls's sans-IO connection driven with the non-blocking mio stream:
//! `read_tls` + `process_new_packets` on readable, plaintext handed to the
//! `RtfConnection`; RTF output is written into rustls's plaintext buffer and `write_tls`
//! moves records to the socket on writable. TLS over SCTP (DTLS, RFC 6083) is not provided:
//! [`super::Transports`] refuses a TLS-covered SCTP listener or association.
//!
//! Crypto: rustls with the `ring` provider, TLS 1.3 only.

use rserpool_proto::rtf::{ChannelKind, ChannelKinds};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};
use rustls::{ServerConnection, version::TLS13};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

/// The server name checked in registrar certificates unless configured otherwise.
pub const DEFAULT_SERVER_NAME: &str = "rserpool";

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Certificates, key and trust anchors of one program: a rustls server configuration (client
/// certificate required) and a client configuration (our certificate presented), both
/// trusting only the configured CA.
pub struct TlsSettings {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// Settings from PEM text: `cert_pem` is our certificate chain (leaf first), `key_pem`
    /// its private key (PKCS#8, PKCS#1 or SEC1), `ca_pem` the CA certificate(s) that must
    /// have issued every peer's certificate, `server_name` the DNS name a registrar's
    /// certificate must carry. Errors name what is wrong.
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_pem: &[u8],
        server_name: &str,
    ) -> io::Result<Self> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("certificate: {e}")))?;
        if chain.is_empty() {
            return Err(invalid("certificate: no CERTIFICATE in PEM".into()));
        }
        let key =
            PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| invalid(format!("key: {e}")))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem) {
            let ca = ca.map_err(|e| invalid(format!("CA: {e}")))?;
            roots
                .add(ca)
                .map_err(|e| invalid(format!("CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(invalid("CA: no CERTIFICATE in PEM".into()));
        }
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| invalid(format!("server name {server_name:?}: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(roots);
        let server = Self::server_config(&provider, &roots, chain.clone(), key.clone_key())?;
        let client = Self::client_config(&provider, &roots, chain, key)?;
        Ok(TlsSettings {
            server: Arc::new(server),
            client: Arc::new(client),
            server_name,
        })
    }

    fn server_config(
        provider: &Arc<CryptoProvider>,
        roots: &Arc<RootCertStore>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> io::Result<ServerConfig> {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| invalid(format!("client verifier: {e}")))?;
        ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&TLS13])
            .map_err(|e| invalid(format!("TLS: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| invalid(format!("certificate/key: {e}")))
    }

    fn client_config(
        provider: &Arc<CryptoProvider>,
        roots: &Arc<RootCertStore>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> io::Result<ClientConfig> {
        let verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| invalid(format!("server verifier: {e}")))?;
        ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&TLS13])
            .map_err(|e| invalid(format!("TLS: {e}")))?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(chain, key)
            .map_err(|e| invalid(format!("certificate/key: {e}")))
    }

    /// [`TlsSettings::from_pem`] with the PEM read from files (`-tls-cert=`, `-tls-key=`,
    /// `-tls-ca=`).
    pub fn from_pem_files(
        cert: &Path,
        key: &Path,
        ca: &Path,
        server_name: &str,
    ) -> io::Result<Self> {
        let read = |what: &str, p: &Path| {
            std::fs::read(p).map_err(|e| io::Error::new(e.kind(), format!("{what} {p:?}: {e}")))
        };
        Self::from_pem(
            &read("certificate", cert)?,
            &read("key", key)?,
            &read("CA", ca)?,
            server_name,
        )
    }

    /// The DNS name a registrar's (TLS server's) certificate must carry.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// A server-side layer for an accepted connection.
    pub fn accept(&self) -> io::Result<TlsLayer> {
        let c = ServerConnection::new(self.server.clone()).map_err(io::Error::other)?;
        Ok(TlsLayer::new(Connection::Server(c)))
    }

    /// A client-side layer for an outgoing connection (its ClientHello is queued at once).
    pub fn connect(&self) -> io::Result<TlsLayer> {
        let c = ClientConnection::new(self.client.clone(), self.server_name.clone())
            .map_err(io::Error::other)?;
        Ok(TlsLayer::new(Connection::Client(c)))
    }
}

/// Which associations run over TLS: [`super::TransportConfig::tls`].
#[derive(Clone, Debug)]
pub struct TlsPolicy {
    /// Certificates and trust.
    pub settings: Arc<TlsSettings>,
    /// RTF channel kinds carried over TLS: outgoing associations of these kinds connect with
    /// TLS, TCP listeners serving any of them require TLS.
    pub channels: ChannelKinds,
}

impl PartialEq for TlsPolicy {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.settings, &other.settings) && self.channels == other.channels
    }
}

impl Eq for TlsPolicy {}

impl TlsPolicy {
    /// TLS with `settings` for the channel kinds `channels`.
    pub fn new(settings: Arc<TlsSettings>, channels: impl Into<ChannelKinds>) -> Self {
        TlsPolicy {
            settings,
            channels: channels.into(),
        }
    }

    /// True when associations of `kind` use TLS.
    pub fn covers(&self, kind: ChannelKind) -> bool {
        self.channels.contains(kind)
    }

    /// True when a listener serving `kinds` requires TLS (it serves a covered kind).
    pub fn covers_any(&self, kinds: ChannelKinds) -> bool {
        kinds.iter().any(|k| self.covers(k))
    }
}

/// What one [`TlsLayer::read_once`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsRead {
    /// Records were read (and their plaintext, if any, handed on).
    Progress,
    /// The peer closed: TCP EOF or TLS close_notify (plaintext before it was handed on).
    Eof,
    /// Nothing to read now.
    WouldBlock,
}

/// Why reading failed.
#[derive(Debug)]
pub enum TlsReadError {
    /// The socket failed.
    Io(io::Error),
    /// TLS failed: bad certificate, handshake or record (an alert is queued for the peer).
    Tls(rustls::Error),
}

/// One side of a TLS connection over a non-blocking byte stream (sans-IO: the caller owns
/// the socket).
pub struct TlsLayer {
    conn: Connection,
    close_notify_sent: bool,
}

impl std::fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsLayer")
            .field("handshaking", &self.conn.is_handshaking())
            .field("close_notify_sent", &self.close_notify_sent)
            .finish_non_exhaustive()
    }
}

impl TlsLayer {
    fn new(conn: Connection) -> Self {
        TlsLayer {
            conn,
            close_notify_sent: false,
        }
    }

    /// True until the handshake (peer authentication included) has completed.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Reads once from `rd` (at most a few KiB), processes the records and hands every
    /// plaintext byte to `sink` in order, using `buf` as scratch space.
    pub fn read_once(
        &mut self,
        rd: &mut dyn Read,
        buf: &mut [u8],
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<TlsRead, TlsReadError> {
        let n = match self.conn.read_tls(rd) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(TlsRead::WouldBlock),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(TlsRead::Progress),
            Err(e) => return Err(TlsReadError::Io(e)),
        };
        self.conn.process_new_packets().map_err(TlsReadError::Tls)?;
        loop {
            match self.conn.reader().read(buf) {
                // close_notify received: the peer's stream ends here.
                Ok(0) => return Ok(TlsRead::Eof),
                Ok(k) => sink(buf.get(..k).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // TCP EOF without close_notify.
                Err(_) => return Ok(TlsRead::Eof),
            }
        }
        Ok(if n == 0 {
            TlsRead::Eof
        } else {
            TlsRead::Progress
        })
    }

    /// Takes plaintext to send; returns how much was taken (0 when rustls's buffer is full:
    /// write records out first).
    pub fn write_plain(&mut self, data: &[u8]) -> io::Result<usize> {
        self.conn.writer().write(data)
    }

    /// True when records are waiting to be written.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Writes waiting records to `wr` until none is left (`Ok(true)`) or `wr` would block
    /// (`Ok(false)`).
    pub fn write_records(&mut self, wr: &mut dyn Write) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(wr) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Queues close_notify (once): our stream ends after the plaintext already taken.
    pub fn close_notify(&mut self) {
        if !self.close_notify_sent {
            self.conn.send_close_notify();
            self.close_notify_sent = true;
        }
    }
}

/// The test PKI shared with the integration tests of both drivers.
#[cfg(test)]
#[path = "../../tests/pki/mod.rs"]
mod test_pki;

#[cfg(test)]
mod tests {
    use super::*;
    use test_pki::{leaf_with_names, new_ca as ca};

    /// A party's certificate by `issuer` naming the hosts `names`.
    fn leaf(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, names: &[&str]) -> (String, String) {
        leaf_with_names("party", issuer, names)
    }

    fn settings(leaf: &(String, String), ca: &str, name: &str) -> TlsSettings {
        TlsSettings::from_pem(leaf.0.as_bytes(), leaf.1.as_bytes(), ca.as_bytes(), name).unwrap()
    }

    /// Moves every record `from` has into `to`, collecting the plaintext `to` decrypts.
    fn transfer(
        from: &mut TlsLayer,
        to: &mut TlsLayer,
        got: &mut Vec<u8>,
    ) -> Result<(), TlsReadError> {
        let mut wire = Vec::new();
        assert!(from.write_records(&mut wire).unwrap());
        let mut rd: &[u8] = &wire;
        let mut buf = [0u8; 512];
        while !rd.is_empty() {
            to.read_once(&mut rd, &mut buf, &mut |p| got.extend_from_slice(p))?;
        }
        Ok(())
    }

    #[test]
    fn mutual_authentication_and_bytes_both_ways() {
        let (ca_pem, issuer) = ca("test CA");
        let server = settings(&leaf(&issuer, &["rserpool"]), &ca_pem, "rserpool");
        // A PE's certificate needs no name.
        let client = settings(&leaf(&issuer, &[]), &ca_pem, DEFAULT_SERVER_NAME);
        let mut s = server.accept().unwrap();
        let mut c = client.connect().unwrap();
        // Taken before the handshake, sent once it is done.
        let big: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        assert_eq!(c.write_plain(&big).unwrap(), big.len());
        let (mut got_s, mut got_c) = (Vec::new(), Vec::new());
        for _ in 0..6 {
            transfer(&mut c, &mut s, &mut got_s).unwrap();
            transfer(&mut s, &mut c, &mut got_c).unwrap();
        }
        assert!(!c.is_handshaking() && !s.is_handshaking());
        assert_eq!(got_s, big);
        assert_eq!(s.write_plain(b"answer").unwrap(), 6);
        transfer(&mut s, &mut c, &mut got_c).unwrap();
        assert_eq!(got_c, b"answer");
        // close_notify ends the stream cleanly.
        c.close_notify();
        let mut wire = Vec::new();
        assert!(c.write_records(&mut wire).unwrap());
        let mut rd: &[u8] = &wire;
        let r = s.read_once(&mut rd, &mut [0u8; 64], &mut |_| panic!("no more data"));
        assert_eq!(r.unwrap(), TlsRead::Eof);
    }

    #[test]
    fn a_client_of_another_ca_is_refused_before_any_byte_passes() {
        let (ca_pem, issuer) = ca("test CA");
        let (_, other) = ca("stranger CA");
        let server = settings(&leaf(&issuer, &["rserpool"]), &ca_pem, "rserpool");
        // The stranger trusts our CA (it can check the server) but its own key is foreign.
        let stranger = settings(&leaf(&other, &["rserpool"]), &ca_pem, "rserpool");
        let mut s = server.accept().unwrap();
        let mut c = stranger.connect().unwrap();
        c.write_plain(b"HELLO").unwrap();
        let (mut got_s, mut got_c) = (Vec::new(), Vec::new());
        transfer(&mut c, &mut s, &mut got_s).unwrap();
        transfer(&mut s, &mut c, &mut got_c).unwrap();
        let err = transfer(&mut c, &mut s, &mut got_s).unwrap_err();
        assert!(matches!(err, TlsReadError::Tls(_)), "{err:?}");
        assert!(got_s.is_empty(), "plaintext of an unauthenticated client");
        // The server's alert makes the client fail too.
        let err = transfer(&mut s, &mut c, &mut got_c).unwrap_err();
        assert!(matches!(err, TlsReadError::Tls(_)), "{err:?}");
        assert!(got_c.is_empty());
    }

    #[test]
    fn a_server_of_another_ca_or_name_is_refused() {
        let (ca_pem, issuer) = ca("test CA");
        let (_, other) = ca("stranger CA");
        let client = settings(&leaf(&issuer, &[]), &ca_pem, "rserpool");
        for (server_leaf, why) in [
            (leaf(&other, &["rserpool"]), "foreign CA"),
            (leaf(&issuer, &["elsewhere"]), "wrong name"),
        ] {
            let server = settings(&server_leaf, &ca_pem, "rserpool");
            let mut s = server.accept().unwrap();
            let mut c = client.connect().unwrap();
            let (mut got_s, mut got_c) = (Vec::new(), Vec::new());
            transfer(&mut c, &mut s, &mut got_s).unwrap();
            let err = transfer(&mut s, &mut c, &mut got_c).unwrap_err();
            assert!(matches!(err, TlsReadError::Tls(_)), "{why}: {err:?}");
        }
    }

    #[test]
    fn bad_pem_is_reported() {
        let (ca_pem, issuer) = ca("test CA");
        let (cert, key) = leaf(&issuer, &["rserpool"]);
        let e = TlsSettings::from_pem(b"", key.as_bytes(), ca_pem.as_bytes(), "rserpool");
        assert!(e.unwrap_err().to_string().contains("certificate"));
        let e = TlsSettings::from_pem(cert.as_bytes(), b"junk", ca_pem.as_bytes(), "rserpool");
        assert!(e.unwrap_err().to_string().contains("key"));
        let e = TlsSettings::from_pem(cert.as_bytes(), key.as_bytes(), b"", "rserpool");
        assert!(e.unwrap_err().to_string().contains("CA"));
        // A key that does not belong to the certificate.
        let (_, other_key) = leaf(&issuer, &["rserpool"]);
        let e = TlsSettings::from_pem(
            cert.as_bytes(),
            other_key.as_bytes(),
            ca_pem.as_bytes(),
            "rserpool",
        );
        assert!(e.is_err());
        let e = TlsSettings::from_pem(cert.as_bytes(), key.as_bytes(), ca_pem.as_bytes(), "");
        assert!(e.unwrap_err().to_string().contains("server name"));
    }
}
