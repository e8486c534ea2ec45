//! Bearer tokens. A token is a random string (`orch_` and 64 hex digits from
//! [`generate`]); the peer keeps only its SHA-256 ([`hash_hex`]) with a name and a
//! scope. A presented token is hashed and compared with every known hash in constant
//! time, so neither a match nor its position leaks through timing.
//!
//! Sources, all merged: `[[auth.tokens]]` entries with `sha256`, entries with `file`
//! (the token itself in a file, mode 0600, read at start), and the Secrets Manager
//! secret named by `auth.tokens_secret` (JSON, see [`parse_secret`]).

use std::path::Path;

use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Identity, Scope};

/// Every generated token starts with this (so a leaked one is easy to search for).
pub const TOKEN_PREFIX: &str = "orch_";
/// Longest token accepted from a client.
pub const MAX_TOKEN_LEN: usize = 512;

/// A token source that cannot be used, in one line (never showing a token).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token `{name}`: {message}")]
    Invalid { name: String, message: String },
    #[error("cannot read token file {path}: {message}")]
    File { path: String, message: String },
    #[error("tokens secret: {0}")]
    Secret(String),
    #[error("token name `{0}` appears twice")]
    Duplicate(String),
}

/// A new random token.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{TOKEN_PREFIX}{hex}")
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The hex SHA-256 of `token`: what the config stores.
pub fn hash_hex(token: &str) -> String {
    digest(token).iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hash(name: &str, hex: &str) -> Result<[u8; 32], TokenError> {
    let invalid =
        |message: &str| TokenError::Invalid { name: name.to_string(), message: message.to_string() };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid("sha256 must be 64 hex digits (`orchestrator token hash` prints it)"));
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).map_err(|_| invalid("sha256 is not hex"))?;
        out[i] = u8::from_str_radix(pair, 16).map_err(|_| invalid("sha256 is not hex"))?;
    }
    Ok(out)
}

/// Token names: 1-64 of letters, digits, `.`, `_`, `-`, `@`.
pub fn valid_token_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

/// Makes a new token and writes it to `path`, a new file only its owner can read.
pub fn write_new_token(path: &Path) -> Result<String, TokenError> {
    let token = generate();
    write_token_file(path, &token)?;
    Ok(token)
}

/// Writes `token` to `path`, a new file only its owner can read.
pub fn write_token_file(path: &Path, token: &str) -> Result<(), TokenError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let file_error =
        |e: std::io::Error| TokenError::File { path: path.display().to_string(), message: e.to_string() };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(file_error)?;
    writeln!(f, "{token}").map_err(file_error)?;
    Ok(())
}

/// A token as the text of a client's header or a file: printable ASCII, bounded.
fn acceptable_token_text(token: &str) -> bool {
    !token.is_empty() && token.len() <= MAX_TOKEN_LEN && token.bytes().all(|b| b.is_ascii_graphic())
}

/// Reads a token from a file (trailing newline ignored). Warns when the file is
/// readable by other users.
pub fn read_token_file(path: &Path) -> Result<String, TokenError> {
    let file_error = |message: String| TokenError::File { path: path.display().to_string(), message };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "token file is readable by other users; make it mode 0600");
        }
    }
    let token = text.trim_end_matches(['\n', '\r']).to_string();
    if !acceptable_token_text(&token) {
        return Err(file_error(format!(
            "does not hold a token (1-{MAX_TOKEN_LEN} printable characters, no spaces)"
        )));
    }
    Ok(token)
}

/// One token of the Secrets Manager secret.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretToken {
    pub name: String,
    pub scope: Scope,
    /// The token itself, or
    #[serde(default)]
    pub token: Option<String>,
    /// its hex SHA-256.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// Reads the secret's JSON: `[{"name": "ops", "scope": "admin", "sha256": "…"}, …]`
/// (`token` instead of `sha256` holds the token itself).
pub fn parse_secret(json: &str) -> Result<Vec<SecretToken>, TokenError> {
    serde_json::from_str(json).map_err(|e| {
        // Only the position: serde_json's message may quote a value, and a value may be a token.
        TokenError::Secret(format!(
            "not a JSON list of {{name, scope, token|sha256}} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// A configured token, before the registry is built.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub name: String,
    pub scope: Scope,
    pub sha256: [u8; 32],
}

impl TokenSpec {
    /// From a stored hash.
    pub fn hashed(name: &str, scope: Scope, sha256_hex: &str) -> Result<TokenSpec, TokenError> {
        Self::check_name(name)?;
        Ok(TokenSpec { name: name.to_string(), scope, sha256: parse_hash(name, sha256_hex)? })
    }

    /// From the token itself (a file or the secret).
    pub fn plain(name: &str, scope: Scope, token: &str) -> Result<TokenSpec, TokenError> {
        Self::check_name(name)?;
        if !acceptable_token_text(token) {
            return Err(TokenError::Invalid {
                name: name.to_string(),
                message: format!("a token is 1-{MAX_TOKEN_LEN} printable characters without spaces"),
            });
        }
        Ok(TokenSpec { name: name.to_string(), scope, sha256: digest(token) })
    }

    fn check_name(name: &str) -> Result<(), TokenError> {
        if valid_token_name(name) {
            Ok(())
        } else {
            Err(TokenError::Invalid {
                name: name.chars().take(64).collect(),
                message: "a name is 1-64 letters, digits, `.`, `_`, `-` or `@`".into(),
            })
        }
    }

    /// Every token of the secret.
    pub fn from_secret(tokens: &[SecretToken]) -> Result<Vec<TokenSpec>, TokenError> {
        tokens
            .iter()
            .map(|t| match (&t.token, &t.sha256) {
                (Some(token), None) => TokenSpec::plain(&t.name, t.scope, token),
                (None, Some(hash)) => TokenSpec::hashed(&t.name, t.scope, hash),
                _ => Err(TokenError::Invalid {
                    name: t.name.clone(),
                    message: "give exactly one of token, sha256".into(),
                }),
            })
            .collect()
    }
}

/// The tokens this peer accepts.
#[derive(Debug, Clone)]
pub struct TokenRegistry {
    tokens: Vec<TokenSpec>,
    disabled: bool,
}

impl TokenRegistry {
    /// Accepts `tokens`; names must be unique.
    pub fn new(tokens: Vec<TokenSpec>) -> Result<TokenRegistry, TokenError> {
        let mut names = std::collections::BTreeSet::new();
        for t in &tokens {
            if !names.insert(t.name.clone()) {
                return Err(TokenError::Duplicate(t.name.clone()));
            }
        }
        Ok(TokenRegistry { tokens, disabled: false })
    }

    /// No authentication: every caller is [`Identity::anonymous_admin`].
    pub fn disabled() -> TokenRegistry {
        TokenRegistry { tokens: Vec::new(), disabled: true }
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// Names and scopes (for the start-up log; never the hashes).
    pub fn names(&self) -> Vec<String> {
        self.tokens.iter().map(|t| format!("{} ({})", t.name, t.scope)).collect()
    }

    /// Who holds `presented`, if anyone. Hashes it once and compares with every known
    /// hash in constant time, visiting all of them whatever matches.
    pub fn verify(&self, presented: &str) -> Option<Identity> {
        if self.disabled {
            return Some(Identity::anonymous_admin());
        }
        if !acceptable_token_text(presented) {
            return None;
        }
        let hash = digest(presented);
        let mut found: Option<&TokenSpec> = None;
        for t in &self.tokens {
            let equal: bool = t.sha256.ct_eq(&hash).into();
            if equal && found.is_none() {
                found = Some(t);
            }
        }
        found.map(|t| Identity { name: t.name.clone(), scope: t.scope })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_verify_by_hash_only() {
        let token = generate();
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() == TOKEN_PREFIX.len() + 64);
        assert_ne!(token, generate());
        let registry = TokenRegistry::new(vec![
            TokenSpec::hashed("alice", Scope::Admin, &hash_hex(&token)).unwrap(),
            TokenSpec::plain("grafana", Scope::Read, "orch_reader").unwrap(),
        ])
        .unwrap();
        assert_eq!(registry.verify(&token), Some(Identity { name: "alice".into(), scope: Scope::Admin }));
        assert_eq!(registry.verify("orch_reader").unwrap().scope, Scope::Read);
        for wrong in ["", "orch_", &token[..token.len() - 1], "orch reader", &"x".repeat(600)] {
            assert_eq!(registry.verify(wrong), None, "`{wrong}`");
        }
        assert_eq!(TokenRegistry::disabled().verify("anything").unwrap().name, "anonymous");
    }

    #[test]
    fn bad_specs_are_named_without_their_secret() {
        let e = TokenSpec::hashed("a", Scope::Read, "abc").unwrap_err().to_string();
        assert!(e.contains("token `a`") && e.contains("64 hex"), "{e}");
        assert!(TokenSpec::hashed("bad name", Scope::Read, &hash_hex("x")).is_err());
        let e = TokenSpec::plain("b", Scope::Read, "has space").unwrap_err().to_string();
        assert!(!e.contains("has space"), "{e}");
        let dup = vec![
            TokenSpec::plain("a", Scope::Read, "t1").unwrap(),
            TokenSpec::plain("a", Scope::Admin, "t2").unwrap(),
        ];
        assert_eq!(TokenRegistry::new(dup).unwrap_err(), TokenError::Duplicate("a".into()));
    }

    #[test]
    fn the_secret_holds_plain_or_hashed_tokens() {
        let json = format!(
            r#"[{{"name":"ops","scope":"admin","token":"orch_s3cret"}},
                {{"name":"ro","scope":"read","sha256":"{}"}}]"#,
            hash_hex("orch_ro")
        );
        let specs = TokenSpec::from_secret(&parse_secret(&json).unwrap()).unwrap();
        let r = TokenRegistry::new(specs).unwrap();
        assert_eq!(r.verify("orch_s3cret").unwrap().name, "ops");
        assert_eq!(r.verify("orch_ro").unwrap().scope, Scope::Read);
        for bad in [
            r#"{"token":"orch_leak"}"#,
            r#"["orch_leak"]"#,
            r#"[{"name":"x","scope":"orch_leak","token":"t"}]"#,
        ] {
            let e = parse_secret(bad).unwrap_err().to_string();
            assert!(!e.contains("orch_leak"), "{e}");
        }
        let both = parse_secret(r#"[{"name":"x","scope":"read","token":"a","sha256":"b"}]"#).unwrap();
        assert!(TokenSpec::from_secret(&both).is_err());
    }

    #[test]
    fn new_token_files_are_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        let token = write_new_token(&path).unwrap();
        assert_eq!(read_token_file(&path).unwrap(), token);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(write_new_token(&path).is_err(), "an existing file is kept");
    }

    #[test]
    fn token_files_are_read_without_the_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "orch_abc\n").unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "orch_abc");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_token_file(&path).unwrap_err().to_string().contains("does not hold a token"));
    }
}
