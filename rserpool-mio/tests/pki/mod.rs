//! Certificates made at test time with rcgen, for the TLS tests of both drivers
//! (`rserpool-mio/tests/tls.rs`, and through `#[path]` `rserpool-async-std/tests/tls.rs` and
//! the unit tests of `rserpool-mio/src/transport/tls.rs`).
#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA: its certificate (PEM) and an issuer for leaves.
pub fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(p, key))
}

/// A party's certificate by `issuer` (common name `name`, subjectAltName "rserpool", usable
/// as TLS server and client): (certificate PEM, key PEM).
pub fn leaf(name: &str, issuer: &Issuer<'static, KeyPair>) -> (String, String) {
    leaf_with_names(name, issuer, &["rserpool"])
}

/// As [`leaf`], with the DNS names `names` (none: a certificate naming no host, as a PE's
/// may).
pub fn leaf_with_names(
    name: &str,
    issuer: &Issuer<'static, KeyPair>,
    names: &[&str],
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let mut p = CertificateParams::new(names).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}
