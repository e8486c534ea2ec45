//! What a node knows about itself before it bootstraps: the cluster's facts (from the
//! instance's tags on AWS, or a facts file in tests and the sandbox), where things go on
//! this host, and which programs to run.
//!
//! A facts file (TOML, unknown keys refused):
//!
//! ```toml
//! cluster_id = "orders"
//! instance_id = "i-0abc"
//! private_ip = "10.0.1.5"
//! flavor = "mariadb"               # or "mysql"
//! region = "eu-west-1"
//! # Optional: endpoint_url (moto), table, bucket, credentials_secret, luks_secret,
//! # instance_store_device, write_target_group, read_target_group, server_version.
//!
//! [layout]                         # optional; production paths by default
//! root = "/"                       # every path below is under it
//! service_manager = "systemd"      # or "process" (tests, the sandbox)
//! os_user = "mysql"
//! bootstrap_lock_lease_s = 30
//! site_config = "/etc/orchestrator/site.toml"   # merged into the peer's config
//!
//! [programs]                       # optional; Debian's paths by default
//! mysqld = "/usr/sbin/mariadbd"
//! mysql_root = "/opt/mysql-root"   # run mysqld through a root of its own (its loader)
//! orchestrator = "/usr/local/bin/orchestrator"
//! ```

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::desired::node_tags;
use crate::mysql_config::ServerFlavor;
use crate::spec::ResourceNames;

/// The tag AWS puts on every instance an Auto Scaling group launches.
pub const AUTO_SCALING_GROUP_TAG: &str = "aws:autoscaling:groupName";

/// The node's facts: who it is and the cluster's AWS names.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeFacts {
    pub cluster_id: String,
    pub instance_id: String,
    pub private_ip: Ipv4Addr,
    pub flavor: ServerFlavor,
    #[serde(default)]
    pub server_version: String,
    #[serde(default)]
    pub region: Option<String>,
    /// One endpoint for every AWS service (moto in tests and the sandbox).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub bucket: Option<String>,
    #[serde(default)]
    pub credentials_secret: Option<String>,
    /// Set on instance-store types: the data directory is LUKS-encrypted with it.
    #[serde(default)]
    pub luks_secret: Option<String>,
    /// The instance-store device to encrypt (default `/dev/nvme1n1`).
    #[serde(default)]
    pub instance_store_device: Option<PathBuf>,
    /// Target group names (default `{cluster_id}-write`, `{cluster_id}-read`).
    #[serde(default)]
    pub write_target_group: Option<String>,
    #[serde(default)]
    pub read_target_group: Option<String>,
    /// The Auto Scaling group the Raft members follow (default `{cluster_id}-nodes`,
    /// the provisioner's name; from metadata, the group's `aws:autoscaling:groupName`
    /// tag where metadata shows it).
    #[serde(default)]
    pub auto_scaling_group: Option<String>,
    /// How long the peers keep backups (the spec's `backup_retention_weeks`).
    #[serde(default)]
    pub backup_retention_days: Option<u64>,
    #[serde(default)]
    pub layout: LayoutConfig,
    #[serde(default)]
    pub programs: ProgramsConfig,
}

/// How long-running processes are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ServiceManager {
    /// Units in `/etc/systemd/system`, `systemctl enable --now`.
    #[default]
    Systemd,
    /// Detached processes with pid files (tests and the sandbox).
    Process,
}

/// Where things go on this host.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LayoutConfig {
    pub root: PathBuf,
    pub service_manager: ServiceManager,
    /// The OS user mysqld runs as (`root` in the test bed).
    pub os_user: String,
    /// The bootstrap lock lasts this long past each renewal.
    pub bootstrap_lock_lease_s: u64,
    /// A TOML file merged over the generated peer config (tuning, extra tokens).
    pub site_config: Option<PathBuf>,
    /// The server's memory settings: small for tests, sized for the instance otherwise.
    pub innodb_buffer_pool_mb: u32,
}

impl Default for LayoutConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            service_manager: ServiceManager::Systemd,
            os_user: "mysql".into(),
            bootstrap_lock_lease_s: 30,
            site_config: None,
            innodb_buffer_pool_mb: 1024,
        }
    }
}

/// Which programs to run (Debian's paths by default).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ProgramsConfig {
    pub mysqld: Option<PathBuf>,
    /// A minimal root holding MySQL (DESIGN.md section 7): its binaries run through
    /// its own loader and libraries.
    pub mysql_root: Option<PathBuf>,
    pub install_db: Option<PathBuf>,
    pub mariadb_backup: Option<PathBuf>,
    pub mbstream: Option<PathBuf>,
    pub orchestrator: Option<PathBuf>,
    pub cryptsetup: Option<PathBuf>,
}

/// Why the facts cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error("cannot read facts file {path}: {message}")]
    Read { path: String, message: String },
    #[error("facts file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("instance metadata: {0}")]
    Metadata(String),
    #[error("instance tag {tag} is missing: the launch template sets it (provisioner apply)")]
    MissingTag { tag: &'static str },
    #[error("{0}")]
    Invalid(String),
}

impl NodeFacts {
    pub fn load(path: &Path) -> Result<NodeFacts, FactsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FactsError::Read { path: path.display().to_string(), message: e.to_string() })?;
        let facts: NodeFacts = toml::from_str(&text).map_err(|e| FactsError::Parse {
            path: path.display().to_string(),
            message: e.message().trim().replace('\n', " "),
        })?;
        facts.validate()?;
        Ok(facts)
    }

    /// From the instance's metadata: instance id, private address, region, and the
    /// facts the provisioner wrote as instance tags ([`node_tags`]).
    pub fn from_tags(
        instance_id: String,
        private_ip: Ipv4Addr,
        region: String,
        tags: &BTreeMap<String, String>,
    ) -> Result<NodeFacts, FactsError> {
        let tag = |t: &'static str| tags.get(t).cloned().ok_or(FactsError::MissingTag { tag: t });
        let flavor = match tag(node_tags::FLAVOR)?.as_str() {
            "mariadb" => ServerFlavor::Mariadb,
            "percona" | "mysql" => ServerFlavor::Mysql,
            other => {
                return Err(FactsError::Invalid(format!("instance tag {}: `{other}`", node_tags::FLAVOR)))
            }
        };
        let facts = NodeFacts {
            cluster_id: tag(node_tags::CLUSTER_ID)?,
            instance_id,
            private_ip,
            flavor,
            server_version: tags.get(node_tags::SERVER_VERSION).cloned().unwrap_or_default(),
            region: Some(region),
            endpoint_url: None,
            table: Some(tag(node_tags::TABLE)?),
            bucket: Some(tag(node_tags::BUCKET)?),
            credentials_secret: Some(tag(node_tags::CREDENTIALS_SECRET)?),
            luks_secret: tags.get(node_tags::LUKS_SECRET).cloned(),
            instance_store_device: None,
            write_target_group: Some(tag(node_tags::WRITE_TARGET_GROUP)?),
            read_target_group: Some(tag(node_tags::READ_TARGET_GROUP)?),
            auto_scaling_group: tags.get(AUTO_SCALING_GROUP_TAG).cloned(),
            backup_retention_days: tags.get(node_tags::BACKUP_RETENTION_DAYS).and_then(|d| d.parse().ok()),
            layout: LayoutConfig::default(),
            programs: ProgramsConfig::default(),
        };
        facts.validate()?;
        Ok(facts)
    }

    fn validate(&self) -> Result<(), FactsError> {
        if self.cluster_id.is_empty() || self.instance_id.is_empty() {
            return Err(FactsError::Invalid("cluster_id and instance_id must not be empty".into()));
        }
        if self.private_ip.is_unspecified() {
            return Err(FactsError::Invalid("private_ip must be the node's own address".into()));
        }
        if self.layout.bootstrap_lock_lease_s < 3 {
            return Err(FactsError::Invalid("layout.bootstrap_lock_lease_s: at least 3 s".into()));
        }
        Ok(())
    }

    pub fn names(&self) -> ResourceNames {
        ResourceNames::of(&self.cluster_id)
    }

    pub fn table(&self) -> String {
        self.table.clone().unwrap_or_else(|| self.names().table)
    }

    pub fn auto_scaling_group(&self) -> String {
        self.auto_scaling_group.clone().unwrap_or_else(|| self.names().auto_scaling_group)
    }

    pub fn credentials_secret(&self) -> String {
        self.credentials_secret.clone().unwrap_or_else(|| self.names().credentials_secret)
    }

    pub fn write_target_group(&self) -> String {
        self.write_target_group.clone().unwrap_or_else(|| self.names().write_target_group)
    }

    pub fn read_target_group(&self) -> String {
        self.read_target_group.clone().unwrap_or_else(|| self.names().read_target_group)
    }

    /// This node's MySQL instance, as the cluster names it.
    pub fn instance(&self) -> String {
        format!("{}:3306", self.private_ip)
    }

    pub fn layout(&self) -> Layout {
        Layout::under(&self.layout.root)
    }
}

/// Every path the bootstrap writes, under one root (`/` in production).
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The data volume's mount point (LUKS on instance store).
    pub mysql_volume: PathBuf,
    pub mysql_datadir: PathBuf,
    pub mysql_tmp: PathBuf,
    pub mysql_run: PathBuf,
    pub mysql_config: PathBuf,
    pub orchestrator_config: PathBuf,
    pub orchestrator_tls: PathBuf,
    pub orchestrator_data: PathBuf,
    /// The bootstrap's own state: progress marker, pid files, logs of processes.
    pub state: PathBuf,
    /// systemd units.
    pub units: PathBuf,
}

impl Layout {
    pub fn under(root: &Path) -> Layout {
        let p = |rel: &str| root.join(rel);
        Layout {
            mysql_volume: p("var/lib/mysql"),
            mysql_datadir: p("var/lib/mysql/data"),
            mysql_tmp: p("var/lib/mysql/tmp"),
            mysql_run: p("run/mysqld"),
            mysql_config: p("etc/mysql/node.cnf"),
            orchestrator_config: p("etc/orchestrator/orchestrator.toml"),
            orchestrator_tls: p("etc/orchestrator/tls"),
            orchestrator_data: p("var/lib/orchestrator"),
            state: p("var/lib/orchestrator-bootstrap"),
            units: p("etc/systemd/system"),
        }
    }

    /// Written once the bootstrap has finished: a rerun does nothing.
    pub fn done_marker(&self) -> PathBuf {
        self.state.join("done")
    }
}

/// The instance metadata service (IMDSv2: a session token first). The endpoint can be
/// moved with `AWS_EC2_METADATA_SERVICE_ENDPOINT`, as for the SDKs.
pub struct Imds {
    endpoint: String,
    token: String,
}

impl Imds {
    async fn request(
        endpoint: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<String, FactsError> {
        use http_body_util::BodyExt;
        let fail =
            |what: &str, e: &dyn std::fmt::Display| FactsError::Metadata(format!("{what} {path}: {e}"));
        let authority = endpoint.trim_start_matches("http://").trim_end_matches('/').to_string();
        let connect = tokio::net::TcpStream::connect(&authority);
        let stream = tokio::time::timeout(std::time::Duration::from_secs(2), connect)
            .await
            .map_err(|_| fail("timed out connecting for", &authority))?
            .map_err(|e| fail("connecting for", &e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| fail("handshake for", &e))?;
        tokio::spawn(conn);
        let mut request =
            hyper::Request::builder().method(method).uri(path).header("host", authority.as_str());
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .map_err(|e| fail("building", &e))?;
        let response = sender.send_request(request).await.map_err(|e| fail("sending", &e))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| fail("reading", &e))?.to_bytes();
        if !status.is_success() {
            return Err(FactsError::Metadata(format!("{method} {path}: HTTP {status}")));
        }
        Ok(String::from_utf8_lossy(&body).trim().to_string())
    }

    pub async fn connect() -> Result<Imds, FactsError> {
        let endpoint = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or_else(|_| "http://169.254.169.254".to_string());
        let token = Self::request(
            &endpoint,
            "PUT",
            "/latest/api/token",
            &[("x-aws-ec2-metadata-token-ttl-seconds", "300")],
        )
        .await?;
        Ok(Imds { endpoint, token })
    }

    pub async fn get(&self, path: &str) -> Result<String, FactsError> {
        Self::request(
            &self.endpoint,
            "GET",
            &format!("/latest/meta-data/{path}"),
            &[("x-aws-ec2-metadata-token", &self.token)],
        )
        .await
    }
}

/// The facts of the instance this runs on, from IMDS (instance id, private address,
/// region, and the instance tags the launch template sets).
pub async fn from_instance_metadata() -> Result<NodeFacts, FactsError> {
    let imds = Imds::connect().await?;
    let instance_id = imds.get("instance-id").await?;
    let ip = imds.get("local-ipv4").await?;
    let private_ip: Ipv4Addr =
        ip.parse().map_err(|_| FactsError::Metadata(format!("local-ipv4 `{ip}` is not an IPv4 address")))?;
    let region = imds.get("placement/region").await?;
    let keys = imds.get("tags/instance").await.map_err(|e| {
        FactsError::Metadata(format!(
            "{e} (instance tags in metadata must be on: the launch template sets it)"
        ))
    })?;
    let mut tags = BTreeMap::new();
    for key in keys.lines().map(str::trim).filter(|k| k.starts_with("orchestrator:")) {
        tags.insert(key.to_string(), imds.get(&format!("tags/instance/{key}")).await?);
    }
    NodeFacts::from_tags(instance_id, private_ip, region, &tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_facts_file_needs_the_identity_and_refuses_unknown_keys() {
        let text = r#"
cluster_id = "c1"
instance_id = "i-1"
private_ip = "10.0.1.5"
flavor = "mysql"
[layout]
root = "/tmp/n1"
service_manager = "process"
"#;
        let f: NodeFacts = toml::from_str(text).unwrap();
        assert_eq!(f.instance(), "10.0.1.5:3306");
        assert_eq!(f.table(), "c1-orchestrator");
        assert_eq!(f.layout().mysql_datadir, PathBuf::from("/tmp/n1/var/lib/mysql/data"));
        assert_eq!(f.layout.service_manager, ServiceManager::Process);
        let bad = format!("{text}\nbogus = 1\n");
        assert!(toml::from_str::<NodeFacts>(&bad).is_err());
    }

    #[test]
    fn tags_give_the_facts_and_a_missing_one_is_named() {
        let mut tags: BTreeMap<String, String> = [
            (node_tags::CLUSTER_ID, "c1"),
            (node_tags::TABLE, "c1-orchestrator"),
            (node_tags::BUCKET, "percona-c1-backups"),
            (node_tags::CREDENTIALS_SECRET, "c1/mysql-credentials"),
            (node_tags::WRITE_TARGET_GROUP, "c1-write"),
            (node_tags::READ_TARGET_GROUP, "c1-read"),
            (node_tags::FLAVOR, "percona"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let f = NodeFacts::from_tags("i-1".into(), "10.0.0.9".parse().unwrap(), "eu-west-1".into(), &tags)
            .unwrap();
        assert_eq!(f.flavor, ServerFlavor::Mysql);
        assert_eq!(f.layout.service_manager, ServiceManager::Systemd);
        tags.remove(node_tags::TABLE);
        let e =
            NodeFacts::from_tags("i-1".into(), "10.0.0.9".parse().unwrap(), "r".into(), &tags).unwrap_err();
        assert!(e.to_string().contains("orchestrator:table"), "{e}");
    }
}
