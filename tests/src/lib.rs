//! The test bed: real database servers (MariaDB or MySQL 9.7) and our own binaries,
//! each simulated host on its own loopback address (127.X.Y.n) with the production
//! ports, torn down when the test ends however it ends.
//!
//! - [`hosts`] reserves address blocks across processes;
//! - [`process`] owns child processes and their cleanup;
//! - [`db`] runs servers of either [`db::Flavor`] and builds GTID replication
//!   topologies; [`on_both_flavors!`] turns one test into one per flavor;
//! - [`peer`] runs orchestrator peers and talks to their API; [`ctl`] runs `orchctl`;
//! - [`raft`] reads and writes the peers' Raft group through that API;
//! - [`netfault`] cuts the network between hosts (`nft`);
//! - [`aws`] runs `moto_server` and creates a cluster's AWS side in it;
//! - [`backup`]: peers with backups on, restore hosts outside the cluster, a writer
//!   that records when each write was acknowledged;
//! - [`nlb`] is the NLB stand-in clients connect through;
//! - [`TestBed`] puts databases and peers together for one test, [`AwsBed`] adds
//!   moto, the AWS resources and the NLB stand-in. When a bed is dropped at the end
//!   of a passing test, its peers' logs are searched for every token and MySQL
//!   password the bed handed out: one found fails the test.

pub mod aws;
pub mod backup;
pub mod bootstrap;
pub mod browser;
pub mod ctl;
pub mod db;
pub mod hosts;
pub mod netfault;
pub mod nlb;
pub mod peer;
pub mod process;
pub mod raft;
pub mod writer;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use db::{DbCluster, Flavor};
use hosts::HostBlock;
use peer::{Peer, PeerGroupSpec};
use process::Lifetime;

/// Makes each listed `async fn name(flavor: Flavor)` of the calling test file a test
/// per flavor: `mariadb::name` and `mysql::name`.
#[macro_export]
macro_rules! on_both_flavors {
    ($($name:ident),+ $(,)?) => {
        mod mariadb {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::db::Flavor::Mariadb).await
                }
            )+
        }
        mod mysql {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::db::Flavor::Mysql).await
                }
            )+
        }
    };
}

/// A database host + peer per address, for one test.
pub struct TestBed {
    pub peers: Vec<Peer>,
    pub cluster: DbCluster,
    pub hosts: HostBlock,
    pub dir: tempfile::TempDir,
}

impl TestBed {
    /// `n` hosts, each with a MariaDB server (host 1 the master) and an orchestrator
    /// peer discovering cluster `alias` from the master.
    pub async fn start(n: u8, alias: &str) -> anyhow::Result<TestBed> {
        Self::start_with(Flavor::Mariadb, n, alias, |_| {}).await
    }

    /// As [`TestBed::start`], on `flavor`, with the peer settings adjusted by `tune`.
    pub async fn start_with(
        flavor: Flavor,
        n: u8,
        alias: &str,
        tune: impl FnOnce(&mut PeerGroupSpec),
    ) -> anyhow::Result<TestBed> {
        Self::start_on(flavor, HostBlock::reserve(n)?, test_dir("orch-test-")?, n, alias, tune).await
    }

    /// As [`TestBed::start_with`], on the first `n` hosts of `hosts`.
    pub async fn start_on(
        flavor: Flavor,
        hosts: HostBlock,
        dir: tempfile::TempDir,
        n: u8,
        alias: &str,
        tune: impl FnOnce(&mut PeerGroupSpec),
    ) -> anyhow::Result<TestBed> {
        let addrs: Vec<String> = (1..=n).map(|i| hosts.host(i)).collect();
        let cgroups: Vec<_> = hosts.cgroup_dirs().into_iter().take(n as usize).collect();
        let cluster =
            DbCluster::start(flavor, &addrs, dir.path(), hosts.state_dir(), Lifetime::Test, &cgroups).await?;
        let mut spec = PeerGroupSpec::new(alias, vec![cluster.master().key()]);
        tune(&mut spec);
        let peers =
            peer::start_peers(&addrs, &spec, dir.path(), hosts.state_dir(), Lifetime::Test, &cgroups).await?;
        Ok(TestBed { peers, cluster, hosts, dir })
    }

    /// The first running peer.
    pub fn live_peer(&self) -> &Peer {
        self.peers.iter().find(|p| p.is_running()).expect("a running peer")
    }

    /// Waits until Raft has registered cluster `alias` with host 1 as master.
    pub async fn wait_registered(&self, alias: &str) -> anyhow::Result<()> {
        let url = self.live_peer().url("/api/raft/state-machine");
        let master = self.cluster.master().key();
        peer::poll_json(&url, Duration::from_secs(20), |s| {
            s["state"]["clusters"][alias]["master"] == master.as_str()
        })
        .await
        .map(|_| ())
        .map_err(|last| anyhow::anyhow!("cluster {alias} never registered: {last}"))
    }

    /// Waits until Raft records a master of `alias` other than `old`; returns it and
    /// how long that took (or the peers' last log lines).
    pub async fn wait_new_master(
        &self,
        alias: &str,
        old: &str,
        timeout: Duration,
    ) -> anyhow::Result<(String, Duration)> {
        let started = Instant::now();
        loop {
            for p in self.peers.iter().filter(|p| p.is_running()) {
                if let Ok(s) = peer::get_json(&p.url("/api/raft/state-machine")).await {
                    if let Some(m) = s["state"]["clusters"][alias]["master"].as_str() {
                        if m != old {
                            return Ok((m.to_string(), started.elapsed()));
                        }
                    }
                }
            }
            if started.elapsed() > timeout {
                let logs: Vec<String> =
                    self.peers.iter().map(|p| format!("--- {}\n{}", p.host, p.log_tail(25))).collect();
                anyhow::bail!("no new master within {timeout:?}\n{}", logs.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every peer's role health checks answer for `master`: 200 on
    /// `/health/primary` only on its host, 200 on `/health/replica` on the other hosts
    /// except `down` (indexes of hosts whose mysqld is down: 503 on both).
    pub async fn wait_health_roles(
        &self,
        master: &str,
        down: &[usize],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let client = peer::http_client();
        let deadline = Instant::now() + timeout;
        for (i, p) in self.peers.iter().enumerate() {
            let want = match (down.contains(&i), self.cluster.servers[i].key() == master) {
                (true, _) => (503, 503),
                (false, true) => (200, 503),
                (false, false) => (503, 200),
            };
            loop {
                let status = |path: &'static str| {
                    let req = client.get(p.url(path));
                    async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
                };
                let got = (status("/health/primary").await, status("/health/replica?max_lag=30").await);
                if got == want {
                    break;
                }
                if Instant::now() > deadline {
                    anyhow::bail!(
                        "host {}: /health/primary {}, /health/replica {}; want {want:?}",
                        p.host,
                        got.0,
                        got.1
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Where the test's files live (kept with `ORCH_KEEP_TEST_DIR=1`).
    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

/// A temporary directory for one test's files, deleted afterwards unless
/// `ORCH_KEEP_TEST_DIR` is set (then its path is printed).
pub fn test_dir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    let keep = std::env::var_os("ORCH_KEEP_TEST_DIR").is_some();
    let dir = tempfile::Builder::new().prefix(prefix).disable_cleanup(keep).tempdir()?;
    if keep {
        eprintln!("test files kept in {}", dir.path().display());
    }
    Ok(dir)
}

/// A [`TestBed`] whose peers manage the cluster's AWS side in a real `moto_server`,
/// with clients reaching the databases through the [`nlb::NlbStandIn`]. Host `n + 1`
/// runs moto (port 5000) and the stand-in (ports 3306 and 3307).
pub struct AwsBed {
    /// Dropped first: the stand-in stops before the servers behind it.
    pub nlb: nlb::NlbStandIn,
    pub bed: TestBed,
    pub moto: aws::Moto,
    pub clients: orchestrator::aws::AwsClients,
    pub resources: aws::ClusterResources,
}

/// Health checks of the stand-in run this many times faster than the target groups
/// say (the provisioner's 10 s interval: 200 ms, its 5 s timeout: 100 ms).
pub const NLB_TIME_SCALE: u32 = 50;

impl AwsBed {
    /// `n` database hosts of `flavor` with peers, plus moto and the NLB stand-in on
    /// host `n + 1`.
    pub async fn start(
        flavor: Flavor,
        n: u8,
        alias: &str,
        tune: impl FnOnce(&mut PeerGroupSpec),
    ) -> anyhow::Result<AwsBed> {
        Self::start_with_spare(flavor, n, 0, alias, tune).await
    }

    /// As [`AwsBed::start`], with `spare` more hosts reserved after moto's
    /// ([`AwsBed::spare_host`]).
    pub async fn start_with_spare(
        flavor: Flavor,
        n: u8,
        spare: u8,
        alias: &str,
        tune: impl FnOnce(&mut PeerGroupSpec),
    ) -> anyhow::Result<AwsBed> {
        let started = Instant::now();
        let hosts = HostBlock::reserve(n + 1 + spare)?;
        let dir = test_dir("orch-aws-")?;
        let aws_host = hosts.host(n + 1);
        let moto =
            aws::Moto::start(&aws_host, dir.path(), hosts.state_dir(), process::Lifetime::Test, None).await?;
        let clients = aws::clients(&moto.endpoint).await;
        let db_hosts: Vec<String> = (1..=n).map(|i| hosts.host(i)).collect();
        let cluster_id = format!("orch-{}", aws_host.replace('.', "-"));
        let resources = aws::provision(&moto.endpoint, &cluster_id, &db_hosts).await?;
        eprintln!("aws bed: moto up and AWS side created after {:?}", started.elapsed());
        let peer_aws = peer::PeerAws::new(&moto.endpoint, &resources);
        let bed = TestBed::start_on(flavor, hosts, dir, n, alias, |spec| {
            spec.aws = Some(peer_aws);
            tune(spec);
        })
        .await?;
        eprintln!("aws bed: databases and peers up after {:?}", started.elapsed());
        let nlb = nlb::NlbStandIn::start(clients.clone(), &resources, &aws_host, NLB_TIME_SCALE).await?;
        Ok(AwsBed { nlb, bed, moto, clients, resources })
    }

    /// The NLB's address (clients connect to port 3306 for writes, 3307 for reads).
    pub fn nlb_host(&self) -> &str {
        &self.nlb.host
    }

    /// Spare host `i` (1-based) of [`AwsBed::start_with_spare`].
    pub fn spare_host(&self, i: u8) -> String {
        self.bed.hosts.host(self.bed.cluster.servers.len() as u8 + 1 + i)
    }
}

/// Orchestrator peers alone (no databases): for Raft tests and benchmarks.
pub struct PeerBed {
    pub peers: Vec<Peer>,
    pub hosts: HostBlock,
    pub dir: tempfile::TempDir,
}

impl PeerBed {
    /// `n` peers on their own hosts, with the spec adjusted by `tune`.
    pub async fn start(n: u8, tune: impl FnOnce(&mut PeerGroupSpec)) -> anyhow::Result<PeerBed> {
        Self::start_with_spare(n, 0, tune).await
    }

    /// As [`PeerBed::start`], with `spare` more hosts reserved after the peers' (for
    /// moto, or a peer that is not a member).
    pub async fn start_with_spare(
        n: u8,
        spare: u8,
        tune: impl FnOnce(&mut PeerGroupSpec),
    ) -> anyhow::Result<PeerBed> {
        let hosts = HostBlock::reserve(n + spare)?;
        let dir = test_dir("orch-peers-")?;
        let mut spec = PeerGroupSpec::raft_only();
        tune(&mut spec);
        let peer_hosts: Vec<String> = (1..=n).map(|i| hosts.host(i)).collect();
        let peers = peer::start_peers(
            &peer_hosts,
            &spec,
            dir.path(),
            hosts.state_dir(),
            Lifetime::Test,
            &hosts.cgroup_dirs(),
        )
        .await?;
        Ok(PeerBed { peers, hosts, dir })
    }

    /// The peer with Raft id `id`.
    pub fn peer(&self, id: u64) -> &Peer {
        &self.peers[id as usize - 1]
    }

    pub fn peer_mut(&mut self, id: u64) -> &mut Peer {
        &mut self.peers[id as usize - 1]
    }

    /// The running peers.
    pub fn running(&self) -> Vec<&Peer> {
        self.peers.iter().filter(|p| p.is_running()).collect()
    }
}

/// Fails the test (unless it already fails) when a peer's log holds a secret: a
/// token or a MySQL password.
fn assert_no_secret_in_logs(peers: &[Peer]) {
    if std::thread::panicking() {
        return;
    }
    if let Some(found) = peer::find_secret_in_logs(peers, &peer::secrets()) {
        panic!("{found}");
    }
}

impl Drop for PeerBed {
    fn drop(&mut self) {
        for p in &mut self.peers {
            p.kill();
        }
        assert_no_secret_in_logs(&self.peers);
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        for p in &mut self.peers {
            p.kill();
        }
        for s in &mut self.cluster.servers {
            s.kill();
        }
        assert_no_secret_in_logs(&self.peers);
    }
}
