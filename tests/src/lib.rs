//! The test bed: real `mariadbd` servers and our own binaries, each simulated host on
//! its own loopback address (127.X.Y.n) with the production ports, torn down when the
//! test ends however it ends.
//!
//! - [`hosts`] reserves address blocks across processes;
//! - [`process`] owns child processes and their cleanup;
//! - [`mariadb`] builds GTID replication topologies;
//! - [`peer`] runs orchestrator peers and talks to their API;
//! - [`raft`] reads and writes the peers' Raft group through that API;
//! - [`netfault`] cuts the network between hosts (`nft`);
//! - [`TestBed`] puts the three together for one test.

pub mod hosts;
pub mod mariadb;
pub mod netfault;
pub mod peer;
pub mod process;
pub mod raft;
pub mod writer;

use std::path::PathBuf;

use hosts::HostBlock;
use mariadb::MariaDbCluster;
use peer::{Peer, PeerGroupSpec};
use process::Lifetime;

/// A database host + peer per address, for one test.
pub struct TestBed {
    pub peers: Vec<Peer>,
    pub cluster: MariaDbCluster,
    pub hosts: HostBlock,
    pub dir: tempfile::TempDir,
}

impl TestBed {
    /// `n` hosts, each with a `mariadbd` (host 1 the master) and an orchestrator peer
    /// discovering cluster `alias` from the master.
    pub async fn start(n: u8, alias: &str) -> anyhow::Result<TestBed> {
        Self::start_with(n, alias, |_| {}).await
    }

    /// As [`TestBed::start`], with the peer settings adjusted by `tune`.
    pub async fn start_with(
        n: u8,
        alias: &str,
        tune: impl FnOnce(&mut PeerGroupSpec),
    ) -> anyhow::Result<TestBed> {
        let hosts = HostBlock::reserve(n)?;
        let dir = test_dir("orch-test-")?;
        let addrs = hosts.hosts();
        let cgroups = hosts.cgroup_dirs();
        let cluster =
            MariaDbCluster::start(&addrs, dir.path(), hosts.state_dir(), Lifetime::Test, &cgroups).await?;
        let mut spec = PeerGroupSpec::new(alias, vec![cluster.master().key()]);
        tune(&mut spec);
        let peers =
            peer::start_peers(&addrs, &spec, dir.path(), hosts.state_dir(), Lifetime::Test, &cgroups).await?;
        Ok(TestBed { peers, cluster, hosts, dir })
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

/// Orchestrator peers alone (no databases): for Raft tests and benchmarks.
pub struct PeerBed {
    pub peers: Vec<Peer>,
    pub hosts: HostBlock,
    pub dir: tempfile::TempDir,
}

impl PeerBed {
    /// `n` peers on their own hosts, with the spec adjusted by `tune`.
    pub async fn start(n: u8, tune: impl FnOnce(&mut PeerGroupSpec)) -> anyhow::Result<PeerBed> {
        let hosts = HostBlock::reserve(n)?;
        let dir = test_dir("orch-peers-")?;
        let mut spec = PeerGroupSpec::raft_only();
        tune(&mut spec);
        let peers = peer::start_peers(
            &hosts.hosts(),
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

impl Drop for PeerBed {
    fn drop(&mut self) {
        for p in &mut self.peers {
            p.kill();
        }
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
    }
}
