//! What a backup is once it is complete: the manifest written last under its prefix
//! (no manifest, no backup), the bucket layout (DESIGN.md section 13), backup ids, and
//! the facts the backup tools leave behind (`xtrabackup_checkpoints`,
//! `xtrabackup_info`). Pure.

use serde::{Deserialize, Serialize};

use crate::topology::gtid::GtidSet;

/// The manifest layout this code writes; a newer one is refused, never misread.
pub const MANIFEST_FORMAT: u32 = 1;
pub const MANIFEST_NAME: &str = "manifest.json";

/// Full or incremental.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    Full,
    Incremental,
}

impl BackupKind {
    pub fn name(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Incremental => "incremental",
        }
    }

    /// The folder under the cluster's prefix.
    pub fn folder(self) -> &'static str {
        self.name()
    }
}

impl std::fmt::Display for BackupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The tool that copied the data, which is also how it is restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// `mariadb-backup --backup --stream=xbstream` (MariaDB).
    MariadbBackup,
    /// `xtrabackup --backup --stream=xbstream` (Percona Server / MySQL 8.0).
    Xtrabackup,
    /// The clone plugin's `CLONE LOCAL DATA DIRECTORY` (MySQL 8.0.17+), streamed out
    /// of the directory it writes as a tar archive, file by file.
    Clone,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::MariadbBackup => "mariadb-backup",
            Method::Xtrabackup => "xtrabackup",
            Method::Clone => "clone",
        }
    }

    /// The stream's format.
    pub fn stream_format(self) -> &'static str {
        match self {
            Method::MariadbBackup | Method::Xtrabackup => "xbstream",
            Method::Clone => "tar",
        }
    }

    /// Takes incrementals (the clone plugin copies everything every time).
    pub fn incremental(self) -> bool {
        !matches!(self, Method::Clone)
    }

    /// The data passes through a local directory before the upload.
    pub fn staged_locally(self) -> bool {
        matches!(self, Method::Clone)
    }
}

/// InnoDB log sequence numbers of a physical backup (`xtrabackup_checkpoints`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Lsn {
    pub from: u64,
    /// The checkpoint the copy starts from: the next incremental's `--incremental-lsn`.
    pub to: u64,
    pub last: u64,
}

/// One stored part: a zstd frame of `raw_bytes` of the stream (encrypted when the
/// backup is), as its own object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The object's name under the backup's prefix.
    pub name: String,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// Hex SHA-256 of the stored object.
    pub sha256: String,
}

/// Client-side encryption of the parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// `aes-256-gcm`: each part is a random 12-byte nonce, then the sealed frame.
    pub algorithm: String,
    /// The first 16 hex digits of the key's SHA-256: which key restores it.
    pub key_id: String,
}

/// A complete backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub cluster_id: String,
    pub kind: BackupKind,
    pub method: Method,
    /// The backup an incremental applies on (full or incremental).
    pub parent: Option<String>,
    /// `mariadb` or `mysql`.
    pub flavor: String,
    pub server_version: String,
    /// The instance copied, `host:port`.
    pub source: String,
    /// Which copy of the source's data (see `service::data_incarnation`): an
    /// incremental's parent is of the same one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub incarnation: String,
    /// Every transaction in the copy (the consistent point's executed set). For a clone
    /// taken while the source applied writes, the set read just after the copy: the
    /// copy holds at least `gtid_at_least` and at most this.
    pub gtid_executed: GtidSet,
    /// For a clone: the set read just before the copy began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid_at_least: Option<GtidSet>,
    /// MariaDB: the position text the tool recorded (`0-1-100,1-2-5`), which the
    /// restored server's `gtid_binlog_state` is set to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gtid_position_text: String,
    pub lsn: Option<Lsn>,
    /// Unix ms when the copy was consistent (at the latest): no transaction in it
    /// committed later.
    pub consistent_at_ms: i64,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub stream_format: String,
    pub compression: String,
    pub compression_level: i32,
    pub encryption: Option<Encryption>,
    pub parts: Vec<Part>,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// The copy passed through a directory on the source's host (the clone method),
    /// each file removed once streamed.
    pub staged_locally: bool,
}

impl Manifest {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest serializes")
    }

    /// Reads a manifest; a newer layout or another cluster's is refused.
    pub fn from_json(bytes: &[u8], cluster_id: &str) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| format!("unreadable manifest: {e}"))?;
        if m.format > MANIFEST_FORMAT {
            return Err(format!(
                "manifest format {} is newer than this orchestrator reads ({MANIFEST_FORMAT})",
                m.format
            ));
        }
        if m.cluster_id != cluster_id {
            return Err(format!("manifest of cluster {}, not {cluster_id}", m.cluster_id));
        }
        Ok(m)
    }

    /// The transactions surely in the copy: a clone's set read before it began,
    /// else the consistent point's. What the binlog replay after it starts from (a
    /// transaction the copy already holds is skipped by its GTID).
    pub fn held_at_least(&self) -> &GtidSet {
        self.gtid_at_least.as_ref().unwrap_or(&self.gtid_executed)
    }

    pub fn duration_ms(&self) -> i64 {
        (self.finished_at_ms - self.started_at_ms).max(0)
    }
}

/// Where a cluster's objects live in its bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub cluster_id: String,
}

impl Layout {
    pub fn new(cluster_id: &str) -> Layout {
        Layout { cluster_id: cluster_id.to_string() }
    }

    /// `{cluster_id}/full/<id>/` or `{cluster_id}/incremental/<id>/`.
    pub fn backup_prefix(&self, kind: BackupKind, id: &str) -> String {
        format!("{}/{}/{id}/", self.cluster_id, kind.folder())
    }

    pub fn kind_prefix(&self, kind: BackupKind) -> String {
        format!("{}/{}/", self.cluster_id, kind.folder())
    }

    pub fn manifest_key(&self, kind: BackupKind, id: &str) -> String {
        format!("{}{MANIFEST_NAME}", self.backup_prefix(kind, id))
    }

    pub fn part_name(index: usize) -> String {
        format!("part-{:06}.zst", index + 1)
    }

    /// `{cluster_id}/binlogs/`.
    pub fn binlogs_prefix(&self) -> String {
        format!("{}/binlogs/", self.cluster_id)
    }

    /// A segment's data: `{cluster_id}/binlogs/data/<seq>-<token>.binlog.zst`.
    pub fn segment_key(&self, seq: u64, token: u64) -> String {
        format!("{}/binlogs/data/{seq:012}-{token}.binlog.zst", self.cluster_id)
    }

    /// A segment's index entry: `{cluster_id}/binlogs/index/<seq>-<token>.json` (two
    /// archivers racing across a takeover never overwrite each other; the higher
    /// fencing token wins, see [`super::archive::resolve_index`]).
    pub fn segment_index_key(&self, seq: u64, token: u64) -> String {
        format!("{}/binlogs/index/{seq:012}-{token}.json", self.cluster_id)
    }

    /// Many index entries folded into one object by the archiver (never rewritten):
    /// `{cluster_id}/binlogs/index/chunk-<first seq>-<last seq>-<token>.json`.
    pub fn index_chunk_key(&self, first: u64, last: u64, token: u64) -> String {
        format!("{}/binlogs/index/chunk-{first:012}-{last:012}-{token}.json", self.cluster_id)
    }

    pub fn segment_index_prefix(&self) -> String {
        format!("{}/binlogs/index/", self.cluster_id)
    }

    pub fn segment_data_prefix(&self) -> String {
        format!("{}/binlogs/data/", self.cluster_id)
    }

    /// The backup a key belongs to: (kind, id, name under its prefix).
    pub fn parse_backup_key<'k>(&self, key: &'k str) -> Option<(BackupKind, &'k str, &'k str)> {
        let rest = key.strip_prefix(&self.cluster_id)?.strip_prefix('/')?;
        let (folder, rest) = rest.split_once('/')?;
        let kind = match folder {
            "full" => BackupKind::Full,
            "incremental" => BackupKind::Incremental,
            _ => return None,
        };
        let (id, name) = rest.split_once('/')?;
        Some((kind, id, name))
    }
}

/// A backup id: the UTC start time to the second, `20261204T185000Z`; sorts by time.
pub fn backup_id(unix_ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string().replace(['-', ':'], "")
}

/// A backup id's time, as Unix ms (ids are made by [`backup_id`]).
pub fn backup_id_time(id: &str) -> Option<i64> {
    let b = id.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    // Checked byte by byte before any slicing: a non-ASCII id never splits a character.
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' || !digits(0..8) || !digits(9..15) {
        return None;
    }
    let text =
        format!("{}-{}-{}T{}:{}:{}Z", &id[0..4], &id[4..6], &id[6..8], &id[9..11], &id[11..13], &id[13..15]);
    let at = humantime::parse_rfc3339(&text).ok()?;
    Some(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64)
}

/// Unix microseconds as `2026-12-04T18:50:00.123456Z`.
pub fn format_micros(micros: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros.max(0) as u64);
    humantime::format_rfc3339_micros(at).to_string()
}

/// Unix milliseconds as `2026-12-04T18:50:00.123Z`.
pub fn format_millis(millis: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

/// Parses a UTC time, `2026-12-04T18:50:00Z`, `2026-12-04 18:50:00.123456` (a
/// fraction of up to 9 digits, the `Z` optional), into Unix microseconds.
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    let at = humantime::parse_rfc3339_weak(text.trim()).map_err(|_| {
        format!(
            "`{text}` is not a timestamp: give UTC as 2026-12-04T18:50:00Z or 2026-12-04T18:50:00.123456Z"
        )
    })?;
    Ok(at.duration_since(std::time::UNIX_EPOCH).map_err(|_| format!("`{text}` is before 1970"))?.as_micros()
        as i64)
}

/// What `xtrabackup_checkpoints` says (`key = value` lines).
pub fn parse_checkpoints(text: &str) -> Result<Lsn, String> {
    let get = |key: &str| -> Result<u64, String> {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .ok_or_else(|| format!("xtrabackup_checkpoints has no {key}"))?
            .1
            .trim()
            .parse()
            .map_err(|_| format!("xtrabackup_checkpoints: {key} is not a number"))
    };
    Ok(Lsn { from: get("from_lsn")?, to: get("to_lsn")?, last: get("last_lsn")? })
}

/// The consistent point's GTID position from `xtrabackup_info`'s `binlog_pos` line:
/// MariaDB's `GTID of the last change '0-1-4'`, XtraBackup's `GTID of the last change
/// 'uuid:1-5'` (older: `binlog_pos = filename 'f', position 'p', GTID ...`).
pub fn parse_info_gtid(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.trim_start().starts_with("binlog_pos"))?;
    let (_, after) = line.split_once("GTID of the last change")?;
    let quoted = after.trim();
    let inner = quoted.strip_prefix('\'')?;
    let end = inner.find('\'')?;
    Some(inner[..end].trim().to_string())
}

/// A value of an `xtrabackup_info` line (`server_version = 10.11.19-MariaDB`).
pub fn info_value<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    text.lines().filter_map(|l| l.split_once('=')).find(|(k, _)| k.trim() == key).map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARIADB_INFO: &str =
        "uuid = 9f305ed5-f013-11f1-9096-02fc00000001\nname = \ntool_name = mariadb-backup\n\
server_version = 10.11.19-MariaDB-0+deb12u1-log\nstart_time = 2026-12-04 18:50:48\n\
binlog_pos = filename 'binlog.000001', position '863', GTID of the last change '0-1-3'\n\
innodb_from_lsn = 0\ninnodb_to_lsn = 44404\n";

    #[test]
    fn tool_files_give_lsns_and_the_gtid_position() {
        let lsn = parse_checkpoints(
            "backup_type = full-backuped\nfrom_lsn = 0\nto_lsn = 44404\nlast_lsn = 48145\nrecover_binlog_info = 0\n",
        )
        .unwrap();
        assert_eq!(lsn, Lsn { from: 0, to: 44404, last: 48145 });
        assert_eq!(parse_info_gtid(MARIADB_INFO).as_deref(), Some("0-1-3"));
        assert_eq!(info_value(MARIADB_INFO, "server_version"), Some("10.11.19-MariaDB-0+deb12u1-log"));
        let percona = "binlog_pos = filename 'binlog.000003', position '197', GTID of the last change \
                       '3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,\n";
        assert_eq!(parse_info_gtid(percona), None, "an unterminated quote is no position");
        let percona = "binlog_pos = filename 'binlog.000003', position '197', GTID of the last change \
                       '3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5'\n";
        assert_eq!(parse_info_gtid(percona).as_deref(), Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"));
        assert!(parse_checkpoints("from_lsn = x").is_err());
    }

    #[test]
    fn ids_and_timestamps_round_trip() {
        let ms = 1_796_410_248_000;
        let id = backup_id(ms);
        assert_eq!(id, "20261204T185048Z");
        assert_eq!(backup_id_time(&id), Some(ms));
        assert_eq!(backup_id_time("20261304T185048Z"), None);
        assert_eq!(backup_id_time("2026120éT18504Z"), None);
        assert_eq!(backup_id_time("20261204T185é0Z"), None);
        assert_eq!(format_micros(1_796_410_248_123_456), "2026-12-04T18:50:48.123456Z");
        assert_eq!(parse_timestamp("2026-12-04T18:50:48.123456Z").unwrap(), 1_796_410_248_123_456);
        assert_eq!(parse_timestamp("2026-12-04 18:50:48").unwrap(), 1_796_410_248_000_000);
        assert_eq!(parse_timestamp("2026-12-04T18:50:48.5Z").unwrap(), 1_796_410_248_500_000);
        for bad in ["2026-12-04", "yesterday", "2026-12-04T25:00:00Z"] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_layout_names_every_object_and_reads_keys_back() {
        let l = Layout::new("prod");
        assert_eq!(
            l.manifest_key(BackupKind::Full, "20261204T185048Z"),
            "prod/full/20261204T185048Z/manifest.json"
        );
        assert_eq!(l.segment_key(7, 3), "prod/binlogs/data/000000000007-3.binlog.zst");
        assert_eq!(l.segment_index_key(7, 3), "prod/binlogs/index/000000000007-3.json");
        assert_eq!(
            l.parse_backup_key("prod/incremental/20261204T185048Z/part-000001.zst"),
            Some((BackupKind::Incremental, "20261204T185048Z", "part-000001.zst"))
        );
        assert_eq!(l.parse_backup_key("other/full/x/manifest.json"), None);
        assert_eq!(Layout::part_name(0), "part-000001.zst");
    }

    #[test]
    fn a_manifest_of_a_newer_format_or_another_cluster_is_refused() {
        let m = Manifest {
            format: MANIFEST_FORMAT,
            id: "20261204T185048Z".into(),
            cluster_id: "prod".into(),
            kind: BackupKind::Full,
            method: Method::MariadbBackup,
            parent: None,
            flavor: "mariadb".into(),
            server_version: "10.11.19".into(),
            source: "10.0.0.2:3306".into(),
            incarnation: "2049-12-1".into(),
            gtid_executed: GtidSet::parse("0-1-3").unwrap(),
            gtid_at_least: None,
            gtid_position_text: "0-1-3".into(),
            lsn: Some(Lsn { from: 0, to: 1, last: 2 }),
            consistent_at_ms: 1,
            started_at_ms: 0,
            finished_at_ms: 2,
            stream_format: "xbstream".into(),
            compression: "zstd".into(),
            compression_level: 3,
            encryption: None,
            parts: vec![],
            raw_bytes: 0,
            stored_bytes: 0,
            staged_locally: false,
        };
        let json = m.to_json();
        assert_eq!(Manifest::from_json(&json, "prod").unwrap(), m);
        assert!(Manifest::from_json(&json, "dev").unwrap_err().contains("cluster prod"));
        let mut newer = m.clone();
        newer.format = 99;
        assert!(Manifest::from_json(&newer.to_json(), "prod").unwrap_err().contains("newer"));
    }
}
