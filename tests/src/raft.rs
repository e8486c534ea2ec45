//! Helpers for tests and benchmarks of the peers' Raft group, over the HTTP API.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;

use crate::peer::{get_json, http_client, Peer};

/// `/api/raft-state` of a peer.
pub async fn raft_state(peer: &Peer) -> anyhow::Result<Value> {
    get_json(&peer.url("/api/raft-state")).await
}

/// Waits until every peer in `peers` reports the same leader, which is one of them;
/// returns its id.
pub async fn wait_agreed_leader(peers: &[&Peer], timeout: Duration) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut last = Vec::new();
    loop {
        last.clear();
        for p in peers {
            last.push(raft_state(p).await.ok().and_then(|s| s["leader_id"].as_u64()));
        }
        if let Some(Some(leader)) = last.first() {
            if last.iter().all(|l| *l == Some(*leader)) && peers.iter().any(|p| p.id == *leader) {
                return Ok(*leader);
            }
        }
        if started.elapsed() > timeout {
            bail!("no agreed leader within {timeout:?}; peers report {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes a checkable decision through `peer` with a typed operation: a downtime of a
/// made-up instance (`10.255.x.y:3306`, from `n`) whose reason is `text`. Returns the
/// HTTP status and body.
pub async fn write_marker(peer: &Peer, n: u32, text: &str) -> anyhow::Result<(u16, Value)> {
    let host = format!("10.255.{}.{}", n / 256, n % 256);
    let url = peer.url(&format!("/api/begin-downtime/{host}/3306/test/{text}/1d"));
    let resp = http_client().post(url).send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await?))
}

/// The markers [`write_marker`] left in a state-machine answer: their texts, in the
/// order the leader stamped them.
pub fn markers(state: &Value) -> Vec<String> {
    let mut found: Vec<(i64, String)> = state["state"]["downtimes"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.starts_with("10.255."))
                .map(|(_, d)| {
                    (d["since_unix_ms"].as_i64().unwrap_or(0), d["reason"].as_str().unwrap_or("").to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.into_iter().map(|(_, r)| r).collect()
}

/// The replicated state as `peer` has applied it.
pub async fn state_machine(peer: &Peer) -> anyhow::Result<Value> {
    get_json(&peer.url("/api/raft/state-machine")).await
}

/// Waits until `peer` has applied at least `commands` commands; returns its state.
pub async fn wait_applied(peer: &Peer, commands: u64, timeout: Duration) -> anyhow::Result<Value> {
    let started = Instant::now();
    loop {
        let s = state_machine(peer).await;
        if let Ok(s) = &s {
            if s["state"]["applied_commands"].as_u64().unwrap_or(0) >= commands {
                return Ok(s.clone());
            }
        }
        if started.elapsed() > timeout {
            bail!("peer {} did not apply {commands} commands within {timeout:?}: {s:?}", peer.id);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
