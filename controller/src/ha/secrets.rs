//! The CA shared through the store, so that any controller can issue
//! certificates: its certificate and key are kept under `<prefix>secrets/ca`,
//! sealed with AES-256-GCM under a key every controller reads from its own
//! config (`ha.secret_key_file`). etcd, its backups and its snapshots only
//! ever hold the sealed form.
//!
//! The first controller to start puts its CA there; every other one takes
//! that CA in place of its own, and re-issues its server and admin
//! certificates from it.

use ebb_certs::from_hex;
use std::path::Path;

use ebb_core::local::PkiPaths;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::etcd::Etcd;

/// Bound into every sealed value: a value sealed for another purpose
/// (or another version of this format) does not open as a CA.
const AAD: &[u8] = b"ebb-secret-v1:ca";

/// The key that seals the store's secrets.
pub struct SecretKey(LessSafeKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// Reads a key file: 64 hex digits (32 bytes), surrounding white space
    /// ignored; `openssl rand -hex 32` makes one.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("ha.secret_key_file {}: {e}", path.display()))?;
        Self::parse(text.trim()).map_err(|e| format!("ha.secret_key_file {}: {e}", path.display()))
    }

    pub fn parse(hex: &str) -> Result<Self, String> {
        let bytes = from_hex(hex).ok_or("must hold 64 hex digits (`openssl rand -hex 32`)")?;
        if bytes.len() != 32 {
            return Err(format!(
                "must hold 64 hex digits (`openssl rand -hex 32`), not {}",
                hex.len()
            ));
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| "unusable key")?;
        Ok(Self(LessSafeKey::new(key)))
    }

    fn seal(&self, plain: &[u8]) -> Result<Sealed, String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| "no randomness for a nonce")?;
        let mut data = plain.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut data,
            )
            .map_err(|_| "sealing failed")?;
        Ok(Sealed {
            nonce: ebb_certs::hex(&nonce),
            sealed: ebb_certs::hex(&data),
        })
    }

    fn open(&self, sealed: &Sealed) -> Result<Vec<u8>, String> {
        let bad = || {
            "cannot open the CA kept in the store: ha.secret_key_file differs from the key it was sealed with".to_owned()
        };
        let nonce: [u8; NONCE_LEN] = from_hex(&sealed.nonce)
            .and_then(|n| n.try_into().ok())
            .ok_or_else(bad)?;
        let mut data = from_hex(&sealed.sealed).ok_or_else(bad)?;
        let plain = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut data,
            )
            .map_err(|_| bad())?;
        Ok(plain.to_vec())
    }
}

/// The stored form.
#[derive(Serialize, Deserialize)]
struct Sealed {
    nonce: String,
    sealed: String,
}

/// The CA's files, as sealed.
#[derive(Serialize, Deserialize, PartialEq)]
struct CaFiles {
    cert: String,
    key: String,
}

/// What [`share_ca`] did with the local CA.
#[derive(Debug, PartialEq, Eq)]
pub enum Shared {
    /// The store had none: ours is the cluster's now.
    Put,
    /// The store holds the same CA as this controller.
    Same,
    /// This controller's CA was replaced by the store's; the server and
    /// admin certificates from the old one were removed, to be re-issued.
    Replaced,
}

/// Makes the local CA (made or loaded by `Pki::bootstrap`) and the one in
/// the store the same, the store's winning.
pub async fn share_ca(
    etcd: &Etcd,
    key: &[u8],
    secret: &SecretKey,
    paths: &PkiPaths,
) -> Result<Shared, String> {
    let (crt, ca_key) = paths.ca();
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let local = CaFiles {
        cert: read(&crt)?,
        key: read(&ca_key)?,
    };
    let plain = serde_json::to_vec(&local).map_err(|e| e.to_string())?;
    let sealed = serde_json::to_vec(&secret.seal(&plain)?).map_err(|e| e.to_string())?;
    // Put ours if there is none; else read theirs.
    let answer = etcd
        .txn(super::put_if_absent(key, sealed, 0))
        .await
        .map_err(|e| format!("sharing the CA through etcd: {e}"))?;
    if answer.succeeded {
        info!("put this controller's CA in the store, sealed, for the other controllers");
        return Ok(Shared::Put);
    }
    let stored = super::existing(&answer)
        .ok_or("the CA in the store vanished while it was read; start again")?;
    let sealed: Sealed = serde_json::from_slice(&stored.value)
        .map_err(|e| format!("the CA in the store is corrupt: {e}"))?;
    let theirs: CaFiles = serde_json::from_slice(&secret.open(&sealed)?)
        .map_err(|e| format!("the CA in the store is corrupt: {e}"))?;
    if theirs == local {
        return Ok(Shared::Same);
    }
    warn!(
        cert = %crt.display(),
        "this controller's CA differs from the cluster's: taking the cluster's, and re-issuing its own certificates from it"
    );
    let io = |e: ebb_certs::Error| e.to_string();
    ebb_certs::write_atomic(&ca_key, theirs.key.as_bytes(), 0o600).map_err(io)?;
    ebb_certs::write_atomic(&crt, theirs.cert.as_bytes(), 0o644).map_err(io)?;
    ebb_certs::write_atomic(&paths.file("ca.crt"), theirs.cert.as_bytes(), 0o644).map_err(io)?;
    for (cert, key) in [paths.server(), paths.admin()] {
        for f in [cert, key] {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", f.display())),
            }
        }
    }
    Ok(Shared::Replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_sealed_secret_opens_only_with_its_key() {
        let key = SecretKey::parse(KEY).unwrap();
        let sealed = key.seal(b"the CA").unwrap();
        assert!(
            !sealed.sealed.contains(&ebb_certs::hex(b"the CA")),
            "not in the clear"
        );
        assert_eq!(key.open(&sealed).unwrap(), b"the CA");
        let other = SecretKey::parse(&KEY.replace("00", "ff")).unwrap();
        let err = other.open(&sealed).unwrap_err();
        assert!(err.contains("ha.secret_key_file differs"), "{err}");
    }

    #[test]
    fn bad_key_files_are_refused_with_the_reason() {
        for bad in [
            "",
            "abc",
            &KEY[..62],
            &format!("{KEY}00"),
            &KEY.replace('0', "g"),
        ] {
            let err = SecretKey::parse(bad).unwrap_err();
            assert!(err.contains("64 hex digits"), "{bad}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.key");
        let err = SecretKey::load(&path).unwrap_err();
        assert!(err.starts_with("ha.secret_key_file "), "{err}");
        std::fs::write(&path, format!("{KEY}\n")).unwrap();
        SecretKey::load(&path).unwrap();
    }
}
