//! Prometheus metrics of the peer, served as text on `GET /metrics`.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::topology::InstanceKey;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    instance: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    instance: String,
}

fn probe_latency_histogram() -> Histogram {
    // 1 ms .. ~2 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 12,
    ))
}

/// Every metric the peer exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    probes: Family<ProbeLabels, Counter>,
    probe_latency: Family<InstanceLabels, Histogram, fn() -> Histogram>,
    instance_up: Family<InstanceLabels, Gauge>,
    known_instances: Gauge,
    clusters: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("orchestrator");
        let probes = Family::<ProbeLabels, Counter>::default();
        let probe_latency =
            Family::<InstanceLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                probe_latency_histogram as fn() -> Histogram,
            );
        let instance_up = Family::<InstanceLabels, Gauge>::default();
        let known_instances = Gauge::default();
        let clusters = Gauge::default();
        registry.register(
            "probes",
            "Instance probes by outcome (ok, error)",
            probes.clone(),
        );
        registry.register(
            "probe_duration_seconds",
            "Time one probe of an instance took",
            probe_latency.clone(),
        );
        registry.register(
            "instance_up",
            "1 when the last probe of the instance succeeded",
            instance_up.clone(),
        );
        registry.register(
            "known_instances",
            "Instances discovery knows",
            known_instances.clone(),
        );
        registry.register(
            "clusters",
            "Clusters discovery has formed",
            clusters.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            probes,
            probe_latency,
            instance_up,
            known_instances,
            clusters,
        }
    }

    pub fn record_probe(&self, key: &InstanceKey, ok: bool, latency: Duration) {
        let instance = key.to_string();
        self.probes
            .get_or_create(&ProbeLabels {
                instance: instance.clone(),
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
        let labels = InstanceLabels { instance };
        self.probe_latency
            .get_or_create(&labels)
            .observe(latency.as_secs_f64());
        self.instance_up.get_or_create(&labels).set(i64::from(ok));
    }

    pub fn set_topology_size(&self, instances: usize, clusters: usize) {
        self.known_instances.set(instances as i64);
        self.clusters.set(clusters as i64);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_metrics_are_exported() {
        let m = Metrics::new();
        let k = InstanceKey::new("127.0.0.1", 3306);
        m.record_probe(&k, true, Duration::from_millis(3));
        m.record_probe(&k, false, Duration::from_millis(900));
        m.set_topology_size(3, 1);
        let text = m.encode();
        assert!(
            text.contains(r#"orchestrator_probes_total{instance="127.0.0.1:3306",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"orchestrator_instance_up{instance="127.0.0.1:3306"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(
                "orchestrator_probe_duration_seconds_count{instance=\"127.0.0.1:3306\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("orchestrator_known_instances 3"), "{text}");
    }
}
