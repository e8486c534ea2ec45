//! Conversions from the topology model to the protobuf messages of `orch-proto`.

use orch_proto::v1 as pb;

use crate::topology::{ClusterInstance, ClusterSnapshot, Role};

impl From<&ClusterInstance> for pb::Instance {
    fn from(i: &ClusterInstance) -> Self {
        let s = &i.state;
        let probe = s.last_probe.as_ref();
        let replication = probe.and_then(|p| p.replication.as_ref()).map(|r| pb::Replication {
            source: r.source.to_string(),
            io_thread: r.io_thread.to_string(),
            sql_thread: r.sql_thread.to_string(),
            last_io_error: r.last_io_error.clone(),
            last_sql_error: r.last_sql_error.clone(),
            seconds_behind: r.seconds_behind.map(|v| v as i64).unwrap_or(-1),
            gtid_mode: r.gtid_mode.clone(),
        });
        pb::Instance {
            key: s.key.to_string(),
            role: match i.role {
                Role::Master => "master",
                Role::Replica => "replica",
                Role::Unknown => "unknown",
            }
            .to_string(),
            reachable: s.reachable,
            last_error: s.last_error.clone().unwrap_or_default(),
            server_id: probe.map(|p| p.server_id).unwrap_or(0),
            version: probe.map(|p| p.version.clone()).unwrap_or_default(),
            flavor: probe.map(|p| p.flavor.to_string()).unwrap_or_default(),
            read_only: probe.is_some_and(|p| p.read_only),
            gtid_executed: probe.map(|p| p.gtid_executed.to_string()).unwrap_or_default(),
            gtid_received: probe
                .and_then(|p| p.replication.as_ref())
                .map(|r| r.received.to_string())
                .unwrap_or_default(),
            replication,
            replicas: probe.map(|p| p.replicas.iter().map(ToString::to_string).collect()).unwrap_or_default(),
            probe_latency_ms: s.probe_latency_ms,
            semi_sync_master: probe.is_some_and(|p| p.semi_sync.master_enabled),
            semi_sync_replica: probe.is_some_and(|p| p.semi_sync.replica_enabled),
        }
    }
}

impl From<&ClusterSnapshot> for pb::ClusterTopology {
    fn from(c: &ClusterSnapshot) -> Self {
        pb::ClusterTopology {
            alias: c.alias.clone(),
            master: c.master.to_string(),
            instances: c.instances.iter().map(pb::Instance::from).collect(),
            snapshot_unix_ms: c.taken_unix_ms,
        }
    }
}
