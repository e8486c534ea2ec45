//! The bootstrap's decisions, pure: the node's ids from its address, first master or
//! replica, the donor to copy from, the GTID position a
//! MariaDB backup recorded, and the peer's configuration.

use std::net::Ipv4Addr;

use serde::Deserialize;

/// The Raft id of the node at `ip`: its address as a number, unique in a VPC and the
/// same on every rerun (a replaced node with a new address gets a new id).
pub fn node_id(ip: Ipv4Addr) -> u64 {
    u64::from(u32::from(ip))
}

/// The MySQL `server_id` of the node at `ip` (unique in the VPC, never 0).
pub fn server_id(ip: Ipv4Addr) -> u32 {
    u32::from(ip).max(1)
}

/// The `master_lock` as the bootstrap reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterRecord {
    /// `host:port` of the master.
    pub holder: String,
    /// The Raft peer that wrote it (0: a bootstrap's claim, not yet the leader's).
    pub leader_id: u64,
    pub expires_at: i64,
}

/// What this node becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// No cluster exists: initialize as its first master.
    FirstMaster,
    /// An earlier run of this node claimed the master and died before finishing.
    ResumeMaster,
    /// Copy the data and replicate from `master`.
    Replica { master: String },
}

/// First master or replica, from the `master_lock` (read under the bootstrap lock).
pub fn decide_role(master: Option<&MasterRecord>, me: &str) -> Role {
    match master {
        None => Role::FirstMaster,
        Some(m) if m.holder == me => Role::ResumeMaster,
        Some(m) => Role::Replica { master: m.holder.clone() },
    }
}

#[derive(Deserialize)]
struct TopologyDoc {
    #[serde(default)]
    instances: Vec<TopologyInstance>,
}

#[derive(Deserialize)]
struct TopologyInstance {
    key: String,
    #[serde(default)]
    reachable: bool,
    #[serde(default)]
    replicating: Option<bool>,
    #[serde(default)]
    source: Option<String>,
}

/// Where to copy the data from, best first: replicas of `master` that replicate (by
/// the `topology` item the leader keeps), then the master itself, so a new node takes
/// nothing from the master's capacity when a replica can give it.
pub fn donors(topology_json: Option<&str>, master: &str, me: &str) -> Vec<String> {
    let mut out: Vec<String> = topology_json
        .and_then(|j| serde_json::from_str::<TopologyDoc>(j).ok())
        .map(|doc| {
            doc.instances
                .into_iter()
                .filter(|i| {
                    i.reachable
                        && i.replicating == Some(true)
                        && i.source.as_deref() == Some(master)
                        && i.key != me
                        && i.key != master
                })
                .map(|i| i.key)
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.push(master.to_string());
    out
}

/// The GTID position in a MariaDB backup's `mariadb_backup_binlog_info` (or
/// `xtrabackup_binlog_info`): `file<TAB>position<TAB>gtid`. Empty when the donor had
/// executed no transaction with a GTID yet.
pub fn backup_gtid_position(binlog_info: &str) -> Result<String, String> {
    let line = binlog_info.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut fields = line.split('\t');
    let file = fields.next().unwrap_or("");
    let position = fields.next().unwrap_or("");
    if file.is_empty() || position.parse::<u64>().is_err() {
        return Err(format!("unreadable binlog position in the backup: `{}`", line.trim()));
    }
    let gtid = fields.next().unwrap_or("").trim().to_string();
    if !gtid.is_empty() && !gtid.split(',').all(is_mariadb_gtid) {
        return Err(format!("unreadable GTID position in the backup: `{gtid}`"));
    }
    Ok(gtid)
}

fn is_mariadb_gtid(s: &str) -> bool {
    let parts: Vec<&str> = s.trim().split('-').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// Merges `overlay` into `base`: tables key by key, anything else replaced.
pub fn merge_toml(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_toml(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_follows_the_master_lock() {
        let m = |h: &str| MasterRecord { holder: h.into(), leader_id: 1, expires_at: 0 };
        assert_eq!(decide_role(None, "10.0.0.1:3306"), Role::FirstMaster);
        assert_eq!(decide_role(Some(&m("10.0.0.1:3306")), "10.0.0.1:3306"), Role::ResumeMaster);
        assert_eq!(
            decide_role(Some(&m("10.0.0.2:3306")), "10.0.0.1:3306"),
            Role::Replica { master: "10.0.0.2:3306".into() }
        );
    }

    #[test]
    fn donors_are_replicating_replicas_then_the_master() {
        let doc = r#"{"alias":"c","master":"m:3306","epoch":1,"instances":[
            {"key":"m:3306","role":"master","reachable":true,"read_only":false,"source":null,"replicating":null},
            {"key":"b:3306","role":"replica","reachable":true,"read_only":true,"source":"m:3306","replicating":true},
            {"key":"a:3306","role":"replica","reachable":true,"read_only":true,"source":"m:3306","replicating":true},
            {"key":"c:3306","role":"replica","reachable":false,"read_only":true,"source":"m:3306","replicating":true},
            {"key":"d:3306","role":"replica","reachable":true,"read_only":true,"source":"m:3306","replicating":false},
            {"key":"me:3306","role":"replica","reachable":true,"read_only":true,"source":"m:3306","replicating":true}]}"#;
        assert_eq!(donors(Some(doc), "m:3306", "me:3306"), vec!["a:3306", "b:3306", "m:3306"]);
        assert_eq!(donors(None, "m:3306", "me:3306"), vec!["m:3306"]);
        assert_eq!(donors(Some("not json"), "m:3306", "me:3306"), vec!["m:3306"]);
    }

    #[test]
    fn the_backup_position_is_read_strictly() {
        assert_eq!(backup_gtid_position("binlog.000003\t1234\t0-1-5\n").unwrap(), "0-1-5");
        assert_eq!(backup_gtid_position("binlog.000003\t1234\t0-1-5,1-2-9").unwrap(), "0-1-5,1-2-9");
        assert_eq!(backup_gtid_position("binlog.000001\t328\t").unwrap(), "");
        assert_eq!(backup_gtid_position("binlog.000001\t328").unwrap(), "");
        assert!(backup_gtid_position("").is_err());
        assert!(backup_gtid_position("binlog.1\tx\t0-1-5").is_err());
        assert!(backup_gtid_position("binlog.1\t4\t0-1-5; DROP").is_err());
    }

    #[test]
    fn ids_come_from_the_address() {
        let ip: Ipv4Addr = "10.0.1.5".parse().unwrap();
        assert_eq!(node_id(ip), 0x0a00_0105);
        assert_eq!(server_id(ip), 0x0a00_0105);
        assert_eq!(server_id(Ipv4Addr::UNSPECIFIED), 1);
    }

    #[test]
    fn site_config_overrides_key_by_key() {
        let mut base: toml::Table = toml::from_str("a = 1\n[raft]\nx = 1\ny = 2\n").unwrap();
        merge_toml(&mut base, toml::from_str("[raft]\ny = 3\n[aws]\nz = 4\n").unwrap());
        assert_eq!(base["raft"]["x"].as_integer(), Some(1));
        assert_eq!(base["raft"]["y"].as_integer(), Some(3));
        assert_eq!(base["aws"]["z"].as_integer(), Some(4));
        assert_eq!(base["a"].as_integer(), Some(1));
    }
}
