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
    cgroups: Vec<HostCgroup>,
}

/// A cgroup (v2) holding one simulated host's processes, so `nft` can tell which host
/// a packet comes from even when it leaves from 127.0.0.1 (clients that cannot bind a
/// source address, such as mysqld's replication threads).
#[derive(Debug, Clone)]
pub struct HostCgroup {
    /// Directory in the cgroup2 file system.
    pub dir: PathBuf,
    /// The same path as `nft ... socket cgroupv2` names it (relative to /sys/fs/cgroup).
    pub nft_path: String,
}

/// Where cgroup2 is mounted, if it is, below /sys/fs/cgroup.
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, kind) = (f.next()?, f.next()?, f.next()?);
        (kind == "cgroup2" && dir.starts_with("/sys/fs/cgroup")).then(|| PathBuf::from(dir))
    })
}

fn make_cgroups(name: &str, count: u8) -> Vec<HostCgroup> {
    let Some(mount) = cgroup2_mount() else { return Vec::new() };
    let relative = mount.strip_prefix("/sys/fs/cgroup").map(|p| p.to_path_buf()).unwrap_or_default();
    let mut groups = Vec::new();
    for i in 1..=count {
        let leaf = format!("orchtest-{}-{i}", name.replace('.', "-"));
        let dir = mount.join(&leaf);
        if std::fs::create_dir_all(&dir).is_err() {
            return Vec::new();
        }
        groups.push(HostCgroup { dir, nft_path: relative.join(&leaf).display().to_string() });
    }
    groups
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
        let cgroups = make_cgroups(&name, count);
        Ok(Some(HostBlock { prefix, count, _lock: lock, state_dir, cgroups }))
    }

    /// Address of host `i` (1-based).
    pub fn host(&self, i: u8) -> String {
        assert!(i >= 1 && i <= self.count, "host {i} outside block of {}", self.count);
        format!("127.{}.{}.{i}", self.prefix[0], self.prefix[1])
    }

    pub fn hosts(&self) -> Vec<String> {
        (1..=self.count).map(|i| self.host(i)).collect()
    }

    /// The cgroup of host `i` (1-based), when cgroup v2 is available.
    pub fn cgroup(&self, i: u8) -> Option<&HostCgroup> {
        self.cgroups.get(i as usize - 1)
    }

    /// Each host's cgroup directory (empty entries without cgroup v2).
    pub fn cgroup_dirs(&self) -> Vec<Option<PathBuf>> {
        (1..=self.count).map(|i| self.cgroup(i).map(|g| g.dir.clone())).collect()
    }

    /// Per-block directory where spawned processes are recorded for stale cleanup.
    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }
}

impl Drop for HostBlock {
    fn drop(&mut self) {
        for g in &self.cgroups {
            // Fails while processes remain; the next holder of the block retries.
            let _ = std::fs::remove_dir(&g.dir);
        }
    }
}
