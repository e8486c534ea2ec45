//! The node's orchestrator peer during bootstrap: its certificate (signed with the
//! cluster's CA from Secrets Manager), its configuration (checked by the peer's own
//! validation before it is written), its service, and the peer-port client the
//! bootstrap uses (is the local peer a member yet; a donor's backup stream).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use orchestrator::config::RaftTlsConfig;
use orchestrator::raft::network::PeerConnector;
use tokio::io::AsyncWriteExt;

use super::decide::{merge_toml, node_id};
use super::facts::NodeFacts;
use super::services::Service;
use crate::certs::{CertAuthority, NodeSpec};
use crate::mysql_config::ServerFlavor;

pub const PEER_SERVICE: &str = "orchestrator";
/// Node certificates are valid this long (a node is replaced well before).
const NODE_CERT_DAYS: i64 = 825;

/// The peer CA secret's JSON.
#[derive(serde::Deserialize)]
pub struct PeerCa {
    pub cert: String,
    pub key: String,
}

/// The TLS files of this node's peer.
pub fn tls_files(dir: &Path) -> RaftTlsConfig {
    RaftTlsConfig {
        ca_file: dir.join("ca.crt"),
        cert_file: dir.join("node.crt"),
        key_file: dir.join("node.key"),
    }
}

/// Writes the CA certificate and a node certificate for `facts.private_ip`; returns
/// whether anything was written (a node keeps its certificate across reruns while the
/// CA is the same).
pub fn write_certificate(dir: &Path, facts: &NodeFacts, ca: &PeerCa) -> anyhow::Result<bool> {
    let files = tls_files(dir);
    if std::fs::read_to_string(&files.ca_file).ok().as_deref() == Some(ca.cert.as_str())
        && files.cert_file.is_file()
        && files.key_file.is_file()
    {
        return Ok(false);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let authority = CertAuthority::from_key_pem(&facts.cluster_id, &ca.key)?;
    let pem = authority.node(
        &NodeSpec { id: node_id(facts.private_ip), names: vec![facts.private_ip.to_string()] },
        NODE_CERT_DAYS,
    )?;
    write_file(&files.ca_file, &ca.cert, false)?;
    write_file(&files.cert_file, &pem.cert, false)?;
    write_file(&files.key_file, &pem.key, true)?;
    Ok(true)
}

/// Writes `text` to `path` (replacing it), mode 0600 when `secret`.
pub fn write_file(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// What the peer's configuration is made from.
pub struct PeerSettings<'a> {
    pub facts: &'a NodeFacts,
    /// Raft members to find the group through (empty: this node starts the group).
    pub members: Vec<(u64, String)>,
    /// The cluster's master (its seed for discovery).
    pub master: String,
    pub write_target_group_arn: String,
    pub read_target_group_arn: String,
    pub mysql_config: PathBuf,
    pub data_dir: PathBuf,
    pub tls_dir: PathBuf,
    pub mariadb_backup: PathBuf,
    pub mbstream: PathBuf,
    /// How the peer stops and starts mysqld for a restore (argv each).
    pub server_stop_command: Vec<String>,
    pub server_start_command: Vec<String>,
}

/// A TOML table of `pairs`.
fn table<const N: usize>(pairs: [(&str, toml::Value); N]) -> toml::Value {
    toml::Value::Table(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn text(s: impl Into<String>) -> toml::Value {
    toml::Value::String(s.into())
}

fn path(p: &Path) -> toml::Value {
    text(p.display().to_string())
}

/// The peer's configuration as TOML, with the site's overrides merged in and checked
/// by the peer's own validation.
pub fn config_text(p: &PeerSettings, site: Option<&str>) -> anyhow::Result<String> {
    use toml::Value;
    let f = p.facts;
    let ip = f.private_ip.to_string();
    let id = node_id(f.private_ip);
    let names = f.names();
    let peer = |member: u64, host: &str| {
        table([
            ("id", Value::Integer(member as i64)),
            ("http", text(format!("{host}:3000"))),
            ("raft", text(format!("{host}:10008"))),
        ])
    };
    let mut peers: Vec<Value> = p
        .members
        .iter()
        .filter(|(member, _)| *member != id)
        .map(|(member, host)| peer(*member, host))
        .collect();
    peers.push(peer(id, &ip));
    let tls = tls_files(&p.tls_dir);
    let mut aws = toml::Table::new();
    if let Some(r) = &f.region {
        aws.insert("region".into(), text(r.clone()));
    }
    if let Some(e) = &f.endpoint_url {
        aws.insert("endpoint_url".into(), text(e.clone()));
    }
    let cluster = table([
        ("alias", text(f.cluster_id.clone())),
        ("seeds", Value::Array(vec![text(p.master.clone())])),
        (
            "aws",
            table([
                ("cluster_id", text(f.cluster_id.clone())),
                ("write_target_group_arn", text(p.write_target_group_arn.clone())),
                ("read_target_group_arn", text(p.read_target_group_arn.clone())),
                ("table", text(f.table())),
            ]),
        ),
    ]);
    let Value::Table(mut config) = table([
        ("node_id", Value::Integer(id as i64)),
        ("http_listen", text(format!("{ip}:3000"))),
        ("raft_listen", text(format!("{ip}:10008"))),
        ("data_dir", path(&p.data_dir)),
        ("join", Value::Boolean(!p.members.is_empty())),
        ("peers", Value::Array(peers)),
        (
            "mysql",
            table([
                ("user", text(super::server::account_user("orchestrator"))),
                ("credentials_secret", text(f.credentials_secret())),
                ("replication_user", text(super::server::account_user("replication"))),
                (
                    "write_check",
                    table([
                        ("user", text(super::server::account_user("write_check"))),
                        ("table", text(super::server::WRITE_CHECK_TABLE)),
                    ]),
                ),
            ]),
        ),
        ("recovery", table([("local_instance", text(f.instance()))])),
        ("auth", table([("tokens_secret", text(names.api_tokens_secret.clone()))])),
        (
            "membership",
            table([
                ("leave_on_stop", Value::Boolean(true)),
                ("auto_scaling_group", text(f.auto_scaling_group())),
            ]),
        ),
        (
            "tls",
            table([(
                "raft",
                table([
                    ("ca_file", path(&tls.ca_file)),
                    ("cert_file", path(&tls.cert_file)),
                    ("key_file", path(&tls.key_file)),
                ]),
            )]),
        ),
        ("aws", Value::Table(aws)),
        ("clusters", Value::Array(vec![cluster])),
    ]) else {
        unreachable!("table() makes a table")
    };
    if f.flavor == ServerFlavor::Mariadb {
        config.insert(
            "donor".into(),
            table([
                ("backup_user", text(super::server::account_user("backup"))),
                ("mariadb_backup", path(&p.mariadb_backup)),
                ("server_options", path(&p.mysql_config)),
            ]),
        );
    }
    // Backups of this cluster to its bucket, its binary logs archived while this node's
    // server is the master, and restores onto this node's server.
    let mut backup = toml::Table::new();
    backup.insert("enabled".into(), Value::Boolean(true));
    if let Some(bucket) = &f.bucket {
        backup.insert("bucket".into(), text(bucket.clone()));
    }
    if let Some(days) = f.backup_retention_days {
        backup.insert("retention_days".into(), Value::Integer(days as i64));
    }
    if let Some(root) = &f.programs.mysql_root {
        backup.insert("mysql_root".into(), path(root));
    }
    backup.insert("mariadb_backup".into(), path(&p.mariadb_backup));
    backup.insert("mbstream".into(), path(&p.mbstream));
    let argv = |a: &[String]| Value::Array(a.iter().cloned().map(Value::String).collect());
    backup.insert("server_stop_command".into(), argv(&p.server_stop_command));
    backup.insert("server_start_command".into(), argv(&p.server_start_command));
    config.insert("backup".into(), Value::Table(backup));
    if let Some(site) = site {
        let overlay: toml::Table = toml::from_str(site).context("the site config is not TOML")?;
        merge_toml(&mut config, overlay);
    }
    let text = format!("# Written by `provisioner bootstrap`.\n{}", toml::to_string(&config)?);
    let parsed = orchestrator::config::Config::parse(&text, Path::new("orchestrator.toml"))?;
    parsed.validate("the generated peer config")?;
    Ok(text)
}

pub fn service(program: &Path, config: &Path) -> Service {
    Service {
        name: PEER_SERVICE.into(),
        description: "orchestrator peer (MySQL high availability)".into(),
        program: program.to_path_buf(),
        args: vec!["--config".into(), config.display().to_string()],
        stop_timeout_s: 120,
    }
}

/// Connections to peers on port 10008 with this node's certificate.
pub fn connector(facts: &NodeFacts, tls_dir: &Path) -> anyhow::Result<PeerConnector> {
    let tls = orchestrator::auth::tls::raft_tls(&tls_files(tls_dir))?;
    Ok(PeerConnector { source: Some(facts.private_ip.into()), tls: Some(tls.client) })
}

/// Waits until the local peer holds Raft state (it started the group, or the leader
/// added it and replicated to it).
pub async fn wait_member(
    connector: &PeerConnector,
    facts: &NodeFacts,
    patience: Duration,
) -> anyhow::Result<()> {
    let address = format!("{}:10008", facts.private_ip);
    let deadline = Instant::now() + patience;
    let mut last = String::from("no answer");
    loop {
        if let Some(mut client) = connector.channel(&address, Duration::from_millis(500)) {
            let mut request = tonic::Request::new(orch_proto::raft::PingRequest { from: 0 });
            request.set_timeout(Duration::from_millis(500));
            match client.ping(request).await {
                Ok(r) if r.get_ref().initialized => return Ok(()),
                Ok(_) => last = "running, not yet a member".into(),
                Err(s) => last = s.message().to_string(),
            }
        }
        if Instant::now() >= deadline {
            bail!("the peer at {address} is not a Raft member after {} s ({last})", patience.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Streams a backup from `donor`'s peer (`host:3306` names the donor's server; its
/// peer listens on the same host) into `mbstream -x` in `datadir`, as it arrives.
/// Returns the bytes received.
pub async fn receive_backup(
    connector: &PeerConnector,
    donor: &str,
    mbstream: &Path,
    datadir: &Path,
) -> anyhow::Result<u64> {
    let host = donor.rsplit_once(':').map(|(h, _)| h).unwrap_or(donor);
    let address = format!("{host}:10008");
    let mut client = connector
        .channel(&address, Duration::from_secs(2))
        .with_context(|| format!("bad peer address {address}"))?;
    let mut stream = client
        .donate_backup(orch_proto::raft::DonateBackupRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("peer {address}: {}", s.message()))?
        .into_inner();
    let mut child = tokio::process::Command::new(mbstream)
        .arg("-x")
        .arg("-C")
        .arg(datadir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", mbstream.display()))?;
    let mut stdin = child.stdin.take().context("mbstream has no stdin")?;
    let mut received: u64 = 0;
    let mut last_report = Instant::now();
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                received += chunk.data.len() as u64;
                stdin.write_all(&chunk.data).await.context("writing to mbstream")?;
                if last_report.elapsed() > Duration::from_secs(5) {
                    println!("      {} MiB received from {address}", received >> 20);
                    last_report = Instant::now();
                }
            }
            Ok(None) => break,
            Err(s) => bail!("the backup stream from {address} broke after {received} bytes: {}", s.message()),
        }
    }
    drop(stdin);
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!("mbstream -x failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(received)
}
