//! The scripting PE's OpenPGP checks (`-sskeyring=`), done in-process with the `pgp` crate:
//! RSPLIB's `scriptingcontrol check-environment` (`gpg --verify environment.data`) and the
//! input step of `scriptingcontrol run` (`gpg --decrypt --output input.data.decrypt
//! input.data`, which unwraps a signed and/or encrypted work package).
//!
//! * The keyring is a file of OpenPGP keys, binary (`gpg --export > keyring.gpg`) or
//!   ASCII-armoured (`gpg --armor --export`); several files may be concatenated (binary with
//!   binary). Secret keys in it (`gpg --export-secret-keys`, without a passphrase) decrypt
//!   encrypted work packages, and their public parts verify signatures like the public keys.
//!   GnuPG's own `pubring.kbx` keybox format is not read.
//! * `-sstrustdb=` is accepted and handed to `ssrun`, but trusts nothing by itself: every key
//!   of the keyring is trusted. (RSPLIB's `gpg --verify` and `gpg --decrypt` also succeed
//!   for any key of the keyring, whatever its owner trust; the trust DB only changes gpg's
//!   warnings. RSPLIB checks nothing unless both files are given; ours checks whenever a
//!   keyring is given.)
//! * An environment is accepted if it is an OpenPGP **signed message** (`gpg --sign`,
//!   binary or armoured, compressed or not; or `gpg --clearsign`) with a valid signature by
//!   a key (primary or subkey) of the keyring. Anything else is refused and the PE aborts
//!   the session, as with RSPLIB's failing `gpg --verify`.
//! * A work package (the input) is accepted if it is a signed message as above, optionally
//!   encrypted to a secret key of the keyring (`gpg --sign [--encrypt -r KEY]`, what
//!   RSPLIB's `scriptingserviceexample` sends with a keyring); the signed content is what
//!   is unpacked. Deliberately stricter than RSPLIB's `gpg --decrypt`, which also runs an
//!   *unsigned* message encrypted to the PE: the work package is code the PE runs, and anyone
//!   may encrypt to a public key, so only a signature says who made it.
//! * Without a keyring nothing is verified (RSPLIB prints "Skipping verification").

use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use pgp::composed::{
    CleartextSignedMessage, Message, PublicOrSecret, SignedPublicKey, SignedSecretKey,
};
use pgp::types::{Password, VerifyingKey};
use rserpool_core::services::scripting::{HostError, KeyringCheck};

/// Public keys to verify environments and work packages with, and secret keys to decrypt
/// work packages with.
#[derive(Debug)]
pub struct Keyring {
    /// Every key's public part (also the secret keys').
    keys: Vec<SignedPublicKey>,
    /// Secret keys (without a passphrase).
    secret: Vec<SignedSecretKey>,
}

/// Most bytes of an environment kept for verification (larger ones are refused).
pub const MAX_VERIFIED_SIZE: usize = 256 << 20;

impl Keyring {
    /// Reads the public keys from `path` (binary or armoured); at least one is required.
    pub fn load(path: &Path) -> io::Result<Keyring> {
        let data = std::fs::read(path)?;
        Keyring::from_bytes(&data).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }

    /// Parses public and secret keys; at least one is required.
    pub fn from_bytes(data: &[u8]) -> Result<Keyring, String> {
        let (iter, _) = PublicOrSecret::from_reader_many(io::Cursor::new(data.to_vec()))
            .map_err(|e| e.to_string())?;
        let mut keys = Vec::new();
        let mut secret = Vec::new();
        for k in iter {
            match k {
                Ok(PublicOrSecret::Public(k)) => keys.push(k),
                Ok(PublicOrSecret::Secret(k)) => {
                    keys.push(k.to_public_key());
                    secret.push(k);
                }
                Err(e) => return Err(format!("bad key: {e}")),
            }
        }
        if keys.is_empty() {
            return Err("no key in the keyring".into());
        }
        Ok(Keyring { keys, secret })
    }

    /// Number of keys (primary keys, public and secret).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Number of secret keys (those that decrypt).
    pub fn secret_len(&self) -> usize {
        self.secret.len()
    }

    /// True without keys (never for a loaded keyring).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn verifying_keys(&self) -> Vec<&dyn VerifyingKey> {
        let mut v: Vec<&dyn VerifyingKey> = Vec::new();
        for k in &self.keys {
            v.push(k);
            for s in &k.public_subkeys {
                v.push(s);
            }
        }
        v
    }

    /// Verifies a signed message (binary, armoured or cleartext-signed); returns the signed
    /// content.
    pub fn verify_signed_message(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        guarded(|| self.verify_signed_message_inner(data, MAX_VERIFIED_SIZE))
    }

    fn verify_signed_message_inner(&self, data: &[u8], limit: usize) -> Result<Vec<u8>, String> {
        let keys = self.verifying_keys();
        if data.starts_with(b"-----BEGIN PGP SIGNED MESSAGE-----") {
            let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
            let (msg, _) = CleartextSignedMessage::from_string(text).map_err(|e| e.to_string())?;
            let valid = self.keys.iter().any(|k| {
                msg.verify(k).is_ok() || k.public_subkeys.iter().any(|s| msg.verify(s).is_ok())
            });
            if valid {
                return Ok(msg.signed_text().into_bytes());
            }
            return Err("no valid signature by a key of the keyring".into());
        }
        let (msg, _) =
            Message::from_reader(io::Cursor::new(data.to_vec())).map_err(|e| e.to_string())?;
        Self::verify_message(msg, &keys, limit)
    }

    /// Opens a work package (RSPLIB's `gpg --decrypt` of `input.data`): a signed message,
    /// optionally encrypted to a secret key of the keyring; returns the signed content.
    /// Unsigned messages are refused, encrypted or not (see the module documentation).
    pub fn open_work_package(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        guarded(|| self.open_work_package_inner(data, MAX_VERIFIED_SIZE))
    }

    fn open_work_package_inner(&self, data: &[u8], limit: usize) -> Result<Vec<u8>, String> {
        let (mut msg, _) =
            Message::from_reader(io::Cursor::new(data.to_vec())).map_err(|e| e.to_string())?;
        if msg.is_encrypted() {
            if self.secret.is_empty() {
                return Err("encrypted, and the keyring holds no secret key".into());
            }
            let empty = Password::empty();
            msg = msg
                .decrypt_with_keys(
                    self.secret.iter().map(|_| &empty).collect(),
                    self.secret.iter().collect(),
                )
                .map_err(|e| format!("cannot decrypt: {e}"))?;
        }
        Self::verify_message(msg, &self.verifying_keys(), limit)
    }

    /// Reads a (decrypted) message to its end and checks its signature against `keys`. At
    /// most `limit` bytes of content are read: a small compressed message may stand for
    /// gigabytes (a compression bomb), and the signature is only checked at the end.
    fn verify_message(
        msg: Message<'_>,
        keys: &[&dyn VerifyingKey],
        limit: usize,
    ) -> Result<Vec<u8>, String> {
        let mut msg = msg.decompress().map_err(|e| e.to_string())?;
        if !msg.is_signed() {
            return Err("not a signed message".into());
        }
        let mut content = Vec::new();
        io::Read::by_ref(&mut msg)
            .take(limit as u64 + 1)
            .read_to_end(&mut content)
            .map_err(|e| e.to_string())?;
        if content.len() > limit {
            return Err(format!("signed content larger than {limit} bytes"));
        }
        if keys.iter().any(|k| msg.verify(*k).is_ok()) {
            Ok(content)
        } else {
            Err("no valid signature by a key of the keyring".into())
        }
    }
}

/// Runs an OpenPGP operation on uploaded (anyone's) bytes: a panic in the OpenPGP library
/// becomes an error of this one check instead of ending the PE with all its sessions.
fn guarded(f: impl FnOnce() -> Result<Vec<u8>, String>) -> Result<Vec<u8>, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err("the OpenPGP library failed on this input".into()))
}

/// The environment check of one session: none (no keyring) or OpenPGP.
#[derive(Debug)]
pub enum EnvironmentCheck {
    /// No keyring configured: accept (RSPLIB warns and skips the verification).
    Skip,
    /// Verify against this keyring.
    Verify {
        /// The keyring.
        keyring: Arc<Keyring>,
        /// The environment so far.
        buffer: Vec<u8>,
        /// More than [`MAX_VERIFIED_SIZE`] bytes arrived.
        too_large: bool,
    },
}

impl EnvironmentCheck {
    /// A check against `keyring`, or none.
    pub fn new(keyring: Option<Arc<Keyring>>) -> EnvironmentCheck {
        match keyring {
            Some(keyring) => EnvironmentCheck::Verify {
                keyring,
                buffer: Vec::new(),
                too_large: false,
            },
            None => EnvironmentCheck::Skip,
        }
    }
}

impl KeyringCheck for EnvironmentCheck {
    fn begin(&mut self) {
        if let EnvironmentCheck::Verify {
            buffer, too_large, ..
        } = self
        {
            buffer.clear();
            *too_large = false;
        }
    }

    fn update(&mut self, chunk: &[u8]) {
        if let EnvironmentCheck::Verify {
            buffer, too_large, ..
        } = self
        {
            if buffer.len() + chunk.len() > MAX_VERIFIED_SIZE {
                *too_large = true;
            } else {
                buffer.extend_from_slice(chunk);
            }
        }
    }

    fn finish(&mut self) -> Result<(), HostError> {
        match self {
            EnvironmentCheck::Skip => {
                tracing::warn!("Skipping verification of the environment: no keyring configured");
                Ok(())
            }
            EnvironmentCheck::Verify {
                keyring,
                buffer,
                too_large,
            } => {
                if *too_large {
                    return Err(HostError("environment too large to verify".into()));
                }
                let r = keyring.verify_signed_message(buffer);
                buffer.clear();
                r.map(|_| ()).map_err(HostError)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn signed_environments_verify_against_the_keyring() {
        let k = Keyring::from_bytes(&data("keyring.gpg")).unwrap();
        assert_eq!(k.len(), 1);
        let plain = data("environment.txt");
        // `gpg --sign` (binary, compressed) and `gpg --clearsign`.
        assert_eq!(
            k.verify_signed_message(&data("environment.txt.gpg"))
                .unwrap(),
            plain
        );
        let clear = k
            .verify_signed_message(&data("environment.txt.asc"))
            .unwrap();
        assert_eq!(clear.trim_ascii_end(), plain.trim_ascii_end());
        // Unsigned data, a tampered message, another key: refused.
        assert!(k.verify_signed_message(&plain).is_err());
        let mut tampered = data("environment.txt.asc");
        let at = tampered
            .windows(11)
            .position(|w| w == b"environment")
            .unwrap();
        tampered[at] = b'E';
        assert!(k.verify_signed_message(&tampered).is_err());
        let other = Keyring::from_bytes(&data("other-keyring.asc")).unwrap();
        assert!(
            other
                .verify_signed_message(&data("environment.txt.gpg"))
                .is_err()
        );
        assert!(Keyring::from_bytes(b"no keys here").is_err());
    }

    #[test]
    fn environment_check_streams_the_upload() {
        let k = Arc::new(Keyring::from_bytes(&data("keyring.gpg")).unwrap());
        let signed = data("environment.txt.gpg");
        let mut c = EnvironmentCheck::new(Some(Arc::clone(&k)));
        c.begin();
        for chunk in signed.chunks(17) {
            c.update(chunk);
        }
        assert!(c.finish().is_ok());
        c.begin();
        c.update(&data("environment.txt"));
        assert!(c.finish().is_err());
        let mut none = EnvironmentCheck::new(None);
        none.begin();
        none.update(b"anything");
        assert!(none.finish().is_ok());
    }

    #[test]
    fn work_packages_must_be_signed_and_may_be_encrypted() {
        let package = data("work.tar.gz");
        // The signer's public key alone verifies; its secret key also decrypts.
        let public = Keyring::from_bytes(&data("work-signer.gpg")).unwrap();
        assert_eq!((public.len(), public.secret_len()), (1, 0));
        let secret = Keyring::from_bytes(&data("work-signer-secret.gpg")).unwrap();
        assert_eq!((secret.len(), secret.secret_len()), (1, 1));
        for k in [&public, &secret] {
            // `gpg --sign`, binary and armoured (RSPLIB's scriptingserviceexample).
            assert_eq!(
                k.open_work_package(&data("work.tar.gz.gpg")).unwrap(),
                package
            );
            assert_eq!(
                k.open_work_package(&data("work.tar.gz.asc")).unwrap(),
                package
            );
            // Not OpenPGP at all.
            assert!(k.open_work_package(&package).is_err());
        }
        // `gpg --sign --encrypt`: only with the secret key.
        assert_eq!(
            secret
                .open_work_package(&data("work.tar.gz.enc.gpg"))
                .unwrap(),
            package
        );
        let e = public
            .open_work_package(&data("work.tar.gz.enc.gpg"))
            .unwrap_err();
        assert!(e.contains("no secret key"), "{e}");
        // Encrypted to us but unsigned: anyone could have made it.
        let e = secret
            .open_work_package(&data("work.tar.gz.enc-unsigned.gpg"))
            .unwrap_err();
        assert!(e.contains("not a signed message"), "{e}");
        // Signed by another key, or tampered with.
        let other = Keyring::from_bytes(&data("keyring.gpg")).unwrap();
        assert!(other.open_work_package(&data("work.tar.gz.gpg")).is_err());
        let mut tampered = data("work.tar.gz.gpg");
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(secret.open_work_package(&tampered).is_err());
        let mut tampered = data("work.tar.gz.enc.gpg");
        tampered[300] ^= 1;
        assert!(secret.open_work_package(&tampered).is_err());
        // Content beyond the limit (a compression bomb) is refused before it is all read.
        let e = secret
            .open_work_package_inner(&data("work.tar.gz.bz2.gpg"), package.len() - 1)
            .unwrap_err();
        assert!(e.contains("larger than"), "{e}");
        assert_eq!(
            secret
                .open_work_package_inner(&data("work.tar.gz.bz2.gpg"), package.len())
                .unwrap(),
            package
        );
        let e = other
            .verify_signed_message_inner(&data("environment.txt.gpg"), 10)
            .unwrap_err();
        assert!(e.contains("larger than"), "{e}");
        // Keyrings concatenate: both signers' messages verify with the combined file.
        let mut both = data("keyring.gpg");
        both.extend(data("work-signer-secret.gpg"));
        let both = Keyring::from_bytes(&both).unwrap();
        assert_eq!((both.len(), both.secret_len()), (2, 1));
        assert!(
            both.verify_signed_message(&data("environment.txt.gpg"))
                .is_ok()
        );
        assert_eq!(
            both.open_work_package(&data("work.tar.gz.enc.gpg"))
                .unwrap(),
            package
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Uploaded environments and work packages are anyone's bytes: damaged OpenPGP data
        /// (truncated, bytes changed) is refused with an error, never a panic, and never
        /// accepted as signed unless the damage left the signed message intact.
        #[test]
        fn damaged_messages_are_refused_without_panicking(
            which in 0usize..6,
            cut in proptest::prelude::any::<proptest::sample::Index>(),
            flips in proptest::collection::vec(
                (proptest::prelude::any::<proptest::sample::Index>(), 1u8..=255),
                0..4,
            ),
        ) {
            let name = [
                "work.tar.gz.gpg",
                "work.tar.gz.asc",
                "work.tar.gz.bz2.gpg",
                "work.tar.gz.enc.gpg",
                "environment.txt.gpg",
                "environment.txt.asc",
            ][which];
            let original = data(name);
            let mut m = original.clone();
            m.truncate(cut.index(m.len() + 1));
            for (at, x) in &flips {
                if !m.is_empty() {
                    let i = at.index(m.len());
                    m[i] ^= x;
                }
            }
            let mut keys = data("keyring.gpg");
            keys.extend(data("work-signer-secret.gpg"));
            let k = Keyring::from_bytes(&keys).unwrap();
            let opened = k.open_work_package(&m);
            let verified = k.verify_signed_message(&m);
            if m != original {
                // What comes out of a damaged message is at most the original content.
                for content in [opened.ok(), verified.ok()].into_iter().flatten() {
                    let plain = if name.starts_with("work") {
                        data("work.tar.gz")
                    } else {
                        data("environment.txt")
                    };
                    proptest::prop_assert_eq!(
                        content.trim_ascii_end(),
                        plain.trim_ascii_end()
                    );
                }
            }
            // Damaged key material: an error or a keyring, no panic.
            let _ = Keyring::from_bytes(&m);
        }
    }
}
