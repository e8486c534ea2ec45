//! One stored part: a chunk of a backup stream compressed as one zstd frame (with its
//! content checksum) and, when the backup is encrypted, sealed with AES-256-GCM (a
//! random 12-byte nonce, then the ciphertext and its tag). Parts are independent, so
//! they compress, upload, download and decompress in parallel. Also the key the
//! parts are sealed with. CPU work only: callers run it on blocking threads.

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use super::manifest::Encryption;

pub const ALGORITHM: &str = "aes-256-gcm";

/// Why a part cannot be made or read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartError {
    #[error("compressing: {0}")]
    Compress(String),
    #[error("not a valid zstd frame: {0}")]
    Decompress(String),
    #[error("cannot be decrypted with this key (wrong key, or the part was altered)")]
    Decrypt,
    #[error("the backup is encrypted (key {key_id}) and no encryption key is configured")]
    NoKey { key_id: String },
    #[error("the backup was encrypted with key {wanted}; the configured key is {have}")]
    WrongKey { wanted: String, have: String },
    #[error("bad encryption key: {0}")]
    BadKey(String),
}

/// The key parts are sealed with: 32 bytes, given as base64 or 64 hex digits.
pub struct EncryptionKey {
    key: LessSafeKey,
    /// First 16 hex digits of the key's SHA-256: names it in manifests and errors.
    pub id: String,
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptionKey({})", self.id)
    }
}

impl EncryptionKey {
    pub fn parse(text: &str) -> Result<EncryptionKey, PartError> {
        let t = text.trim();
        let bytes = if t.len() == 64 && t.bytes().all(|c| c.is_ascii_hexdigit()) {
            (0..32).map(|i| u8::from_str_radix(&t[i * 2..i * 2 + 2], 16).expect("hex digits")).collect()
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(|_| PartError::BadKey("give 32 bytes as base64 or 64 hex digits".into()))?
        };
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<EncryptionKey, PartError> {
        if bytes.len() != 32 {
            return Err(PartError::BadKey(format!("{} bytes; AES-256 takes 32", bytes.len())));
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| PartError::BadKey("rejected".into()))?;
        let id = sha256_hex(bytes)[..16].to_string();
        Ok(EncryptionKey { key: LessSafeKey::new(key), id })
    }

    pub fn describe(&self) -> Encryption {
        Encryption { algorithm: ALGORITHM.into(), key_id: self.id.clone() }
    }

    /// This key opens what `encryption` sealed.
    pub fn check(key: Option<&EncryptionKey>, encryption: Option<&Encryption>) -> Result<(), PartError> {
        match (encryption, key) {
            (None, _) => Ok(()),
            (Some(e), None) => Err(PartError::NoKey { key_id: e.key_id.clone() }),
            (Some(e), Some(k)) if e.key_id != k.id => {
                Err(PartError::WrongKey { wanted: e.key_id.clone(), have: k.id.clone() })
            }
            (Some(_), Some(_)) => Ok(()),
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The stored form of `raw`.
pub fn encode(raw: &[u8], level: i32, key: Option<&EncryptionKey>) -> Result<Vec<u8>, PartError> {
    let mut compressor =
        zstd::bulk::Compressor::new(level).map_err(|e| PartError::Compress(e.to_string()))?;
    compressor
        .include_checksum(true)
        .and_then(|_| compressor.include_contentsize(true))
        .map_err(|e| PartError::Compress(e.to_string()))?;
    let frame = compressor.compress(raw).map_err(|e| PartError::Compress(e.to_string()))?;
    match key {
        None => Ok(frame),
        Some(k) => {
            let mut nonce = [0u8; NONCE_LEN];
            SystemRandom::new().fill(&mut nonce).map_err(|_| PartError::Compress("no randomness".into()))?;
            let mut sealed = frame;
            k.key
                .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut sealed)
                .map_err(|_| PartError::Compress("sealing failed".into()))?;
            let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
            out.extend_from_slice(&nonce);
            out.extend_from_slice(&sealed);
            Ok(out)
        }
    }
}

/// The raw bytes of a stored part; `raw_len` is what the manifest says it holds.
pub fn decode(stored: &[u8], raw_len: usize, key: Option<&EncryptionKey>) -> Result<Vec<u8>, PartError> {
    let mut opened;
    let frame: &[u8] = match key {
        None => stored,
        Some(k) => {
            if stored.len() < NONCE_LEN {
                return Err(PartError::Decrypt);
            }
            let nonce =
                Nonce::try_assume_unique_for_key(&stored[..NONCE_LEN]).map_err(|_| PartError::Decrypt)?;
            opened = stored[NONCE_LEN..].to_vec();
            let plain =
                k.key.open_in_place(nonce, Aad::empty(), &mut opened).map_err(|_| PartError::Decrypt)?;
            let n = plain.len();
            opened.truncate(n);
            &opened
        }
    };
    let raw = zstd::bulk::decompress(frame, raw_len).map_err(|e| PartError::Decompress(e.to_string()))?;
    if raw.len() != raw_len {
        return Err(PartError::Decompress(format!("{} bytes where the manifest says {raw_len}", raw.len())));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_round_trips_plain_and_sealed() {
        let raw: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let plain = encode(&raw, 3, None).unwrap();
        assert!(plain.len() < raw.len() / 4);
        assert_eq!(decode(&plain, raw.len(), None).unwrap(), raw);
        let key = EncryptionKey::parse(&"ab".repeat(32)).unwrap();
        let sealed = encode(&raw, 3, Some(&key)).unwrap();
        assert_eq!(decode(&sealed, raw.len(), Some(&key)).unwrap(), raw);
        // Two seals of the same bytes differ (random nonces).
        assert_ne!(sealed, encode(&raw, 3, Some(&key)).unwrap());
        let other =
            EncryptionKey::parse(&base64::engine::general_purpose::STANDARD.encode([7u8; 32])).unwrap();
        assert_eq!(decode(&sealed, raw.len(), Some(&other)), Err(PartError::Decrypt));
        let mut flipped = plain.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0xff;
        assert!(decode(&flipped, raw.len(), None).is_err());
        assert!(decode(&plain, raw.len() + 1, None).is_err());
    }

    #[test]
    fn keys_are_checked_before_any_download() {
        let key = EncryptionKey::parse(&"01".repeat(32)).unwrap();
        assert_eq!(key.id.len(), 16);
        assert!(!format!("{key:?}").contains("0101"));
        let e = key.describe();
        assert_eq!(EncryptionKey::check(Some(&key), Some(&e)), Ok(()));
        assert!(matches!(EncryptionKey::check(None, Some(&e)), Err(PartError::NoKey { .. })));
        let other = EncryptionKey::parse(&"02".repeat(32)).unwrap();
        assert!(matches!(EncryptionKey::check(Some(&other), Some(&e)), Err(PartError::WrongKey { .. })));
        assert_eq!(EncryptionKey::check(None, None), Ok(()));
        assert!(EncryptionKey::parse("short").is_err());
    }
}
