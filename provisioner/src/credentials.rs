//! The generated secrets: MySQL passwords for the credentials secret and the LUKS
//! passphrase, from the operating system's CSPRNG (through `rand`'s thread generator,
//! which is seeded by it), and the rule that an existing secret keeps its values.

use rand::distr::{Alphanumeric, SampleString};

use crate::desired::CREDENTIAL_KEYS;

/// Characters in a generated password (about 190 bits of entropy): MySQL refuses a
/// replication password longer than 32 characters in `CHANGE REPLICATION SOURCE`
/// (error 3056, measured on 9.7), so no account gets more.
pub const PASSWORD_LEN: usize = 32;
/// Characters in a generated LUKS passphrase.
pub const PASSPHRASE_LEN: usize = 64;

/// A new random password of letters and digits (no quoting trouble in SQL or my.cnf).
pub fn generate_password(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// The credentials secret's JSON: one new password per key.
pub fn new_credentials() -> String {
    let map: serde_json::Map<String, serde_json::Value> =
        CREDENTIAL_KEYS.iter().map(|k| (k.to_string(), generate_password(PASSWORD_LEN).into())).collect();
    serde_json::Value::Object(map).to_string()
}

/// The peer CA secret's JSON: `{"cert": PEM, "key": PEM}` of a new CA for `cluster`.
pub fn new_peer_ca(cluster: &str) -> anyhow::Result<String> {
    let ca = crate::certs::CertAuthority::generate(cluster)?;
    let pem = ca.pem().ok_or_else(|| anyhow::anyhow!("a new CA has no certificate"))?;
    Ok(serde_json::json!({"cert": pem.cert, "key": pem.key}).to_string())
}

/// The API tokens secret's JSON: one `admin` token, for the operators to start with
/// (`orchctl --token-file`, after reading it from the secret).
pub fn new_api_tokens() -> String {
    let token = orchestrator::auth::tokens::generate();
    serde_json::json!([{"name": "admin", "scope": "admin", "token": token}]).to_string()
}

/// The keys an existing credentials secret holds (never its values).
pub fn credential_keys(json: &str) -> Vec<String> {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// An existing secret with the missing keys added (existing values untouched), or
/// `None` when it holds them all. Fails when the secret is not a JSON object.
pub fn with_missing_keys(json: &str) -> Result<Option<String>, String> {
    let mut map = match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => return Err("the credentials secret is not a JSON object".into()),
    };
    let mut added = false;
    for k in CREDENTIAL_KEYS {
        if !map.contains_key(k) {
            map.insert(k.to_string(), generate_password(PASSWORD_LEN).into());
            added = true;
        }
    }
    Ok(added.then(|| serde_json::Value::Object(map).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_random_and_distinct() {
        let a = generate_password(PASSWORD_LEN);
        assert_eq!(a.len(), PASSWORD_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, generate_password(PASSWORD_LEN));
        let json = new_credentials();
        let keys = credential_keys(&json);
        assert_eq!(keys, CREDENTIAL_KEYS);
    }

    #[test]
    fn existing_values_are_kept_and_missing_keys_added() {
        let old = r#"{"root":"r00t","replication":"repl"}"#;
        let merged = with_missing_keys(old).unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(v["root"], "r00t");
        assert_eq!(v["replication"], "repl");
        assert_eq!(v["orchestrator"].as_str().unwrap().len(), PASSWORD_LEN);
        assert_eq!(with_missing_keys(&merged).unwrap(), None);
        assert!(with_missing_keys("\"x\"").is_err());
    }
}
