//! Strict parsing of what operators send: instance keys, durations, names, free text,
//! promotion rules and peer addresses. Pure; every refusal is one line naming the field.

use std::time::Duration;

use super::{one_line, OpError};
use crate::state::PromotionRule;
use crate::topology::InstanceKey;

/// Longest downtime one request may set.
pub const MAX_DOWNTIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest free text (reasons, comments).
pub const MAX_TEXT: usize = 1024;
/// Longest cluster alias.
pub const MAX_ALIAS: usize = 128;

fn invalid(field: &str, message: impl std::fmt::Display) -> OpError {
    OpError::InvalidArgument(format!("{field}: {message}"))
}

/// `host:port`, strictly ([`InstanceKey::parse_strict`]).
pub fn instance(field: &str, text: &str) -> Result<InstanceKey, OpError> {
    InstanceKey::parse_strict(text).map_err(|e| invalid(field, e))
}

/// `host:port`, or nothing (`None` for an empty string).
pub fn optional_instance(field: &str, text: &str) -> Result<Option<InstanceKey>, OpError> {
    if text.is_empty() {
        Ok(None)
    } else {
        instance(field, text).map(Some)
    }
}

/// A duration: a bare number of seconds (`90`), or units (`90s`, `15m`, `2h`, `1d`,
/// `1h 30m`); between one second and [`MAX_DOWNTIME`].
pub fn duration(field: &str, text: &str) -> Result<Duration, OpError> {
    if text.is_empty() || text.len() > 64 {
        return Err(invalid(field, "give a duration such as 90s, 15m, 2h or 1d"));
    }
    let parsed = if text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| invalid(field, format!("`{text}` is too large")))
    } else {
        humantime::parse_duration(text).map_err(|e| invalid(field, format!("`{text}`: {e}")))
    }?;
    if parsed < Duration::from_secs(1) {
        return Err(invalid(field, format!("`{text}` is under one second")));
    }
    if parsed > MAX_DOWNTIME {
        return Err(invalid(field, format!("`{text}` is longer than 30 days")));
    }
    Ok(parsed)
}

/// Free text (a reason, a comment): at most [`MAX_TEXT`] characters, no control
/// characters; `required` refuses an empty one.
pub fn text(field: &str, value: &str, required: bool) -> Result<String, OpError> {
    if required && value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.chars().count() > MAX_TEXT {
        return Err(invalid(field, format!("longer than {MAX_TEXT} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "contains control characters"));
    }
    Ok(value.to_string())
}

/// A cluster alias (or a member's `host:port`, which is also a cluster hint): 1-128
/// characters, no `/`, no spaces or control characters.
pub fn cluster(field: &str, value: &str) -> Result<String, OpError> {
    if value.is_empty() {
        return Err(invalid(field, "name a cluster"));
    }
    if value.chars().count() > MAX_ALIAS {
        return Err(invalid(field, format!("longer than {MAX_ALIAS} characters")));
    }
    if value.chars().any(|c| c.is_control() || c.is_whitespace() || c == '/') {
        return Err(invalid(field, "contains `/`, spaces or control characters"));
    }
    Ok(value.to_string())
}

/// `prefer`, `neutral`, `prefer_not` (or `prefer-not`) or `must_not` (`must-not`).
pub fn promotion_rule(field: &str, value: &str) -> Result<PromotionRule, OpError> {
    match value {
        "prefer" => Ok(PromotionRule::Prefer),
        "neutral" => Ok(PromotionRule::Neutral),
        "prefer_not" | "prefer-not" => Ok(PromotionRule::PreferNot),
        "must_not" | "must-not" => Ok(PromotionRule::MustNot),
        other => Err(invalid(
            field,
            format!(
                "`{}` is not one of prefer, neutral, prefer_not, must_not",
                other.chars().take(40).collect::<String>()
            ),
        )),
    }
}

/// A peer's `host:port` (its Raft or HTTP address).
pub fn peer_address(field: &str, value: &str) -> Result<String, OpError> {
    instance(field, value).map(|k| k.to_string())
}

/// A Raft peer id (above 0).
pub fn peer_id(field: &str, id: u64) -> Result<u64, OpError> {
    if id == 0 {
        Err(invalid(field, "peer ids start at 1"))
    } else {
        Ok(id)
    }
}

/// A decimal number from a URL segment.
pub fn number(field: &str, value: &str) -> Result<u64, OpError> {
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            field,
            format!("`{}` is not a number", value.chars().take(40).collect::<String>()),
        ));
    }
    value.parse().map_err(|_| invalid(field, format!("`{value}` is too large")))
}

/// `true`/`false`/`1`/`0`/`yes`/`no` from a query string.
pub fn flag(field: &str, value: &str) -> Result<bool, OpError> {
    match value {
        "" | "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        other => Err(invalid(
            field,
            format!("`{}` is not true or false", other.chars().take(40).collect::<String>()),
        )),
    }
}

/// `full`, `incremental`, or empty (`None`: the peers decide).
pub fn backup_kind(field: &str, v: &str) -> Result<Option<crate::backup::manifest::BackupKind>, OpError> {
    use crate::backup::manifest::BackupKind;
    match v {
        "" | "auto" => Ok(None),
        "full" => Ok(Some(BackupKind::Full)),
        "incremental" => Ok(Some(BackupKind::Incremental)),
        other => Err(OpError::InvalidArgument(format!(
            "{field}: `{}` is not full or incremental",
            one_line(other, 40)
        ))),
    }
}

/// A backup id as the peers make them (`20261204T185048Z`).
pub fn backup_id(field: &str, v: &str) -> Result<String, OpError> {
    if crate::backup::manifest::backup_id_time(v).is_none() {
        return Err(OpError::InvalidArgument(format!(
            "{field}: `{}` is not a backup id (like 20261204T185048Z)",
            one_line(v, 40)
        )));
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations() {
        assert_eq!(duration("d", "90").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("d", "15m").unwrap(), Duration::from_secs(900));
        assert_eq!(duration("d", "1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(duration("d", "1d").unwrap(), Duration::from_secs(86_400));
        for bad in ["", "0", "500ms", "-1", "1y", "10 parsecs", "99999999999999999999999", "31d"] {
            let e = duration("duration", bad).unwrap_err().to_string();
            assert!(e.starts_with("duration: "), "{bad}: {e}");
        }
    }

    #[test]
    fn backup_kinds_and_ids() {
        use crate::backup::manifest::BackupKind;
        assert_eq!(backup_kind("kind", "").unwrap(), None);
        assert_eq!(backup_kind("kind", "incremental").unwrap(), Some(BackupKind::Incremental));
        assert!(backup_kind("kind", "differential").unwrap_err().to_string().contains("`differential`"));
        assert_eq!(backup_id("id", "20261204T185048Z").unwrap(), "20261204T185048Z");
        for bad in ["", "latest", "2026-12-04", "20261304T185048Z", "../../etc"] {
            assert!(backup_id("id", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_text() {
        assert!(cluster("cluster", "main").is_ok());
        assert!(cluster("cluster", "10.0.0.1:3306").is_ok());
        for bad in ["", "a/b", "a b", "a\u{7}"] {
            assert!(cluster("cluster", bad).is_err(), "{bad:?}");
        }
        assert!(text("reason", "", true).is_err());
        assert!(text("comment", "", false).is_ok());
        assert!(text("reason", "line\nbreak", true).is_err());
        assert!(text("reason", &"x".repeat(MAX_TEXT + 1), true).is_err());
        assert_eq!(promotion_rule("rule", "prefer-not").unwrap(), PromotionRule::PreferNot);
        assert!(promotion_rule("rule", "always").unwrap_err().to_string().contains("`always`"));
        assert_eq!(number("id", "42").unwrap(), 42);
        assert!(number("id", "4x").is_err() && number("id", "").is_err());
        assert!(flag("dry_run", "maybe").is_err());
    }

    proptest! {
        /// No input makes a parser panic; whatever it accepts is well-formed.
        #[test]
        fn parsers_never_panic(s in "\\PC{0,80}|[a-z0-9.:\\[\\]-]{0,40}") {
            if let Ok(k) = instance("i", &s) {
                prop_assert!(k.port > 0 && !k.host.is_empty());
                prop_assert_eq!(InstanceKey::parse_strict(&k.to_string()).unwrap(), k);
            }
            if let Ok(d) = duration("d", &s) {
                prop_assert!(d >= Duration::from_secs(1) && d <= MAX_DOWNTIME);
            }
            let _ = cluster("c", &s);
            let _ = text("t", &s, true);
            let _ = promotion_rule("r", &s);
            let _ = number("n", &s);
            let _ = flag("f", &s);
        }
    }
}
