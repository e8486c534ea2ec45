//! The topology data model: what an instance is, what a probe of it returned, and how
//! a set of probed instances forms clusters.
//!
//! Everything here is plain data and pure functions. The SQL that fills these types
//! lives in [`crate::mysql`]; the loop that keeps them fresh in [`crate::discovery`].

pub mod gtid;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use gtid::GtidSet;

/// `host:port` of a MySQL server, as replicas and operators name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceKey {
    pub host: String,
    pub port: u16,
}

impl InstanceKey {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self { host: host.into(), port }
    }
}

impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Why a `host:port` string is not an instance key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid instance `{input}`: {reason}")]
pub struct InstanceKeyError {
    pub input: String,
    pub reason: &'static str,
}

/// Longest host name DNS allows.
const MAX_HOST_LEN: usize = 253;

/// Whether `host` is a DNS name or IPv4 address (letters, digits, `-`, `_`, dot-separated
/// non-empty labels) or an IPv6 address (bracketed or not).
fn valid_host(host: &str) -> bool {
    if host.len() > MAX_HOST_LEN {
        return false;
    }
    let inner = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if inner.parse::<std::net::Ipv6Addr>().is_ok() {
        return true;
    }
    host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

impl InstanceKey {
    /// What an operator may name: `host:port` with a DNS name, an IPv4 or an IPv6
    /// address (bracketed or not) and a port 1-65535; no spaces, paths or schemes.
    /// (The [`FromStr`] form stays lenient: it reads what servers report and what the
    /// Raft log already holds.)
    pub fn parse_strict(s: &str) -> Result<InstanceKey, InstanceKeyError> {
        let err = |reason| InstanceKeyError { input: s.chars().take(80).collect(), reason };
        let key: InstanceKey = s.parse().map_err(|e: InstanceKeyError| err(e.reason))?;
        if !valid_host(&key.host) {
            return Err(err("host is not a DNS name or IP address"));
        }
        let port = s.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
        if port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("port is not a number 1-65535"));
        }
        Ok(key)
    }
}

impl FromStr for InstanceKey {
    type Err = InstanceKeyError;

    /// `host:port` with any non-empty host and a port 1-65535.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| InstanceKeyError { input: s.chars().take(80).collect(), reason };
        let (host, port) = s.rsplit_once(':').ok_or_else(|| err("expected host:port"))?;
        if host.is_empty() {
            return Err(err("empty host"));
        }
        let port: u16 = port.parse().map_err(|_| err("port is not a number 1-65535"))?;
        if port == 0 {
            return Err(err("port is not a number 1-65535"));
        }
        Ok(InstanceKey::new(host, port))
    }
}

impl Serialize for InstanceKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for InstanceKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which server family an instance runs; decides the SQL dialect in [`crate::mysql`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    MySql,
    Percona,
    MariaDb,
}

impl Flavor {
    /// Reads the flavor from `@@version` and `@@version_comment`.
    pub fn detect(version: &str, version_comment: &str) -> Flavor {
        if version.to_ascii_lowercase().contains("mariadb") {
            Flavor::MariaDb
        } else if version_comment.to_ascii_lowercase().contains("percona") {
            Flavor::Percona
        } else {
            Flavor::MySql
        }
    }

    pub fn is_mariadb(self) -> bool {
        self == Flavor::MariaDb
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavor::MySql => "mysql",
            Flavor::Percona => "percona",
            Flavor::MariaDb => "mariadb",
        })
    }
}

/// State of a replication thread as `SHOW REPLICA STATUS` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThreadState {
    Running,
    Connecting,
    Stopped,
}

impl ThreadState {
    /// `Yes` / `Connecting` / `No` (or anything else, taken as stopped).
    pub fn from_status(value: &str) -> ThreadState {
        match value.trim().to_ascii_lowercase().as_str() {
            "yes" => ThreadState::Running,
            "connecting" | "preparing" => ThreadState::Connecting,
            _ => ThreadState::Stopped,
        }
    }
}

impl fmt::Display for ThreadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ThreadState::Running => "running",
            ThreadState::Connecting => "connecting",
            ThreadState::Stopped => "stopped",
        })
    }
}

/// One replica's view of its replication channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationStatus {
    /// The master this replica is configured to replicate from.
    pub source: InstanceKey,
    pub io_thread: ThreadState,
    pub sql_thread: ThreadState,
    pub last_io_errno: u32,
    pub last_io_error: String,
    pub last_sql_errno: u32,
    pub last_sql_error: String,
    /// `Seconds_Behind_Master`; `None` when the server reports NULL.
    pub seconds_behind: Option<u64>,
    /// MariaDB `Using_Gtid` (`Slave_Pos`, `Current_Pos`, `No`) or MySQL `Auto_Position`
    /// (`auto_position` / `No`).
    pub gtid_mode: String,
    /// GTIDs the IO thread has received (MySQL `Retrieved_Gtid_Set`, MariaDB `Gtid_IO_Pos`).
    pub received: GtidSet,
}

impl ReplicationStatus {
    pub fn is_replicating(&self) -> bool {
        self.io_thread == ThreadState::Running && self.sql_thread == ThreadState::Running
    }
}

/// Semi-synchronous replication settings and state of one server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SemiSyncStatus {
    pub master_enabled: bool,
    pub replica_enabled: bool,
    /// The master is currently waiting for replica acknowledgements (status ON).
    pub master_active: bool,
    pub master_clients: u32,
}

/// What one successful probe of an instance returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceProbe {
    pub server_id: u32,
    /// `@@server_uuid`; MariaDB has none.
    pub server_uuid: Option<String>,
    pub version: String,
    pub flavor: Flavor,
    pub read_only: bool,
    /// `@@super_read_only` on MySQL; MariaDB has none.
    pub super_read_only: Option<bool>,
    pub log_bin: bool,
    /// Every transaction this server has executed (`@@gtid_executed`, MariaDB
    /// `@@gtid_current_pos`).
    pub gtid_executed: GtidSet,
    /// `None` when the server is not configured as a replica.
    pub replication: Option<ReplicationStatus>,
    /// Replicas currently connected to this server (from `SHOW REPLICAS` /
    /// `SHOW SLAVE HOSTS`, or the processlist when they set no `report_host`).
    pub replicas: Vec<InstanceKey>,
    pub semi_sync: SemiSyncStatus,
}

impl InstanceProbe {
    /// Everything this server has, executed or merely received into its relay log.
    pub fn gtid_received_or_executed(&self) -> GtidSet {
        match &self.replication {
            Some(r) => self.gtid_executed.union(&r.received),
            None => self.gtid_executed.clone(),
        }
    }
}

/// The discovery loop's record of one instance: the last probe outcome and the last
/// successful probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceState {
    pub key: InstanceKey,
    /// The last probe succeeded.
    pub reachable: bool,
    /// Why the last probe failed, when it did.
    pub last_error: Option<String>,
    /// The last successful probe (kept while the instance is unreachable, so the
    /// topology it belonged to stays visible).
    pub last_probe: Option<InstanceProbe>,
    pub last_checked_unix_ms: i64,
    pub last_seen_unix_ms: Option<i64>,
    pub probe_latency_ms: f64,
    pub consecutive_failures: u32,
    /// How the last probe failed, when it did.
    #[serde(default)]
    pub failure: Option<FailureKind>,
    /// When the first probe of the current run of failures started (`None` while
    /// reachable): an instance failing by timeouts since then is hung at least that long.
    #[serde(default)]
    pub unreachable_since_unix_ms: Option<i64>,
}

/// How a probe failed: decides whether an unreachable server is gone or hung.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Connection refused or reset: nothing listens (process dead, host up).
    Refused,
    /// No answer in time: the process is hung or the network is cut.
    Timeout,
    /// The server answered but refused us (authentication, privileges, a query error).
    Rejected,
    /// Anything else.
    Other,
    /// Its process is exiting or gone, as seen on its own host by the peer there (a
    /// fact about the process, not a view over the network). A killed server keeps its
    /// sockets open, accepting and answering nothing, until the kernel has freed its
    /// memory: tens of milliseconds for a small one, seconds for a large buffer pool.
    Exited,
}

impl InstanceState {
    pub fn new(key: InstanceKey) -> Self {
        Self {
            key,
            reachable: false,
            last_error: None,
            last_probe: None,
            last_checked_unix_ms: 0,
            last_seen_unix_ms: None,
            probe_latency_ms: 0.0,
            consecutive_failures: 0,
            failure: None,
            unreachable_since_unix_ms: None,
        }
    }

    /// The master this instance replicates from, per its last successful probe.
    pub fn source(&self) -> Option<&InstanceKey> {
        self.last_probe.as_ref().and_then(|p| p.replication.as_ref()).map(|r| &r.source)
    }
}

/// An instance's place in its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The master the Raft group recorded, or else the root of the replication tree.
    Master,
    /// Replicates from another instance of the cluster.
    Replica,
    /// A master a recovery replaced, not (yet) replicating from the new one: dead, or
    /// back and fenced until it rejoins.
    FormerMaster,
    /// Never probed successfully, so its place is not known.
    Unknown,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Replica => "replica",
            Role::FormerMaster => "former_master",
            Role::Unknown => "unknown",
        }
    }
}

/// What discovery takes from the Raft group's decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    pub clusters: Vec<RegisteredCluster>,
    /// Instances operators added: discovered by every peer.
    pub seeds: BTreeSet<InstanceKey>,
    /// Instances operators forgot: tracked by no peer until discovered again.
    pub forgotten: BTreeSet<InstanceKey>,
}

/// A cluster the Raft group registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredCluster {
    pub alias: String,
    /// The master the group recorded: the alias follows it through every recovery.
    pub master: InstanceKey,
    /// Masters that recoveries of this cluster replaced.
    pub former: BTreeSet<InstanceKey>,
}

/// One instance as shown inside a cluster snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterInstance {
    pub role: Role,
    #[serde(flatten)]
    pub state: InstanceState,
}

/// A cluster as this peer sees it at one moment: the master and everything that
/// replicates from it, directly or through intermediate masters, and the masters
/// recoveries replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSnapshot {
    /// Operator-given name, or the master's `host:port`.
    pub alias: String,
    /// The master the Raft group recorded for a registered cluster; otherwise the root
    /// of the replication tree.
    pub master: InstanceKey,
    pub instances: Vec<ClusterInstance>,
    pub taken_unix_ms: i64,
}

impl ClusterSnapshot {
    pub fn instance(&self, key: &InstanceKey) -> Option<&ClusterInstance> {
        self.instances.iter().find(|i| &i.state.key == key)
    }

    pub fn reachable_count(&self) -> usize {
        self.instances.iter().filter(|i| i.state.reachable).count()
    }

    /// Every instance but the master and the former masters: what a recovery repoints.
    pub fn replica_keys(&self) -> Vec<InstanceKey> {
        self.instances
            .iter()
            .filter(|i| i.state.key != self.master && i.role != Role::FormerMaster)
            .map(|i| i.state.key.clone())
            .collect()
    }
}

/// Groups instances into clusters by following each one's replication source up to a
/// root. A root is an instance that replicates from nobody, one whose source is not
/// known to discovery, or the smallest key of a replication cycle (co-masters).
///
/// A cluster the Raft group registered (`registry`) takes the tree holding its recorded
/// master, and the trees rooted at its former masters join it: right after a failover
/// the new master and its replicas carry the alias, and the dead old master is shown
/// beside them as [`Role::FormerMaster`]. Other trees take the alias of a configured
/// seed they hold (`aliases`, earliest seed first), or else the root's key. Output is
/// sorted by alias.
pub fn build_clusters(
    instances: &BTreeMap<InstanceKey, InstanceState>,
    aliases: &[(String, Vec<InstanceKey>)],
    registry: &Registry,
    taken_unix_ms: i64,
) -> Vec<ClusterSnapshot> {
    let mut members: BTreeMap<InstanceKey, Vec<InstanceKey>> = BTreeMap::new();
    for key in instances.keys() {
        members.entry(root_of(key, instances)).or_default().push(key.clone());
    }
    // Which alias each tree (by root) belongs to.
    let mut alias_of: BTreeMap<InstanceKey, String> = BTreeMap::new();
    // Registered aliases placed, with their recorded master and former masters.
    let mut registered: BTreeMap<String, (&InstanceKey, &BTreeSet<InstanceKey>)> = BTreeMap::new();
    for rc in &registry.clusters {
        if !instances.contains_key(&rc.master) || registered.contains_key(&rc.alias) {
            continue;
        }
        let root = root_of(&rc.master, instances);
        if alias_of.contains_key(&root) {
            continue;
        }
        alias_of.insert(root, rc.alias.clone());
        registered.insert(rc.alias.clone(), (&rc.master, &rc.former));
    }
    for rc in &registry.clusters {
        if registered.get(&rc.alias).is_none_or(|(m, _)| *m != &rc.master) {
            continue;
        }
        for former in &rc.former {
            if members.contains_key(former) && !alias_of.contains_key(former) {
                alias_of.insert(former.clone(), rc.alias.clone());
            }
        }
    }
    for (alias, seeds) in aliases {
        if alias_of.values().any(|a| a == alias) {
            continue;
        }
        let root = seeds.iter().find_map(|s| {
            members
                .iter()
                .find(|(root, keys)| keys.contains(s) && !alias_of.contains_key(*root))
                .map(|(r, _)| r)
        });
        if let Some(root) = root {
            alias_of.insert(root.clone(), alias.clone());
        }
    }
    let mut grouped: BTreeMap<String, Vec<InstanceKey>> = BTreeMap::new();
    for root in members.keys() {
        let alias = alias_of.get(root).cloned().unwrap_or_else(|| root.to_string());
        grouped.entry(alias).or_default().push(root.clone());
    }
    let mut clusters: Vec<ClusterSnapshot> = grouped
        .into_iter()
        .map(|(alias, roots)| {
            let (master, former) = match registered.get(&alias) {
                Some((master, former)) => ((*master).clone(), Some(*former)),
                None => (roots[0].clone(), None),
            };
            let mut keys: Vec<&InstanceKey> = roots.iter().flat_map(|r| &members[r]).collect();
            keys.sort();
            let instances = keys
                .into_iter()
                .map(|k| {
                    let state = instances[k].clone();
                    let role = if k == &master {
                        Role::Master
                    } else if roots.contains(k) && former.is_some_and(|f| f.contains(k)) {
                        Role::FormerMaster
                    } else if roots.contains(k) {
                        Role::Master
                    } else if state.last_probe.is_none() {
                        Role::Unknown
                    } else {
                        Role::Replica
                    };
                    ClusterInstance { role, state }
                })
                .collect();
            ClusterSnapshot { alias, master, instances, taken_unix_ms }
        })
        .collect();
    clusters.sort_by(|a, b| a.alias.cmp(&b.alias));
    clusters
}

fn root_of(key: &InstanceKey, instances: &BTreeMap<InstanceKey, InstanceState>) -> InstanceKey {
    let mut path: Vec<&InstanceKey> = vec![key];
    let mut seen: BTreeSet<&InstanceKey> = BTreeSet::from([key]);
    let mut current = key;
    loop {
        let next =
            instances.get(current).and_then(InstanceState::source).filter(|s| instances.contains_key(*s));
        match next {
            None => return current.clone(),
            Some(next) if seen.contains(next) => {
                // A cycle: every member of it is equally a master; pick the smallest.
                let start = path.iter().position(|k| *k == next).unwrap_or(0);
                return path[start..].iter().min().map(|k| (*k).clone()).unwrap_or_else(|| next.clone());
            }
            Some(next) => {
                seen.insert(next);
                path.push(next);
                current = next;
            }
        }
    }
}

/// Fixtures shared by the modules' tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A MariaDB probe: a writable master when `source` is `None`, else a read-only
    /// replica of `source` with both threads running and no lag. Tests adjust fields.
    pub fn probe(source: Option<&str>) -> InstanceProbe {
        InstanceProbe {
            server_id: 1,
            server_uuid: None,
            version: "10.11.19-MariaDB".into(),
            flavor: Flavor::MariaDb,
            read_only: source.is_some(),
            super_read_only: None,
            log_bin: true,
            gtid_executed: GtidSet::new(),
            replication: source.map(|s| ReplicationStatus {
                source: s.parse().expect("instance key"),
                io_thread: ThreadState::Running,
                sql_thread: ThreadState::Running,
                last_io_errno: 0,
                last_io_error: String::new(),
                last_sql_errno: 0,
                last_sql_error: String::new(),
                seconds_behind: Some(0),
                gtid_mode: "Slave_Pos".into(),
                received: GtidSet::new(),
            }),
            replicas: vec![],
            semi_sync: SemiSyncStatus::default(),
        }
    }

    /// A reachable instance `key` with [`probe`] as its last probe.
    pub fn reachable(key: &str, source: Option<&str>) -> InstanceState {
        let mut st = InstanceState::new(key.parse().expect("instance key"));
        st.reachable = true;
        st.last_probe = Some(probe(source));
        st
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> InstanceKey {
        s.parse().unwrap()
    }

    fn probed(k: &str, source: Option<&str>) -> InstanceState {
        fixtures::reachable(k, source)
    }

    fn map(states: Vec<InstanceState>) -> BTreeMap<InstanceKey, InstanceState> {
        states.into_iter().map(|s| (s.key.clone(), s)).collect()
    }

    /// (alias, master, [(instance, role)]) per cluster.
    type Shape = (String, String, Vec<(String, Role)>);

    fn shape(clusters: &[ClusterSnapshot]) -> Vec<Shape> {
        clusters
            .iter()
            .map(|c| {
                (
                    c.alias.clone(),
                    c.master.to_string(),
                    c.instances.iter().map(|i| (i.state.key.to_string(), i.role)).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn instance_key_parses_and_rejects() {
        assert_eq!(key("10.0.0.1:3306"), InstanceKey::new("10.0.0.1", 3306));
        assert_eq!(key("db-1.internal:3307").port, 3307);
        for bad in ["nohost", ":3306", "h:0", "h:99999", "h:x"] {
            let err = bad.parse::<InstanceKey>().unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
        let strict = InstanceKey::parse_strict;
        assert_eq!(strict("[::1]:3306").unwrap().host, "[::1]");
        assert_eq!(strict("fd00::5:3306").unwrap().host, "fd00::5", "as a server reports it");
        assert_eq!(strict("db_1.example:3306").unwrap().host, "db_1.example");
        let long = format!("{}:1", "a".repeat(300));
        for bad in
            ["a b:1", "h/x:1", "h:+1", "h: 1", "h..x:1", ".h:1", "[zz]:1", "h:1:2", "h\n:1", long.as_str()]
        {
            assert!(strict(bad).is_err(), "`{bad}` must be refused");
        }
        // What servers report and the Raft log holds is read as it is.
        assert_eq!(key("fd00::5:3306").host, "fd00::5");
        assert_eq!(key("odd host.:3306").host, "odd host.");
    }

    fn registry(alias: &str, master: &str, former: &[&str]) -> Registry {
        Registry {
            clusters: vec![RegisteredCluster {
                alias: alias.into(),
                master: key(master),
                former: former.iter().map(|f| key(f)).collect(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_alias_follows_the_recorded_master_and_shows_the_former_one() {
        let mut dead = probed("a:1", None);
        dead.reachable = false;
        // After a failover to b: the old master a is dead (its last probe: a master), b
        // is promoted and c already follows it.
        let states = map(vec![dead.clone(), probed("b:1", None), probed("c:1", Some("b:1"))]);
        let aliases = vec![("main".to_string(), vec![key("a:1")])];
        let after = build_clusters(&states, &aliases, &registry("main", "b:1", &["a:1"]), 0);
        let want = vec![(
            "main".to_string(),
            "b:1".to_string(),
            vec![
                ("a:1".into(), Role::FormerMaster),
                ("b:1".into(), Role::Master),
                ("c:1".into(), Role::Replica),
            ],
        )];
        assert_eq!(shape(&after), want);
        // Before anyone looked again: b and c still name a as their source.
        let stale = map(vec![dead, probed("b:1", Some("a:1")), probed("c:1", Some("a:1"))]);
        assert_eq!(shape(&build_clusters(&stale, &aliases, &registry("main", "b:1", &["a:1"]), 0)), want);
        // The old master rejoined as a replica: an ordinary replica again.
        let rejoined = map(vec![probed("a:1", Some("b:1")), probed("b:1", None), probed("c:1", Some("b:1"))]);
        let c = build_clusters(&rejoined, &aliases, &registry("main", "b:1", &["a:1"]), 0);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].instance(&key("a:1")).unwrap().role, Role::Replica);
        assert_eq!(c[0].replica_keys(), vec![key("a:1"), key("c:1")]);
        // Without the registry, the seed alias goes to the dead master alone.
        let unregistered = build_clusters(&states, &aliases, &Registry::default(), 0);
        assert_eq!(unregistered.iter().find(|c| c.alias == "main").unwrap().instances.len(), 1);
    }

    #[test]
    fn a_registered_master_not_yet_discovered_leaves_the_seed_alias() {
        let states = map(vec![probed("a:1", None), probed("c:1", Some("a:1"))]);
        let aliases = vec![("main".to_string(), vec![key("a:1")])];
        let c = build_clusters(&states, &aliases, &registry("main", "z:1", &[]), 0);
        assert_eq!((c[0].alias.as_str(), c[0].master.to_string()), ("main", "a:1".to_string()));
    }

    #[test]
    fn flavor_detection() {
        assert_eq!(Flavor::detect("10.11.19-MariaDB-0+deb12u1", "Debian 12"), Flavor::MariaDb);
        assert_eq!(Flavor::detect("8.0.36-28", "Percona Server (GPL), Release 28"), Flavor::Percona);
        assert_eq!(Flavor::detect("8.4.2", "MySQL Community Server - GPL"), Flavor::MySql);
    }

    #[test]
    fn thread_states() {
        assert_eq!(ThreadState::from_status("Yes"), ThreadState::Running);
        assert_eq!(ThreadState::from_status("Connecting"), ThreadState::Connecting);
        assert_eq!(ThreadState::from_status("No"), ThreadState::Stopped);
        assert_eq!(ThreadState::from_status(""), ThreadState::Stopped);
    }

    #[test]
    fn one_master_two_replicas_form_one_cluster() {
        let states = map(vec![
            probed("a:3306", None),
            probed("b:3306", Some("a:3306")),
            probed("c:3306", Some("a:3306")),
        ]);
        let clusters = build_clusters(&states, &[], &Registry::default(), 7);
        assert_eq!(
            shape(&clusters),
            vec![(
                "a:3306".into(),
                "a:3306".into(),
                vec![
                    ("a:3306".into(), Role::Master),
                    ("b:3306".into(), Role::Replica),
                    ("c:3306".into(), Role::Replica)
                ]
            )]
        );
        assert_eq!(clusters[0].taken_unix_ms, 7);
    }

    #[test]
    fn chained_replica_belongs_to_the_root_cluster_and_alias_follows_any_seed() {
        let states = map(vec![
            probed("a:1", None),
            probed("b:1", Some("a:1")),
            probed("c:1", Some("b:1")),
            probed("x:1", None),
        ]);
        let aliases = vec![("main".to_string(), vec![key("c:1")])];
        let clusters = build_clusters(&states, &aliases, &Registry::default(), 0);
        assert_eq!(clusters.len(), 2);
        assert_eq!(clusters[0].alias, "main");
        assert_eq!(clusters[0].master, key("a:1"));
        assert_eq!(clusters[0].instances.len(), 3);
        assert_eq!(clusters[1].alias, "x:1");
    }

    #[test]
    fn an_alias_goes_to_the_cluster_of_its_earliest_seed_only() {
        // After a failover: b is the new master (pinned first), a the old one, alone.
        let states = map(vec![probed("a:1", None), probed("b:1", None), probed("c:1", Some("b:1"))]);
        let aliases = vec![("main".to_string(), vec![key("b:1"), key("a:1")])];
        let clusters = build_clusters(&states, &aliases, &Registry::default(), 0);
        assert_eq!(clusters.len(), 2);
        let main: Vec<_> = clusters.iter().filter(|c| c.alias == "main").collect();
        assert_eq!(main.len(), 1);
        assert_eq!(main[0].master, key("b:1"));
        assert!(clusters.iter().any(|c| c.alias == "a:1"));
    }

    #[test]
    fn unreachable_master_keeps_its_cluster_together() {
        let mut master = probed("a:1", None);
        master.reachable = false;
        master.last_error = Some("connection refused".into());
        let states = map(vec![master, probed("b:1", Some("a:1"))]);
        let clusters = build_clusters(&states, &[], &Registry::default(), 0);
        assert_eq!(clusters.len(), 1);
        assert_eq!(clusters[0].master, key("a:1"));
        assert_eq!(clusters[0].reachable_count(), 1);
    }

    #[test]
    fn never_probed_instance_is_its_own_cluster_with_unknown_role_unless_referenced() {
        // A replica whose master was never probed: the master is root (referenced and known).
        let states = map(vec![InstanceState::new(key("a:1")), probed("b:1", Some("a:1"))]);
        let clusters = build_clusters(&states, &[], &Registry::default(), 0);
        assert_eq!(clusters.len(), 1);
        assert_eq!(clusters[0].instances[0].role, Role::Master);
        // A replica whose master discovery does not know: the replica is the root.
        let states = map(vec![probed("b:1", Some("gone:1"))]);
        assert_eq!(build_clusters(&states, &[], &Registry::default(), 0)[0].master, key("b:1"));
    }

    #[test]
    fn co_masters_pick_the_smallest_key() {
        let states =
            map(vec![probed("b:1", Some("a:1")), probed("a:1", Some("b:1")), probed("c:1", Some("b:1"))]);
        let clusters = build_clusters(&states, &[], &Registry::default(), 0);
        assert_eq!(clusters.len(), 1);
        assert_eq!(clusters[0].master, key("a:1"));
    }
}
