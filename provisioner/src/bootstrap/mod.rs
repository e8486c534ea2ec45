//! `provisioner bootstrap`: turns a fresh instance into a member of its cluster with no
//! operator (DESIGN.md section 12). Each step looks first and does only what is
//! missing, printing what it did or that it was already done; a marker written at the
//! end makes a rerun after success do nothing.
//!
//! 1. secrets from Secrets Manager (MySQL credentials, the peers' CA, the LUKS
//!    passphrase on instance-store types);
//! 2. storage: LUKS on the instance store, or the EBS root volume as it is;
//! 3. the server's option file;
//! 4. the `bootstrap_lock` (fenced, renewed while this runs, released at the end);
//! 5. first master (no `master_lock`: initialize, claim the `master_lock` in one
//!    transaction with a check of the lock's token, create the cluster's users) or
//!    replica (copy a donor's data: MySQL clone plugin, MariaDB backup stream from the
//!    donor's peer; replicate from the master with GTID auto-positioning);
//! 6. the peer: certificate, configuration, service;
//! 7. membership: the peer starts the Raft group or joins it (the leader adds it);
//! 8. the lock released and the marker written.
//!
//! Pure decisions are in [`decide`]; the edges in [`lock`] (DynamoDB), [`server`]
//! (MySQL), [`storage`] (LUKS), [`services`] (systemd or processes), [`peer`] (the
//! orchestrator peer and the peer port).

pub mod decide;
pub mod facts;
pub mod lock;
pub mod peer;
pub mod server;
pub mod services;
pub mod storage;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::cloud::clients::Clients;
use decide::{decide_role, donors, Role};
use facts::NodeFacts;
use lock::BootstrapTable;
use orchestrator::aws::lease::{lease_access, unix_now, HeldLease, Lease, LeaseAccess};
use server::Server;
use services::Services;

/// How long a new member may take to be added to the Raft group.
const JOIN_PATIENCE: Duration = Duration::from_secs(120);

/// Prints one step's outcome.
struct Progress {
    step: usize,
}

const STEPS: usize = 8;

impl Progress {
    fn step(&mut self, title: &str) {
        self.step += 1;
        println!("[{}/{STEPS}] {title}", self.step);
    }

    fn did(&self, what: impl std::fmt::Display) {
        println!("      {what}");
    }
}

/// The credentials secret's passwords by key.
struct Passwords(BTreeMap<String, String>);

impl Passwords {
    fn get(&self, key: &str) -> anyhow::Result<String> {
        self.0.get(key).cloned().with_context(|| format!("the credentials secret has no `{key}` password"))
    }
}

async fn secret(clients: &Clients, name: &str) -> anyhow::Result<String> {
    let out = clients
        .secrets
        .get_secret_value()
        .secret_id(name)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("GetSecretValue {name}: {}", aws_connect::error_line(&e)))?;
    out.secret_string().map(str::to_string).with_context(|| format!("secret {name} holds no text"))
}

async fn target_group_arns(clients: &Clients, facts: &NodeFacts) -> anyhow::Result<(String, String)> {
    let (write, read) = (facts.write_target_group(), facts.read_target_group());
    let out = clients.elb.describe_target_groups().names(&write).names(&read).send().await.map_err(|e| {
        anyhow::anyhow!("DescribeTargetGroups {write}, {read}: {}", aws_connect::error_line(&e))
    })?;
    let arn = |name: &str| {
        out.target_groups()
            .iter()
            .find(|g| g.target_group_name() == Some(name))
            .and_then(|g| g.target_group_arn())
            .map(str::to_string)
            .with_context(|| format!("target group {name} does not exist (provisioner apply makes it)"))
    };
    Ok((arn(&write)?, arn(&read)?))
}

/// Runs the bootstrap of the node `facts` describes.
pub async fn run(facts: &NodeFacts, clients: &Clients) -> anyhow::Result<()> {
    let layout = facts.layout();
    println!(
        "bootstrap of {} ({}) in cluster {} ({})",
        facts.instance_id,
        facts.private_ip,
        facts.cluster_id,
        match facts.flavor {
            crate::mysql_config::ServerFlavor::Mariadb => "MariaDB",
            crate::mysql_config::ServerFlavor::Mysql => "MySQL",
        }
    );
    if layout.done_marker().is_file() {
        println!(
            "already bootstrapped ({}): nothing to do",
            std::fs::read_to_string(layout.done_marker()).unwrap_or_default().trim()
        );
        return Ok(());
    }
    let started = Instant::now();
    let mut progress = Progress { step: 0 };
    let services = Services {
        manager: facts.layout.service_manager,
        units: layout.units.clone(),
        state: layout.state.clone(),
    };
    std::fs::create_dir_all(&layout.state)?;

    progress.step("secrets");
    let credentials_name = facts.credentials_secret();
    let json = secret(clients, &credentials_name).await?;
    let passwords: BTreeMap<String, String> = serde_json::from_str(&json)
        .map_err(|_| anyhow::anyhow!("secret {credentials_name} is not a JSON object of passwords"))?;
    let passwords = Passwords(passwords);
    let root_password = passwords.get("root")?;
    let names = facts.names();
    let ca: peer::PeerCa = serde_json::from_str(&secret(clients, &names.peer_ca_secret).await?)
        .map_err(|_| anyhow::anyhow!("secret {} is not the peer CA's JSON", names.peer_ca_secret))?;
    progress.did(format!("read {credentials_name} and {}", names.peer_ca_secret));
    if peer::write_certificate(&layout.orchestrator_tls, facts, &ca)? {
        progress.did(format!("certificate for {} signed by the cluster CA", facts.private_ip));
    } else {
        progress.did("already done: the peer's certificate");
    }

    progress.step("storage");
    match &facts.luks_secret {
        Some(luks) => {
            let passphrase = secret(clients, luks).await?;
            let volume = storage::EncryptedVolume {
                cryptsetup: facts.programs.cryptsetup.clone().unwrap_or_else(|| "cryptsetup".into()),
                device: facts.instance_store_device.clone().unwrap_or_else(|| "/dev/nvme1n1".into()),
                name: "mysql-data".into(),
                mount_point: layout.mysql_volume.clone(),
                format_options: Vec::new(),
            };
            let done = volume.ensure(&passphrase)?;
            if done.is_empty() {
                progress.did(format!("already done: {} open and mounted", volume.mapper().display()));
            }
            for line in done {
                progress.did(line);
            }
        }
        None => {
            std::fs::create_dir_all(&layout.mysql_volume)?;
            progress.did(format!("EBS: data directory under {}", layout.mysql_volume.display()));
        }
    }

    progress.step("MySQL configuration");
    let server = Server::new(facts, services.clone());
    if server.write_config()? {
        progress.did(format!("wrote {}", layout.mysql_config.display()));
    } else {
        progress.did(format!("already done: {}", layout.mysql_config.display()));
    }

    progress.step("bootstrap lock");
    let table = BootstrapTable { dynamodb: clients.dynamodb.clone(), table: facts.table() };
    let lease = Duration::from_secs(facts.layout.bootstrap_lock_lease_s);
    let held = acquire(&table, &facts.instance_id, lease, &progress).await?;
    let result = bootstrap_under_lock(
        facts,
        clients,
        &server,
        &passwords,
        &root_password,
        &table,
        &held,
        &mut progress,
    )
    .await;
    let lock = held.stop().await;
    let lock_table = table.lock();
    match result {
        Ok(()) => {
            progress.step("finish");
            lock_table.release(&lock).await?;
            progress.did(format!("released the bootstrap lock (token {})", lock.token));
            std::fs::write(
                layout.done_marker(),
                format!("finished at unix {} in {:.1} s\n", unix_now(), started.elapsed().as_secs_f64()),
            )?;
            println!("bootstrapped in {:.1} s", started.elapsed().as_secs_f64());
            Ok(())
        }
        Err(e) => {
            // The lock is released so another node need not wait out the lease; what
            // this run did stays and a rerun continues from it.
            let _ = lock_table.release(&lock).await;
            Err(e)
        }
    }
}

/// Takes the bootstrap lock, waiting while another node holds it.
async fn acquire(
    table: &BootstrapTable,
    me: &str,
    lease: Duration,
    progress: &Progress,
) -> anyhow::Result<HeldLease> {
    let lock = table.lock();
    let mut waited_for: Option<String> = None;
    loop {
        let found = lock.read().await?;
        let now = unix_now();
        match lease_access(found.as_ref(), me, now) {
            LeaseAccess::Take { token } => {
                let taken = Lease {
                    holder: me.to_string(),
                    token,
                    started_at: now,
                    expires_at: now + lease.as_secs() as i64,
                    detail: String::new(),
                };
                if lock.take(&taken, found.as_ref()).await? {
                    match &found {
                        Some(f) if f.holder == me && f.expires_at > 0 => progress.did(format!(
                            "took the lock (token {token}) again from an earlier run of this node"
                        )),
                        Some(f) if f.expires_at > 0 => progress.did(format!(
                            "took the lock (token {token}) after {}'s expired (it stopped renewing it)",
                            f.holder
                        )),
                        _ => progress.did(format!("took the lock (token {token})")),
                    }
                    return Ok(HeldLease::start(lock, taken, lease));
                }
            }
            LeaseAccess::Held { by, since, until, .. } => {
                if waited_for.as_deref() != Some(by.as_str()) {
                    progress.did(format!(
                        "waiting: {by} has been bootstrapping for {} s (its lock runs to unix {until})",
                        (now - since).max(0)
                    ));
                    waited_for = Some(by);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn bootstrap_under_lock(
    facts: &NodeFacts,
    clients: &Clients,
    server: &Server,
    passwords: &Passwords,
    root_password: &str,
    table: &BootstrapTable,
    held: &HeldLease,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let layout = facts.layout();
    let me = facts.instance();
    progress.step("data");
    let master_record = table.read_master().await?;
    let role = decide_role(master_record.as_ref(), &me);
    let master = match &role {
        Role::FirstMaster | Role::ResumeMaster => {
            if !server.has_data() {
                server.initialize()?;
                progress.did(format!("initialized {}", layout.mysql_datadir.display()));
            }
            if server.start(root_password).await? {
                progress.did("started mysqld");
            }
            if server.secure_root(root_password).await? {
                progress.did("set root's password");
            }
            held.check()?;
            if role == Role::FirstMaster {
                if !table.claim_master(&held.lease, &me).await? {
                    held.check()?;
                    bail!("another node recorded a master while this one held the lock: run the bootstrap again");
                }
                progress.did(format!(
                    "no master recorded: {me} is the cluster's first master (master_lock claimed)"
                ));
            } else {
                progress.did(format!("resuming as the first master ({me} holds the master_lock)"));
            }
            let created = server.setup_first_master(root_password, |k| passwords.get(k)).await?;
            progress.did(format!("writable; {created} accounts created (least privileges per role)"));
            me.clone()
        }
        Role::Replica { master } => {
            if server.replicates_from(master, root_password).await {
                progress.did(format!("already done: replicating from {master}"));
            } else {
                seed_replica(facts, server, passwords, root_password, table, master, held, progress).await?;
            }
            master.clone()
        }
    };

    progress.step("orchestrator peer");
    held.check()?;
    let tls_dir = layout.orchestrator_tls.clone();
    let (write_arn, read_arn) = target_group_arns(clients, facts).await?;
    let members = if master == me {
        Vec::new()
    } else {
        let host = master.rsplit_once(':').map(|(h, _)| h).unwrap_or(&master);
        let ip: std::net::Ipv4Addr =
            host.parse().with_context(|| format!("the master's address {host} is not an IPv4 address"))?;
        vec![(decide::node_id(ip), host.to_string())]
    };
    let site = match &facts.layout.site_config {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read site config {}", path.display()))?,
        ),
        None => None,
    };
    let control = server.services.control_commands(&server.service())?;
    let settings = peer::PeerSettings {
        facts,
        members,
        master: master.clone(),
        write_target_group_arn: write_arn,
        read_target_group_arn: read_arn,
        mysql_config: layout.mysql_config.clone(),
        data_dir: layout.orchestrator_data.clone(),
        tls_dir: tls_dir.clone(),
        mariadb_backup: server.programs.mariadb_backup(),
        mbstream: server.programs.mbstream(),
        server_stop_command: control.0,
        server_start_command: control.1,
    };
    let text = peer::config_text(&settings, site.as_deref())?;
    if std::fs::read_to_string(&layout.orchestrator_config).ok().as_deref() != Some(text.as_str()) {
        peer::write_file(&layout.orchestrator_config, &text, true)?;
        progress.did(format!("wrote {} (mode 0600)", layout.orchestrator_config.display()));
    }
    let program = facts.programs.orchestrator.clone().unwrap_or_else(|| "/usr/local/bin/orchestrator".into());
    if server.services.start(&peer::service(&program, &layout.orchestrator_config))? {
        progress.did("started the orchestrator peer");
    } else {
        progress.did("already done: the orchestrator peer runs");
    }

    progress.step("Raft membership");
    let connector = peer::connector(facts, &tls_dir)?;
    peer::wait_member(&connector, facts, JOIN_PATIENCE).await?;
    if master == me {
        progress.did("the peer started the Raft group");
        wait_master_lock_from_leader(table, &me, held).await?;
        progress.did("the leader wrote the master_lock");
    } else {
        progress.did("the leader added the peer to the Raft group");
    }
    Ok(())
}

/// Copies a donor's data and replicates from `master`.
#[allow(clippy::too_many_arguments)]
async fn seed_replica(
    facts: &NodeFacts,
    server: &Server,
    passwords: &Passwords,
    root_password: &str,
    table: &BootstrapTable,
    master: &str,
    held: &HeldLease,
    progress: &Progress,
) -> anyhow::Result<()> {
    let layout = facts.layout();
    let me = facts.instance();
    // The newest backup in the cluster's bucket first: no donor carries the copy.
    match seed_from_backup(facts, server, progress).await {
        Ok(Some(position)) => {
            server.start(root_password).await?;
            held.check()?;
            match server
                .replicate_from(master, &passwords.get("replication")?, root_password, position.as_deref())
                .await
            {
                Ok(()) => match still_replicating(server, root_password).await {
                    Ok(()) => {
                        progress.did(format!(
                            "replicating from {master} with GTID auto-positioning from the backup"
                        ));
                        return Ok(());
                    }
                    Err(e) => progress.did(format!(
                        "the backup's copy cannot catch up from {master} ({e:#}): copying from a donor instead"
                    )),
                },
                Err(e) => progress.did(format!(
                    "the backup's copy cannot catch up from {master} ({e:#}): copying from a donor instead"
                )),
            }
        }
        Ok(None) => {}
        Err(e) => progress.did(format!("no seed from the bucket ({e:#}): copying from a donor")),
    }
    let topology = table.read_topology().await?;
    let candidates = donors(topology.as_deref(), master, &me);
    let mut errors = Vec::new();
    let mut gtid = None;
    let mut copied = false;
    for donor in &candidates {
        held.check()?;
        let started = Instant::now();
        let attempt = match facts.flavor {
            crate::mysql_config::ServerFlavor::Mysql => {
                if !server.has_data() {
                    server.initialize()?;
                }
                server.start(root_password).await?;
                server.secure_root(root_password).await?;
                server.clone_from(donor, &passwords.get("backup")?, root_password).await.map(|_| None)
            }
            crate::mysql_config::ServerFlavor::Mariadb => {
                server.stop()?;
                server.clear_data()?;
                let connector = peer::connector(facts, &layout.orchestrator_tls)?;
                match peer::receive_backup(
                    &connector,
                    donor,
                    &server.programs.mbstream(),
                    &layout.mysql_datadir,
                )
                .await
                {
                    Ok(bytes) => {
                        progress.did(format!("received {} MiB from {donor}'s peer", bytes >> 20));
                        server.prepare_backup().map(Some)
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match attempt {
            Ok(position) => {
                progress
                    .did(format!("copied the data of {donor} in {:.1} s", started.elapsed().as_secs_f64()));
                gtid = position;
                copied = true;
                break;
            }
            Err(e) => {
                progress.did(format!("donor {donor} failed: {e:#}"));
                errors.push(format!("{donor}: {e:#}"));
            }
        }
    }
    if !copied {
        bail!("no donor could give its data: {}", errors.join("; "));
    }
    server.start(root_password).await?;
    held.check()?;
    server.replicate_from(master, &passwords.get("replication")?, root_password, gtid.as_deref()).await?;
    progress.did(format!(
        "replicating from {master} with GTID auto-positioning{}",
        gtid.filter(|g| !g.is_empty()).map(|g| format!(" (from {g})")).unwrap_or_default()
    ));
    Ok(())
}

/// Seeds the data directory from the newest complete, unencrypted backup of this
/// flavor in the cluster's bucket (downloaded, extracted, prepared); `Ok(Some(position))`
/// with the MariaDB GTID position to replicate from (`None` on MySQL: the copy holds
/// its executed set), `Ok(None)` when the bucket holds no such backup.
async fn seed_from_backup(
    facts: &NodeFacts,
    server: &Server,
    progress: &Progress,
) -> anyhow::Result<Option<Option<String>>> {
    use orchestrator::backup::{catalog, manifest::Layout, materialize, pipeline, store::S3Store};
    let settings = aws_connect::ConnectSettings {
        region: facts.region.clone(),
        endpoint_url: facts.endpoint_url.clone(),
        ..aws_connect::ConnectSettings::new(Duration::from_secs(300))
    };
    let bucket = facts.bucket.clone().unwrap_or_else(|| facts.names().bucket);
    let store =
        std::sync::Arc::new(S3Store::connect(&settings, None, &bucket, Duration::from_secs(300)).await);
    let layout = Layout::new(&facts.cluster_id);
    let (manifests, _) = materialize::read_manifests(&store, &layout).await?;
    let flavor = match facts.flavor {
        crate::mysql_config::ServerFlavor::Mariadb => "mariadb",
        crate::mysql_config::ServerFlavor::Mysql => "mysql",
    };
    let Some(tip) = manifests
        .iter()
        .filter(|m| m.flavor == flavor)
        .filter(|m| catalog::chain(&manifests, &m.id).is_ok_and(|c| c.iter().all(|b| b.encryption.is_none())))
        .max_by_key(|m| (m.consistent_at_ms, m.id.clone()))
    else {
        return Ok(None);
    };
    let chain: Vec<orchestrator::backup::manifest::Manifest> =
        catalog::chain(&manifests, &tip.id).map_err(anyhow::Error::msg)?.into_iter().cloned().collect();
    let started = Instant::now();
    server.stop()?;
    server.clear_data()?;
    let lay = facts.layout();
    let tools = materialize::CopyTools {
        mariadb_backup: server.programs.mariadb_backup(),
        mbstream: server.programs.mbstream(),
        xtrabackup: "xtrabackup".into(),
        xbstream: "xbstream".into(),
        settings: pipeline::PipelineSettings {
            part_size: 16 << 20,
            concurrency: 4,
            compression_level: 1,
            key: None,
        },
    };
    let stage = lay.state.join("seed");
    let _ = std::fs::remove_dir_all(&stage);
    let copied = materialize::materialize(
        store,
        &layout,
        &chain,
        &lay.mysql_datadir,
        &stage,
        &tools,
        materialize::Report {
            phase: &|phase| progress.did(phase),
            stream: &|| std::sync::Arc::new(pipeline::Progress::default()),
        },
    )
    .await;
    let _ = std::fs::remove_dir_all(&stage);
    if let Err(e) = copied {
        server.clear_data()?;
        return Err(e.into());
    }
    // A copy of a replica holds its replication files; a MySQL copy makes its own uuid.
    for name in ["master.info", "relay-log.info", "multi-master.info", "auto.cnf"] {
        let _ = std::fs::remove_file(lay.mysql_datadir.join(name));
    }
    server.chown(&lay.mysql_volume)?;
    let names: Vec<String> = chain.iter().map(|m| format!("{} {}", m.kind, m.id)).collect();
    progress.did(format!(
        "seeded from backup {} ({}) in {:.1} s",
        names.join(" + "),
        orchestrator::backup::service::human_bytes(chain.iter().map(|m| m.raw_bytes).sum()),
        started.elapsed().as_secs_f64()
    ));
    Ok(Some((flavor == "mariadb").then(|| tip.gtid_position_text.clone())))
}

/// Checks, a moment after replication started, that it still runs: a master that
/// purged transactions the backup lacks refuses the replica only once its dump starts.
async fn still_replicating(server: &Server, root_password: &str) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut conn = server.root(root_password).await?;
    let state = server.replica_state(&mut conn).await?;
    let _ = conn.disconnect().await;
    if state.io_running == "No" || state.sql_running == "No" {
        bail!(
            "replication stopped (IO {}, SQL {}): {}",
            state.io_running,
            state.sql_running,
            state.last_error
        );
    }
    Ok(())
}

/// Waits until the peers' leader has rewritten the first master's claim (the group
/// runs and mirrors its decision), so the next node finds a working group.
async fn wait_master_lock_from_leader(
    table: &BootstrapTable,
    me: &str,
    held: &HeldLease,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + JOIN_PATIENCE;
    loop {
        held.check()?;
        if let Some(m) = table.read_master().await? {
            if m.holder == me && m.leader_id != 0 {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!("the peers' leader did not write the master_lock within {} s", JOIN_PATIENCE.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
