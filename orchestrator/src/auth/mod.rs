//! Who may do what, and over which transport (DESIGN.md section 10).
//!
//! - [`tokens`]: bearer tokens with a name and a [`Scope`], kept as SHA-256 hashes and
//!   compared in constant time; loaded from the config, token files, or a Secrets
//!   Manager secret.
//! - [`layer`]: the one authentication layer every HTTP route and gRPC method on port
//!   3000 passes; it attaches the [`Caller`] that the typed operations authorize and
//!   audit.
//! - [`tls`]: rustls/tonic TLS settings: optional TLS on port 3000, mutual TLS on the
//!   Raft port 10008.
//!
//! The audit record itself is replicated state ([`crate::state::AuditEntry`]), written
//! by [`crate::ops`].

pub mod layer;
pub mod tls;
pub mod tokens;

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a token allows. Each scope includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every read: topology, problems, recoveries, audit, Raft state.
    Read,
    /// Switchover, downtime, acknowledgements, promotion rules.
    Operate,
    /// Forced failover, Raft membership, global recoveries, discover and forget.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Operate => "operate",
            Scope::Admin => "admin",
        }
    }

    /// Whether a token of this scope may do what needs `needed`.
    pub fn allows(self, needed: Scope) -> bool {
        self >= needed
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "operate" => Ok(Scope::Operate),
            "admin" => Ok(Scope::Admin),
            other => Err(format!("scope `{other}` is not one of read, operate, admin")),
        }
    }
}

/// The holder of a valid token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The token's name: the identity in the audit.
    pub name: String,
    pub scope: Scope,
}

impl Identity {
    /// Every caller when authentication is disabled in the config.
    pub fn anonymous_admin() -> Identity {
        Identity { name: "anonymous".into(), scope: Scope::Admin }
    }
}

/// An authenticated request: who, from where, received by which peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub identity: Identity,
    /// The client's address as the receiving peer saw it.
    pub from: String,
    /// The peer that received the request.
    pub peer: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_include_the_ones_below() {
        assert!(Scope::Admin.allows(Scope::Operate) && Scope::Admin.allows(Scope::Read));
        assert!(Scope::Operate.allows(Scope::Read) && !Scope::Operate.allows(Scope::Admin));
        assert!(!Scope::Read.allows(Scope::Operate));
        assert_eq!("operate".parse::<Scope>(), Ok(Scope::Operate));
        assert!("root".parse::<Scope>().unwrap_err().contains("`root`"));
    }
}
