//! Simulated hosts: blocks of loopback addresses `127.X.Y.1..=n`, reserved across
//! processes with a lock file so parallel tests (and the sandbox) never share one.
//!
//! Linux routes all of 127.0.0.0/8 to `lo`, so every address can bind the production
//! ports 3306, 3000 and 10008 at once.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use anyhow::{bail, Context};

/// Where lock files and per-block state live.
pub fn testbed_root() -> PathBuf {
    std::env::temp_dir().join("orch-testbed")
}

/// Ports every simulated host must have free.
pub const HOST_PORTS: [u16; 3] = [3306, 3000, 10008];

/// A reserved block of loopback addresses, released on drop.
pub struct HostBlock {
    prefix: [u8; 2],
    count: u8,
    _lock: File,
    state_dir: PathBuf,
}

impl HostBlock {
    /// Reserves `count` addresses in a random free block `127.X.Y.0/24` (X in 100..=250).
    pub fn reserve(count: u8) -> anyhow::Result<HostBlock> {
        let seed = std::process::id() as u64
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
        for attempt in 0..200u64 {
            let n = seed.wrapping_mul(6364136223846793005).wrapping_add(attempt * 1442695040888963407);
            let prefix = [100 + ((n >> 33) % 151) as u8, ((n >> 17) % 256) as u8];
            if let Some(block) = Self::try_reserve(prefix, count)? {
                return Ok(block);
            }
        }
        bail!("no free loopback block after 200 attempts")
    }

    /// Reserves exactly `127.X.Y.1..=count`; fails if taken.
    pub fn reserve_fixed(prefix: [u8; 2], count: u8) -> anyhow::Result<HostBlock> {
        Self::try_reserve(prefix, count)?.with_context(|| {
            format!(
                "addresses 127.{}.{}.1-{count} are in use (is another sandbox or test running?)",
                prefix[0], prefix[1]
            )
        })
    }

    fn try_reserve(prefix: [u8; 2], count: u8) -> anyhow::Result<Option<HostBlock>> {
        let locks = testbed_root().join("locks");
        std::fs::create_dir_all(&locks).with_context(|| format!("cannot create {}", locks.display()))?;
        let name = format!("127.{}.{}", prefix[0], prefix[1]);
        let lock_path = locks.join(format!("{name}.lock"));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Ok(None);
        }
        let state_dir = testbed_root().join("blocks").join(&name);
        std::fs::create_dir_all(&state_dir)?;
        crate::process::kill_recorded(&state_dir);
        for i in 1..=count {
            let ip = Ipv4Addr::new(127, prefix[0], prefix[1], i);
            for port in HOST_PORTS {
                if TcpListener::bind((ip, port)).is_err() {
                    return Ok(None);
                }
            }
        }
        Ok(Some(HostBlock { prefix, count, _lock: lock, state_dir }))
    }

    /// Address of host `i` (1-based).
    pub fn host(&self, i: u8) -> String {
        assert!(i >= 1 && i <= self.count, "host {i} outside block of {}", self.count);
        format!("127.{}.{}.{i}", self.prefix[0], self.prefix[1])
    }

    pub fn hosts(&self) -> Vec<String> {
        (1..=self.count).map(|i| self.host(i)).collect()
    }

    /// Per-block directory where spawned processes are recorded for stale cleanup.
    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }
}
