//! The scripting PE's environment check with OpenPGP (`-sskeyring=`), RSPLIB's
//! `scriptingcontrol check-environment` (`gpg --verify environment.data` against the
//! keyring) done in-process with the `pgp` crate.
//!
//! * The keyring is a file of OpenPGP public keys, binary (`gpg --export > keyring.gpg`) or
//!   ASCII-armoured (`gpg --armor --export`). GnuPG's own `pubring.kbx` keybox format is
//!   not read. `-sstrustdb=` is accepted but not used: a key in the keyring is trusted.
//! * An environment is accepted if it is an OpenPGP **signed message** (`gpg --sign`,
//!   binary or armoured, compressed or not; or `gpg --clearsign`) with a valid signature by
//!   a key (primary or subkey) of the keyring. Anything else is refused and the PE aborts
//!   the session, as with RSPLIB's failing `gpg --verify`.
//! * Without a keyring nothing is verified (RSPLIB prints "Skipping verification").

use std::io;
use std::path::Path;
use std::sync::Arc;

use pgp::composed::{CleartextSignedMessage, Message, PublicOrSecret, SignedPublicKey};
use pgp::types::VerifyingKey;
use rserpool_core::services::scripting::{HostError, KeyringCheck};

/// Public keys to verify environments with.
#[derive(Debug)]
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
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

    /// Parses public keys (secret keys in the data are skipped).
    pub fn from_bytes(data: &[u8]) -> Result<Keyring, String> {
        let (iter, _) = PublicOrSecret::from_reader_many(io::Cursor::new(data.to_vec()))
            .map_err(|e| e.to_string())?;
        let mut keys = Vec::new();
        for k in iter {
            match k {
                Ok(PublicOrSecret::Public(k)) => keys.push(k),
                Ok(PublicOrSecret::Secret(_)) => {}
                Err(e) => return Err(format!("bad key: {e}")),
            }
        }
        if keys.is_empty() {
            return Err("no public key in the keyring".into());
        }
        Ok(Keyring { keys })
    }

    /// Number of keys (primary keys).
    pub fn len(&self) -> usize {
        self.keys.len()
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
        let mut msg = msg.decompress().map_err(|e| e.to_string())?;
        if !msg.is_signed() {
            return Err("not a signed message".into());
        }
        let content = msg.as_data_vec().map_err(|e| e.to_string())?;
        if keys.iter().any(|k| msg.verify(*k).is_ok()) {
            Ok(content)
        } else {
            Err("no valid signature by a key of the keyring".into())
        }
    }
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
}
