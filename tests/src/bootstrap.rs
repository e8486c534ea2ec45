//! Hosts that start with nothing but their facts: the cluster's AWS side in moto
//! (through the provisioner, stand-in instances at the hosts' addresses), and per host
//! a facts file and a root directory for `provisioner bootstrap` to fill (`--facts`,
//! its processes started by its process manager). The bed kills what the bootstraps
//! started when it is dropped (their pid files), and records those pids so the next
//! holder of the address block kills leftovers of a crashed run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use mysql_async::prelude::Queryable;

use crate::aws::{self, ClusterResources, Moto};
use crate::db::{Flavor, MysqlRoot};
use crate::hosts::HostBlock;
use crate::process::Lifetime;

/// The peers' settings on bootstrapped hosts: the test bed's fast timings.
pub const SITE_CONFIG: &str = r#"
[discovery]
probe_interval_ms = 500
connect_timeout_ms = 300
read_timeout_ms = 400

[aws]
reconcile_interval_ms = 500
topology_refresh_s = 2
read_max_lag_s = 30
call_timeout_ms = 2000

[auth]
open_metrics = true

[membership]
interval_ms = 300
remove_after_s = 2
replace_after_s = 6
leave_timeout_s = 60

# Backups only when asked (`orchctl backup create`), the archive flushed every 2 s.
[backup]
full_every_s = 0
incremental_every_s = 0
binlog_flush_s = 2
"#;

/// `membership.replace_after_s` in [`SITE_CONFIG`].
pub const REPLACE_AFTER_S: u64 = 6;

/// The bootstrap lock's lease in tests: a killed holder's lock frees this fast.
pub const LOCK_LEASE_S: u64 = 4;

/// `n` bare hosts (plus moto on host `n + 1`) of one cluster.
pub struct BootstrapBed {
    pub flavor: Flavor,
    /// The AWS emulator's endpoint (moto, owned here in tests).
    pub endpoint: String,
    pub resources: ClusterResources,
    pub clients: orchestrator::aws::AwsClients,
    pub hosts: Vec<String>,
    dir: PathBuf,
    /// Where pids are recorded for the next holder of the addresses to kill.
    state_dir: PathBuf,
    /// Tests own these: dropped with the bed (moto stopped, the directory removed, the
    /// hosts' processes killed). The sandbox's outlive it.
    owned: Option<(Moto, tempfile::TempDir, HostBlock)>,
}

impl BootstrapBed {
    /// Provisions a cluster of `count` instances (3, 5 or 7) for `n` hosts.
    pub async fn start(flavor: Flavor, n: u8) -> anyhow::Result<BootstrapBed> {
        let block = HostBlock::reserve(n + 1)?;
        let dir = crate::test_dir("orch-bootstrap-")?;
        let aws_host = block.host(n + 1);
        let moto = Moto::start(&aws_host, dir.path(), block.state_dir(), Lifetime::Test, None).await?;
        let hosts: Vec<String> = (1..=n).map(|i| block.host(i)).collect();
        let cluster_id = format!("boot-{}", aws_host.replace('.', "-"));
        let resources = aws::provision(&moto.endpoint, &cluster_id, &hosts).await?;
        let clients = aws::clients(&moto.endpoint).await;
        std::fs::write(dir.path().join("site.toml"), SITE_CONFIG)?;
        Ok(BootstrapBed {
            flavor,
            endpoint: moto.endpoint.clone(),
            resources,
            clients,
            hosts,
            dir: dir.path().to_path_buf(),
            state_dir: block.state_dir().to_path_buf(),
            owned: Some((moto, dir, block)),
        })
    }

    /// Hosts whose processes outlive this value (the sandbox): kept in `dir`, with a
    /// running AWS emulator at `endpoint` and the site config `site`.
    pub async fn detached(
        flavor: Flavor,
        dir: &Path,
        state_dir: &Path,
        endpoint: &str,
        resources: ClusterResources,
        hosts: Vec<String>,
        site: &str,
    ) -> anyhow::Result<BootstrapBed> {
        std::fs::write(dir.join("site.toml"), site)?;
        Ok(BootstrapBed {
            flavor,
            endpoint: endpoint.to_string(),
            resources,
            clients: aws::clients(endpoint).await,
            hosts,
            dir: dir.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            owned: None,
        })
    }

    /// Host `i`'s root directory (1-based).
    pub fn host_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("host{i}"))
    }

    pub fn layout(&self, i: usize) -> provisioner::bootstrap::facts::Layout {
        provisioner::bootstrap::facts::Layout::under(&self.host_dir(i))
    }

    /// Writes host `i`'s facts file and returns its path.
    pub fn facts_file(&self, i: usize) -> anyhow::Result<PathBuf> {
        let host = &self.hosts[i - 1];
        let mut programs = format!("orchestrator = \"{}\"\n", crate::peer::binary("orchestrator")?.display());
        if self.flavor == Flavor::Mysql {
            programs += &format!("mysql_root = \"{}\"\n", MysqlRoot::find()?.dir.display());
        }
        let text = format!(
            "cluster_id = \"{id}\"\ninstance_id = \"{instance}\"\nprivate_ip = \"{host}\"\nflavor = \"{flavor}\"\n\
             region = \"{region}\"\nendpoint_url = \"{endpoint}\"\n\n\
             [layout]\nroot = \"{root}\"\nservice_manager = \"process\"\nos_user = \"root\"\n\
             bootstrap_lock_lease_s = {LOCK_LEASE_S}\nsite_config = \"{site}\"\ninnodb_buffer_pool_mb = 32\n\n\
             [programs]\n{programs}",
            id = self.resources.cluster_id,
            instance = self.resources.id_of(host),
            flavor = self.flavor.name(),
            region = aws::REGION,
            endpoint = self.endpoint,
            root = self.host_dir(i).display(),
            site = self.dir.as_path().join("site.toml").display(),
        );
        let path = self.dir.as_path().join(format!("facts-{i}.toml"));
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// `provisioner bootstrap --facts` for host `i`, with the test credentials.
    pub fn command(&self, i: usize) -> anyhow::Result<Command> {
        let mut cmd = Command::new(crate::peer::binary("provisioner")?);
        cmd.arg("bootstrap")
            .arg("--facts")
            .arg(self.facts_file(i)?)
            .env("AWS_ACCESS_KEY_ID", aws::ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", aws::SECRET_ACCESS_KEY)
            .env("ORCH_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Ok(cmd)
    }

    /// Runs host `i`'s bootstrap to its end; its output is kept beside the hosts.
    pub async fn bootstrap(&self, i: usize) -> anyhow::Result<Output> {
        let mut cmd = tokio::process::Command::from(self.command(i)?);
        cmd.kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
            .await
            .context("the bootstrap took over 300 s")??;
        self.record(i);
        let log = self.dir.as_path().join(format!("bootstrap-{i}.log"));
        let mut text = std::fs::read(&log).unwrap_or_default();
        text.extend_from_slice(&out.stdout);
        text.extend_from_slice(&out.stderr);
        std::fs::write(&log, text)?;
        Ok(out)
    }

    /// Like [`BootstrapBed::bootstrap`], failing with its output when it fails.
    pub async fn bootstrap_ok(&self, i: usize) -> anyhow::Result<String> {
        let out = self.bootstrap(i).await?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "bootstrap of host {i} failed:\n{stdout}\n{}\n(peer log: {})",
                String::from_utf8_lossy(&out.stderr),
                self.peer_log_tail(i)
            );
        }
        Ok(stdout)
    }

    fn peer_log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.layout(i).state.join("orchestrator.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Records the pids host `i`'s bootstrap started with the address block.
    fn record(&self, i: usize) {
        for file in provisioner::bootstrap::services::pid_files(&self.layout(i).state) {
            if let Ok(pid) = std::fs::read_to_string(&file).unwrap_or_default().trim().parse::<u32>() {
                crate::process::record(&self.state_dir, pid);
            }
        }
    }

    /// Kills (SIGKILL) what host `i`'s bootstrap started.
    pub fn kill_host(&self, i: usize) {
        for file in provisioner::bootstrap::services::pid_files(&self.layout(i).state) {
            if let Ok(pid) = std::fs::read_to_string(&file).unwrap_or_default().trim().parse::<i32>() {
                // SAFETY: plain kill(2) of a process this bed's bootstrap started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = std::fs::remove_file(file);
        }
    }

    /// Host `i`'s services as its bootstrap started them.
    pub fn services(&self, i: usize) -> provisioner::bootstrap::services::Services {
        let layout = self.layout(i);
        provisioner::bootstrap::services::Services {
            manager: provisioner::bootstrap::facts::ServiceManager::Process,
            units: layout.units,
            state: layout.state,
        }
    }

    /// Kills (SIGKILL) one service of host `i` for good.
    pub fn kill_service(&self, i: usize, name: &str) {
        let file = self.layout(i).state.join(format!("{name}.pid"));
        if let Ok(pid) = std::fs::read_to_string(&file).unwrap_or_default().trim().parse::<i32>() {
            // SAFETY: plain kill(2) of a process this bed's bootstrap started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// Host `i`'s instance as the Auto Scaling group describes it: (lifecycle state,
    /// health, protected from scale-in).
    pub async fn group_instance(&self, i: usize) -> anyhow::Result<(String, String, bool)> {
        let id = self.resources.id_of(&self.hosts[i - 1]).to_string();
        let out = self
            .clients
            .autoscaling
            .describe_auto_scaling_instances()
            .instance_ids(&id)
            .send()
            .await
            .context("DescribeAutoScalingInstances")?;
        let d = out.auto_scaling_instances().first().with_context(|| format!("{id} is in no group"))?;
        Ok((
            d.lifecycle_state().unwrap_or_default().to_string(),
            d.health_status().unwrap_or_default().to_string(),
            d.protected_from_scale_in().unwrap_or(false),
        ))
    }

    /// The cluster's root password (from its credentials secret).
    pub async fn password(&self, key: &str) -> anyhow::Result<String> {
        let json = self.clients.secret_string(&self.resources.credentials_secret).await?;
        let v: serde_json::Value = serde_json::from_str(&json)?;
        v[key].as_str().map(str::to_string).with_context(|| format!("no {key} password"))
    }

    /// The operators' admin token the provisioner made.
    pub async fn admin_token(&self) -> anyhow::Result<String> {
        let names = provisioner::spec::ResourceNames::of(&self.resources.cluster_id);
        let json = self.clients.secret_string(&names.api_tokens_secret).await?;
        let v: serde_json::Value = serde_json::from_str(&json)?;
        v[0]["token"].as_str().map(str::to_string).context("no admin token in the secret")
    }

    /// A root session on host `i`'s server (over its socket).
    pub async fn root(&self, i: usize) -> anyhow::Result<mysql_async::Conn> {
        let socket = self.layout(i).mysql_run.join("mysqld.sock");
        let opts = mysql_async::OptsBuilder::default()
            .socket(Some(socket.display().to_string()))
            .prefer_socket(true)
            .user(Some("root"))
            .pass(Some(self.password("root").await?));
        Ok(mysql_async::Conn::new(opts).await?)
    }

    /// One value of a query on host `i`, as text.
    pub async fn query(&self, i: usize, sql: &str) -> anyhow::Result<Option<String>> {
        let mut conn = self.root(i).await?;
        let v: Option<Option<String>> = conn.query_first(sql).await?;
        let _ = conn.disconnect().await;
        Ok(v.flatten())
    }

    /// The `master_lock` holder in the cluster's table.
    pub async fn master_holder(&self) -> anyhow::Result<Option<String>> {
        use orchestrator::aws::mirror::LockTable;
        Ok(self.clients.get_master_lock(&self.resources.table).await?.map(|m| m.holder))
    }

    /// GET an API path on host `i`'s peer with the provisioner-made admin token.
    pub async fn api(&self, i: usize, path: &str) -> anyhow::Result<serde_json::Value> {
        let token = self.admin_token().await?;
        let url = format!("http://{}:3000{path}", self.hosts[i - 1]);
        let resp = reqwest::Client::new().get(&url).bearer_auth(token).send().await?;
        let status = resp.status();
        let body = resp.text().await?;
        if !status.is_success() {
            bail!("GET {url}: {status}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// POST to an API path on host `i`'s peer with the provisioner-made admin token.
    pub async fn api_post(&self, i: usize, path: &str) -> anyhow::Result<serde_json::Value> {
        let token = self.admin_token().await?;
        let url = format!("http://{}:3000{path}", self.hosts[i - 1]);
        let resp = reqwest::Client::new().post(&url).bearer_auth(token).send().await?;
        let status = resp.status();
        let body = resp.text().await?;
        if !status.is_success() {
            bail!("POST {url}: {status}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// Takes a full backup through host `i`'s peer and waits until it ends; returns its job.
    pub async fn full_backup(&self, i: usize) -> anyhow::Result<serde_json::Value> {
        let cluster = &self.resources.cluster_id;
        let job = self.api_post(i, &format!("/api/backups/{cluster}?kind=full")).await?;
        let id = job["id"].as_str().context("a job id")?.to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let job = self.api(i, &format!("/api/backup-jobs/{id}")).await?;
            if job["ended_unix_ms"].as_i64().unwrap_or(0) > 0 {
                if job["status"] != "succeeded" {
                    bail!("the backup failed: {job}");
                }
                return Ok(job);
            }
            if std::time::Instant::now() > deadline {
                bail!("the backup did not end in 120 s: {job}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The Raft members host `i`'s peer reports: (voters, learners) as host addresses.
    pub async fn raft_members(&self, i: usize) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let state = self.api(i, "/api/raft-state").await?;
        let mut voters = Vec::new();
        let mut learners = Vec::new();
        for m in state["members"].as_array().cloned().unwrap_or_default() {
            let host = m["raft"]
                .as_str()
                .unwrap_or("")
                .rsplit_once(':')
                .map(|(h, _)| h.to_string())
                .unwrap_or_default();
            if m["voter"].as_bool() == Some(true) {
                voters.push(host);
            } else {
                learners.push(host);
            }
        }
        voters.sort();
        learners.sort();
        Ok((voters, learners))
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for BootstrapBed {
    fn drop(&mut self) {
        if self.owned.is_none() {
            return;
        }
        for i in 1..=self.hosts.len() {
            self.kill_host(i);
        }
    }
}
