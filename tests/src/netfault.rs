//! Network partitions between simulated hosts: `nft` drop rules between loopback
//! addresses, one table per partition, deleted when the partition is healed or dropped.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// An active partition; healed on drop.
pub struct Partition {
    table: String,
    active: bool,
}

fn nft(args: &[&str]) -> anyhow::Result<()> {
    let out =
        Command::new("nft").args(args).output().context("cannot run nft (install Debian's nftables)")?;
    if !out.status.success() {
        bail!("nft {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl Partition {
    /// An empty nft table with an output chain: rules are added to it.
    fn new() -> anyhow::Result<Partition> {
        let table = format!("orchtest_{}_{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        nft(&["add", "table", "inet", &table])?;
        let partition = Partition { table, active: true };
        let hook = "{ type filter hook output priority 0; policy accept; }";
        nft(&["add", "chain", "inet", &partition.table, "out", hook])?;
        Ok(partition)
    }

    /// Drops outgoing packets matching `matches` (nft match expressions).
    fn drop_matching(&self, matches: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["add", "rule", "inet", &self.table, "out"];
        args.extend_from_slice(matches);
        args.push("drop");
        nft(&args)
    }

    /// Cuts every connection between a host of `side_a` and a host of `side_b`, both
    /// ways, for sockets bound to the hosts' addresses. Traffic within each side, and
    /// with anything else, still flows.
    pub fn cut(side_a: &[String], side_b: &[String]) -> anyhow::Result<Partition> {
        let partition = Partition::new()?;
        for a in side_a {
            for b in side_b {
                for (src, dst) in [(a, b), (b, a)] {
                    partition.drop_matching(&["ip", "saddr", src, "ip", "daddr", dst])?;
                }
            }
        }
        Ok(partition)
    }

    /// Cuts host `victim` of `block` off from every other host of the block, both ways,
    /// whatever source address its processes use (matched by their cgroup).
    pub fn isolate(block: &crate::hosts::HostBlock, victim: u8) -> anyhow::Result<Partition> {
        let group = |i: u8| {
            block
                .cgroup(i)
                .map(|g| format!("\"{}\"", g.nft_path))
                .context("cgroup v2 is not available for partitions")
        };
        let partition = Partition::new()?;
        let victim_addr = block.host(victim);
        let victim_group = group(victim)?;
        for i in (1..=block.hosts().len() as u8).filter(|i| *i != victim) {
            let (other, other_group) = (block.host(i), group(i)?);
            for (g, dst) in [(&victim_group, &other), (&other_group, &victim_addr)] {
                partition.drop_matching(&["socket", "cgroupv2", "level", "1", g, "ip", "daddr", dst])?;
            }
            // Sockets bound to the hosts' own addresses, whoever owns them.
            for (src, dst) in [(&victim_addr, &other), (&other, &victim_addr)] {
                partition.drop_matching(&["ip", "saddr", src, "ip", "daddr", dst])?;
            }
        }
        Ok(partition)
    }

    /// Silences `host:port` (a server): every packet it sends is dropped, so a
    /// connection to it is never accepted nor refused and one open gets no answer.
    /// Over the network the server looks hung, whatever happens to its process.
    pub fn silence(host: &str, port: u16) -> anyhow::Result<Partition> {
        let partition = Partition::new()?;
        partition.drop_matching(&["ip", "saddr", host, "tcp", "sport", &port.to_string()])?;
        Ok(partition)
    }

    /// Removes the rules.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        if self.active {
            self.active = false;
            nft(&["delete", "table", "inet", &self.table])?;
        }
        Ok(())
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = self.heal();
    }
}
