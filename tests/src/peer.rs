//! Orchestrator peer processes, one co-located with each simulated database host, and
//! a small client for their HTTP API.
//!
//! Every group runs as production does: API tokens required (the test tokens below,
//! kept hashed in the configs) and mutual TLS on the Raft port, with a CA and node
//! certificates made for the group by `provisioner::certs`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::db::{
    APP_PASSWORD, APP_USER, BACKUP_PASSWORD, ORCH_PASSWORD, ORCH_USER, REPL_PASSWORD, REPL_USER,
    WRITE_CHECK_TABLE,
};
use crate::process::{Lifetime, ManagedChild};

/// The repository root (this crate lives in `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Path of one of our binaries, built once per test process (`cargo build` is a no-op
/// when up to date). Set `ORCH_SKIP_BUILD=1` to use what is there.
///
/// It builds what `deploy/test` builds (`--workspace --all-targets`): any other
/// selection unifies dependency features differently, and cargo would rebuild much
/// of the dependency tree (minutes, cold) and swap the binaries under the suite.
/// A program built with `--release` (the benchmark, for figures from the optimized
/// build production runs) takes the release binaries: `--release --workspace --bins`.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let release = built_with_release();
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let built = BUILT.get_or_init(|| {
        if std::env::var_os("ORCH_SKIP_BUILD").is_some() {
            return Ok(());
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(workspace_root())
            .args(build_args(release))
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("cargo build failed: {}", String::from_utf8_lossy(&out.stderr)))
        }
    });
    if let Err(e) = built {
        bail!("{e}");
    }
    let path = target.join(if release { "release" } else { "debug" }).join(name);
    if !path.is_file() {
        bail!("binary {} not found (run `cargo build`)", path.display());
    }
    Ok(path)
}

/// Whether the running program was built with `--release`: it runs from
/// `target/release/` (a binary) or `target/release/deps/` (a test). Its peers are then
/// the release build too.
pub fn built_with_release() -> bool {
    let exe = std::env::current_exe().ok();
    let mut dir = exe.as_deref().and_then(Path::parent);
    if dir.and_then(Path::file_name).is_some_and(|n| n == "deps") {
        dir = dir.and_then(Path::parent);
    }
    dir.and_then(Path::file_name).is_some_and(|n| n == "release")
}

/// What [`binary`] builds.
fn build_args(release: bool) -> &'static [&'static str] {
    if release {
        &["build", "--quiet", "--release", "--workspace", "--bins"]
    } else {
        &["build", "--quiet", "--workspace", "--all-targets"]
    }
}

/// The test tokens: (name, scope, token). [`http_client`] sends the admin one.
pub const ADMIN_TOKEN: &str = "orch_test_admin_5d0c2f7e9a81b34c6e1f0a2b7d9c3e58";
pub const OPERATE_TOKEN: &str = "orch_test_operate_8b3e61a0c4d27f95e0b1c3a6d8f2e471";
pub const READ_TOKEN: &str = "orch_test_read_2f94c7b1e0a36d58c9e2b4f1a7d0c6e3";

/// The tokens every test group accepts.
pub fn test_tokens() -> Vec<TokenSpec> {
    vec![
        TokenSpec::new("test-admin", "admin", ADMIN_TOKEN),
        TokenSpec::new("test-operator", "operate", OPERATE_TOKEN),
        TokenSpec::new("test-reader", "read", READ_TOKEN),
    ]
}

/// An API token a group accepts.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub name: String,
    pub scope: String,
    pub token: String,
}

impl TokenSpec {
    pub fn new(name: &str, scope: &str, token: &str) -> Self {
        Self { name: name.into(), scope: scope.into(), token: token.into() }
    }
}

/// How the peers talk Raft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaftTls {
    /// Mutual TLS with certificates of a CA made for the group.
    Mutual,
    /// Plain TCP (`tls.raft_insecure`).
    Insecure,
}

/// Settings shared by every peer of a group.
#[derive(Debug, Clone)]
pub struct PeerGroupSpec {
    pub cluster_alias: String,
    pub seeds: Vec<String>,
    pub probe_interval_ms: u64,
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
    /// Extra lines for the `[raft]` section (e.g. `snapshot_every_logs = 20`).
    pub raft_settings: Vec<String>,
    /// Extra lines for the `[recovery]` section (e.g. `hang_window_ms = 1500`).
    pub recovery_settings: Vec<String>,
    /// Lines for `[recovery.hooks]` (e.g. `pre_failover = ["sleep 2"]`).
    pub hooks: Vec<String>,
    /// The cluster's AWS side, when the peers manage it.
    pub aws: Option<PeerAws>,
    /// API tokens (kept hashed in the configs).
    pub tokens: Vec<TokenSpec>,
    /// Extra lines for the `[auth]` section (e.g. `tokens_secret = "..."`).
    pub auth_settings: Vec<String>,
    pub raft_tls: RaftTls,
    /// TLS on port 3000 too, with each node's certificate (needs [`RaftTls::Mutual`]).
    pub api_tls: bool,
    /// Raw TOML appended to every config (e.g. an `[aws]` section, more `[[auth.tokens]]`).
    pub extra_config: Vec<String>,
    /// Peers read their MySQL passwords from this Secrets Manager secret (needs
    /// `aws`) instead of the config.
    pub mysql_credentials_secret: Option<String>,
}

/// What the peers need to manage a cluster's NLB target groups and DynamoDB table.
#[derive(Debug, Clone)]
pub struct PeerAws {
    pub endpoint: String,
    pub cluster_id: String,
    pub write_target_group_arn: String,
    pub read_target_group_arn: String,
    /// Extra lines for the `[aws]` section (e.g. `reconcile_interval_ms = 500`).
    pub settings: Vec<String>,
}

impl PeerAws {
    /// The peers of `resources`' cluster, talking to the moto at `endpoint`.
    pub fn new(endpoint: &str, resources: &crate::aws::ClusterResources) -> PeerAws {
        PeerAws {
            endpoint: endpoint.to_string(),
            cluster_id: resources.cluster_id.clone(),
            write_target_group_arn: resources.write_target_group_arn.clone(),
            read_target_group_arn: resources.read_target_group_arn.clone(),
            settings: Vec::new(),
        }
    }
}

impl PeerGroupSpec {
    pub fn new(alias: &str, seeds: Vec<String>) -> Self {
        Self {
            cluster_alias: alias.to_string(),
            seeds,
            probe_interval_ms: 1000,
            connect_timeout_ms: 500,
            read_timeout_ms: 800,
            raft_settings: Vec::new(),
            recovery_settings: Vec::new(),
            hooks: Vec::new(),
            aws: None,
            tokens: test_tokens(),
            auth_settings: Vec::new(),
            raft_tls: RaftTls::Mutual,
            api_tls: false,
            extra_config: Vec::new(),
            mysql_credentials_secret: None,
        }
    }

    /// Peers with no cluster to discover (Raft-only tests).
    pub fn raft_only() -> Self {
        Self::new("", Vec::new())
    }
}

/// One `orchestrator` peer: its files and, while running, its process.
pub struct Peer {
    pub id: u64,
    pub host: String,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub data_dir: PathBuf,
    binary: PathBuf,
    state_dir: PathBuf,
    lifetime: Lifetime,
    /// The simulated host's cgroup (see `hosts::HostCgroup`).
    pub cgroup: Option<PathBuf>,
    /// Port 3000 speaks TLS (the plain HTTP helpers do not reach it).
    pub api_tls: bool,
    process: Option<ManagedChild>,
}

impl Peer {
    pub fn http_address(&self) -> String {
        format!("{}:3000", self.host)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}:3000{path}", self.host)
    }

    /// Starts the process (again) with the same config and data.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        self.kill();
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--config").arg(&self.config_path);
        cmd.env("ORCH_LOG", std::env::var("ORCH_LOG").unwrap_or_else(|_| "info,openraft=warn".into()));
        // The credential chain finds these first, so no peer ever asks instance metadata.
        cmd.env("AWS_ACCESS_KEY_ID", crate::aws::ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", crate::aws::SECRET_ACCESS_KEY)
            .env("AWS_EC2_METADATA_DISABLED", "true");
        self.process = Some(ManagedChild::spawn(
            &format!("orchestrator {}", self.host),
            cmd,
            &self.log_path,
            &self.state_dir,
            self.lifetime,
            self.cgroup.as_deref(),
        )?);
        Ok(())
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ManagedChild::pid)
    }

    /// Sends a signal (SIGSTOP / SIGCONT) to the running peer.
    pub fn signal(&self, signal: i32) {
        if let Some(p) = &self.process {
            p.signal(signal);
        }
    }

    /// Deletes the peer's data directory (Raft log and snapshots). Kill it first.
    pub fn wipe_data(&self) -> anyhow::Result<()> {
        if self.data_dir.exists() {
            std::fs::remove_dir_all(&self.data_dir)?;
        }
        Ok(())
    }

    pub fn detach(&mut self) -> Option<u32> {
        self.process.take().map(ManagedChild::detach)
    }

    /// The peer's log so far (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until `/api/health` answers.
    pub async fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        let client = http_client();
        let started = Instant::now();
        loop {
            if self.pid().is_some_and(|p| !crate::process::pid_alive(p)) {
                bail!("peer {} exited at start:\n{}", self.host, self.log_tail(20));
            }
            if self.api_tls {
                if tokio::net::TcpStream::connect(self.http_address()).await.is_ok() {
                    return Ok(());
                }
            } else {
                let health = client.get(self.url("/api/health")).send().await;
                if health.is_ok_and(|r| r.status().is_success()) {
                    return Ok(());
                }
            }
            if started.elapsed() > timeout {
                bail!(
                    "peer {} never answered /api/health within {timeout:?}:\n{}",
                    self.host,
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Where a peer's TLS files are: (CA certificate, its certificate, its key).
#[derive(Debug, Clone)]
pub struct PeerTlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes a CA (`cluster` in its name) and one certificate per host in `dir`; returns
/// the files of each host's peer (ids 1..=n).
pub fn make_certs(dir: &Path, cluster: &str, hosts: &[String]) -> anyhow::Result<Vec<PeerTlsFiles>> {
    let nodes: Vec<provisioner::certs::NodeSpec> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| provisioner::certs::NodeSpec { id: i as u64 + 1, names: vec![h.clone()] })
        .collect();
    provisioner::certs::write_files(dir, cluster, &nodes, 30, None)?;
    Ok(nodes
        .iter()
        .map(|n| {
            let (cert, key) = provisioner::certs::node_files(dir, n.id);
            PeerTlsFiles { ca: dir.join("ca.crt"), cert, key }
        })
        .collect())
}

/// Renders the TOML config of peer `id` of a group on `hosts`.
pub fn peer_config(
    id: u64,
    hosts: &[String],
    spec: &PeerGroupSpec,
    data_dir: &Path,
    tls: Option<&PeerTlsFiles>,
) -> String {
    let mut s = format!(
        "node_id = {id}\nhttp_listen = \"{host}:3000\"\nraft_listen = \"{host}:10008\"\ndata_dir = \"{}\"\n\n",
        data_dir.display(),
        host = hosts[id as usize - 1]
    );
    for (i, h) in hosts.iter().enumerate() {
        s += &format!("[[peers]]\nid = {}\nhttp = \"{h}:3000\"\nraft = \"{h}:10008\"\n\n", i + 1);
    }
    s += &match &spec.mysql_credentials_secret {
        None => format!(
            "[mysql]\nuser = \"{ORCH_USER}\"\npassword = \"{ORCH_PASSWORD}\"\n\
             replication_user = \"{REPL_USER}\"\nreplication_password = \"{REPL_PASSWORD}\"\n\
             backup_password = \"{BACKUP_PASSWORD}\"\n\n\
             [mysql.write_check]\nuser = \"{APP_USER}\"\npassword = \"{APP_PASSWORD}\"\ntable = \"{WRITE_CHECK_TABLE}\"\n\n"
        ),
        Some(secret) => format!(
            "[mysql]\nuser = \"{ORCH_USER}\"\ncredentials_secret = \"{secret}\"\nreplication_user = \"{REPL_USER}\"\n\n\
             [mysql.write_check]\nuser = \"{APP_USER}\"\ntable = \"{WRITE_CHECK_TABLE}\"\n\n"
        ),
    };
    s += &format!(
        "[discovery]\nprobe_interval_ms = {}\nconnect_timeout_ms = {}\nread_timeout_ms = {}\n\n",
        spec.probe_interval_ms, spec.connect_timeout_ms, spec.read_timeout_ms
    );
    if !spec.raft_settings.is_empty() {
        s += &format!("[raft]\n{}\n\n", spec.raft_settings.join("\n"));
    }
    s += &format!("[recovery]\n{}\n\n", spec.recovery_settings.join("\n"));
    if !spec.hooks.is_empty() {
        s += &format!("[recovery.hooks]\n{}\n\n", spec.hooks.join("\n"));
    }
    if let Some(aws) = &spec.aws {
        s += &format!(
            "[aws]\nregion = \"{}\"\nendpoint_url = \"{}\"\nread_max_lag_s = {}\n{}\n\n",
            crate::aws::REGION,
            aws.endpoint,
            crate::aws::READ_MAX_LAG_S,
            aws.settings.join("\n")
        );
    }
    s += &format!("[auth]\n{}\n\n", spec.auth_settings.join("\n"));
    for t in &spec.tokens {
        s += &format!(
            "[[auth.tokens]]\nname = \"{}\"\nscope = \"{}\"\nsha256 = \"{}\"\n\n",
            t.name,
            t.scope,
            orchestrator::auth::tokens::hash_hex(&t.token)
        );
    }
    match tls {
        Some(f) => {
            s += &format!(
                "[tls.raft]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n\n",
                f.ca.display(),
                f.cert.display(),
                f.key.display()
            );
            if spec.api_tls {
                s += &format!(
                    "[tls.api]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\n",
                    f.cert.display(),
                    f.key.display()
                );
            }
        }
        None => s += "[tls]\nraft_insecure = true\n\n",
    }
    if !spec.seeds.is_empty() {
        let seeds: Vec<String> = spec.seeds.iter().map(|s| format!("\"{s}\"")).collect();
        s += &format!("[[clusters]]\nalias = \"{}\"\nseeds = [{}]\n", spec.cluster_alias, seeds.join(", "));
        if let Some(aws) = &spec.aws {
            s += &format!(
                "\n[clusters.aws]\ncluster_id = \"{}\"\nwrite_target_group_arn = \"{}\"\nread_target_group_arn = \"{}\"\n",
                aws.cluster_id, aws.write_target_group_arn, aws.read_target_group_arn
            );
        }
    }
    for extra in &spec.extra_config {
        s += &format!("\n{extra}\n");
    }
    s
}

/// Starts one peer per host and waits until each answers `/api/health`.
pub async fn start_peers(
    hosts: &[String],
    spec: &PeerGroupSpec,
    dir: &Path,
    state_dir: &Path,
    lifetime: Lifetime,
    cgroups: &[Option<PathBuf>],
) -> anyhow::Result<Vec<Peer>> {
    let bin = binary("orchestrator")?;
    let tls = match spec.raft_tls {
        RaftTls::Mutual => Some(make_certs(&dir.join("tls"), "test", hosts)?),
        RaftTls::Insecure => None,
    };
    let mut peers = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let id = i as u64 + 1;
        let base = dir.join(format!("peer-{host}"));
        let files = tls.as_ref().map(|t| &t[i]);
        let config = peer_config(id, hosts, spec, &base.join("data"), files);
        let peer = spawn_peer(
            &bin,
            id,
            host,
            &base,
            &config,
            state_dir,
            lifetime,
            cgroups.get(i).cloned().flatten(),
        )?;
        peers.push(peer);
    }
    for p in &peers {
        p.wait_healthy(Duration::from_secs(20)).await?;
    }
    Ok(peers)
}

/// Starts one peer with `config` (written to `base/orchestrator.toml`; data and log in
/// `base`) without waiting for it.
#[allow(clippy::too_many_arguments)]
pub fn spawn_peer(
    bin: &Path,
    id: u64,
    host: &str,
    base: &Path,
    config: &str,
    state_dir: &Path,
    lifetime: Lifetime,
    cgroup: Option<PathBuf>,
) -> anyhow::Result<Peer> {
    std::fs::create_dir_all(base)?;
    let config_path = base.join("orchestrator.toml");
    std::fs::write(&config_path, config)?;
    // It holds MySQL passwords: readable by its owner only, as on a real host.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o600))?;
    let mut peer = Peer {
        id,
        host: host.to_string(),
        config_path,
        log_path: base.join("orchestrator.log"),
        data_dir: base.join("data"),
        binary: bin.to_path_buf(),
        state_dir: state_dir.to_path_buf(),
        lifetime,
        cgroup,
        api_tls: config.contains("[tls.api]"),
        process: None,
    };
    peer.spawn()?;
    Ok(peer)
}

/// An HTTP client that sends the test admin token.
pub fn http_client() -> reqwest::Client {
    client_with_token(Some(ADMIN_TOKEN))
}

/// An HTTP client sending `token` (none when `None`).
pub fn client_with_token(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {t}").parse().expect("header value"));
    }
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .default_headers(headers)
        .build()
        .expect("http client")
}

/// Every secret the test bed gives the peers: none may appear in a peer's log.
pub fn secrets() -> Vec<&'static str> {
    vec![ADMIN_TOKEN, OPERATE_TOKEN, READ_TOKEN, ORCH_PASSWORD, REPL_PASSWORD, APP_PASSWORD, BACKUP_PASSWORD]
}

/// The first line of a peer's log holding one of `secrets` (with the file and line
/// number), if any.
pub fn find_secret_in_logs(peers: &[Peer], secrets: &[&str]) -> Option<String> {
    for p in peers {
        let Ok(text) = std::fs::read_to_string(&p.log_path) else { continue };
        for (n, line) in text.lines().enumerate() {
            if let Some(s) = secrets.iter().find(|s| line.contains(*s)) {
                let shown: String = s.chars().take(4).collect();
                return Some(format!(
                    "{}:{}: a secret ({shown}…) appears: {line}",
                    p.log_path.display(),
                    n + 1
                ));
            }
        }
    }
    None
}

/// GET a JSON document (with the test admin token); non-2xx is an error carrying the body.
pub async fn get_json(url: &str) -> anyhow::Result<serde_json::Value> {
    get_json_with(&http_client(), url).await
}

/// GET a JSON document with `client`; non-2xx is an error carrying the body.
pub async fn get_json_with(client: &reqwest::Client, url: &str) -> anyhow::Result<serde_json::Value> {
    let resp = client.get(url).send().await.with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let body: serde_json::Value =
        resp.json().await.with_context(|| format!("GET {url}: body is not JSON"))?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {body}");
    }
    Ok(body)
}

/// Polls `check` every 50 ms until it is true; errors after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `GET url` every 50 ms until `accept` holds for the JSON answer. Returns it and
/// how long it took; on timeout, the last answer seen (or `null`) as the error.
pub async fn poll_json(
    url: &str,
    timeout: Duration,
    mut accept: impl FnMut(&serde_json::Value) -> bool,
) -> Result<(serde_json::Value, Duration), serde_json::Value> {
    let started = Instant::now();
    let mut last = serde_json::Value::Null;
    loop {
        if let Ok(v) = get_json(url).await {
            if accept(&v) {
                return Ok((v, started.elapsed()));
            }
            last = v;
        }
        if started.elapsed() > timeout {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
