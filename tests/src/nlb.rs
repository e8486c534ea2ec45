//! Our NLB stand-in (DESIGN.md section 8). moto stores load balancers but moves no
//! traffic and runs no health checks, so the client path is tested through this small
//! TCP forwarder that behaves like an NLB in the ways failover depends on:
//!
//! - its listeners and target groups are read from moto (`DescribeListeners`,
//!   `DescribeTargetGroups`), membership every 100 ms (`DescribeTargetHealth`), target
//!   addresses from EC2; while moto is down it keeps forwarding with what it last read,
//!   as the NLB data plane does when the AWS API is out;
//! - it runs each group's HTTP health check (port, path, interval, timeout and
//!   thresholds from the group); a newly registered target takes traffic only after
//!   `healthy_threshold` passing checks, and leaves after `unhealthy_threshold` failed;
//! - new connections go round-robin to registered healthy targets; when none is
//!   healthy it fails open to the registered unhealthy ones, as AWS does (a target
//!   still in its `initial` checks gets nothing); deregistered targets get no new
//!   connections, open ones are left alone.
//!
//! `time_scale` divides the health-check interval and timeout, so tests see in a
//! fraction of a second what takes AWS 30 s (10 s interval, threshold 3).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use orchestrator::aws::{AwsClients, TargetGroupApi};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::aws::ClusterResources;

#[derive(Debug, Clone)]
struct HealthCheck {
    port: String,
    path: String,
    interval: Duration,
    timeout: Duration,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
}

/// A target's health as AWS reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Health {
    /// Registered, thresholds not reached yet: no traffic.
    #[default]
    Initial,
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, Default)]
struct TargetView {
    ip: Option<String>,
    health: Health,
    passed: u32,
    failed: u32,
}

#[derive(Debug, Clone)]
struct GroupView {
    arn: String,
    target_port: u16,
    check: HealthCheck,
    targets: BTreeMap<String, TargetView>,
    next: usize,
}

type Groups = Arc<Mutex<BTreeMap<u16, GroupView>>>;

/// A running stand-in; stops when dropped.
pub struct NlbStandIn {
    pub host: String,
    groups: Groups,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for NlbStandIn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl NlbStandIn {
    /// Starts listeners on `host` for every listener of the cluster's load balancer.
    pub async fn start(
        clients: AwsClients,
        resources: &ClusterResources,
        host: &str,
        time_scale: u32,
    ) -> anyhow::Result<NlbStandIn> {
        let listeners = clients
            .elb
            .describe_listeners()
            .load_balancer_arn(&resources.load_balancer_arn)
            .send()
            .await
            .context("DescribeListeners")?;
        let mut groups = BTreeMap::new();
        for l in listeners.listeners() {
            let port = l.port().context("listener without port")? as u16;
            let arn = l
                .default_actions()
                .iter()
                .find_map(|a| a.target_group_arn())
                .context("listener without a forward action")?
                .to_string();
            let tg = clients
                .elb
                .describe_target_groups()
                .target_group_arns(&arn)
                .send()
                .await
                .context("DescribeTargetGroups")?;
            let g = tg.target_groups().first().context("target group not found")?;
            let scale = |s: Option<i32>, default: i32| {
                Duration::from_millis(s.unwrap_or(default) as u64 * 1000 / time_scale.max(1) as u64)
            };
            let check = HealthCheck {
                port: g.health_check_port().unwrap_or("traffic-port").to_string(),
                path: g.health_check_path().unwrap_or("/").to_string(),
                interval: scale(g.health_check_interval_seconds(), 30),
                timeout: scale(g.health_check_timeout_seconds(), 10),
                healthy_threshold: g.healthy_threshold_count().unwrap_or(5) as u32,
                unhealthy_threshold: g.unhealthy_threshold_count().unwrap_or(2) as u32,
            };
            let target_port = g.port().unwrap_or(3306) as u16;
            groups.insert(port, GroupView { arn, target_port, check, targets: BTreeMap::new(), next: 0 });
        }
        let groups: Groups = Arc::new(Mutex::new(groups));
        let mut tasks = vec![
            tokio::spawn(poll_membership(clients, groups.clone())),
            tokio::spawn(run_health_checks(groups.clone())),
        ];
        let ports: Vec<u16> = groups.lock().expect("groups").keys().copied().collect();
        for port in ports {
            let listener = TcpListener::bind((host, port))
                .await
                .with_context(|| format!("NLB stand-in cannot listen on {host}:{port}"))?;
            tasks.push(tokio::spawn(forward(listener, port, groups.clone())));
        }
        Ok(NlbStandIn { host: host.to_string(), groups, tasks })
    }

    /// Addresses of the targets behind listener `port` that pass their health check.
    pub fn healthy(&self, port: u16) -> Vec<String> {
        let groups = self.groups.lock().expect("groups");
        groups
            .get(&port)
            .map(|g| {
                g.targets
                    .values()
                    .filter(|t| t.health == Health::Healthy)
                    .filter_map(|t| t.ip.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

async fn poll_membership(clients: AwsClients, groups: Groups) {
    let mut addresses: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let arns: Vec<(u16, String)> =
            groups.lock().expect("groups").iter().map(|(p, g)| (*p, g.arn.clone())).collect();
        for (port, arn) in arns {
            // moto down: keep forwarding with what was last read.
            let Ok(targets) = clients.targets(&arn).await else { continue };
            let registered: Vec<String> =
                targets.into_iter().filter(|t| t.is_member()).map(|t| t.id).collect();
            for id in &registered {
                if addresses.contains_key(id) {
                    continue;
                }
                if let Ok(out) = clients.ec2.describe_instances().instance_ids(id).send().await {
                    let ip = out
                        .reservations()
                        .iter()
                        .flat_map(|r| r.instances())
                        .find_map(|i| i.private_ip_address().map(str::to_string));
                    if let Some(ip) = ip {
                        addresses.insert(id.clone(), ip);
                    }
                }
            }
            let mut all = groups.lock().expect("groups");
            let Some(g) = all.get_mut(&port) else { continue };
            g.targets.retain(|id, _| registered.contains(id));
            for id in registered {
                let t = g.targets.entry(id.clone()).or_default();
                t.ip = addresses.get(&id).cloned();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_health_checks(groups: Groups) {
    let client = reqwest::Client::builder().no_proxy().build().expect("http client");
    let interval = groups.lock().expect("groups").values().map(|g| g.check.interval).min();
    let interval = interval.unwrap_or(Duration::from_secs(1)).max(Duration::from_millis(20));
    loop {
        let checks: Vec<(u16, String, String, Duration)> = {
            let all = groups.lock().expect("groups");
            all.iter()
                .flat_map(|(port, g)| {
                    g.targets.iter().filter_map(move |(id, t)| {
                        let ip = t.ip.as_ref()?;
                        let hc_port = match g.check.port.as_str() {
                            "traffic-port" => g.target_port.to_string(),
                            p => p.to_string(),
                        };
                        let url = format!("http://{ip}:{hc_port}{}", g.check.path);
                        Some((*port, id.clone(), url, g.check.timeout))
                    })
                })
                .collect()
        };
        let results = futures::future::join_all(checks.into_iter().map(|(port, id, url, timeout)| {
            let client = client.clone();
            async move {
                let ok = client
                    .get(&url)
                    .timeout(timeout)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == reqwest::StatusCode::OK);
                (port, id, ok)
            }
        }))
        .await;
        {
            let mut all = groups.lock().expect("groups");
            for (port, id, ok) in results {
                let Some(g) = all.get_mut(&port) else { continue };
                let (healthy_after, unhealthy_after) =
                    (g.check.healthy_threshold, g.check.unhealthy_threshold);
                let Some(t) = g.targets.get_mut(&id) else { continue };
                if ok {
                    t.passed += 1;
                    t.failed = 0;
                    if t.passed >= healthy_after {
                        t.health = Health::Healthy;
                    }
                } else {
                    t.failed += 1;
                    t.passed = 0;
                    if t.failed >= unhealthy_after {
                        t.health = Health::Unhealthy;
                    }
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// The address a new connection on `port` goes to: round-robin over healthy targets,
/// or over the unhealthy ones when none is healthy (fail open).
fn pick(groups: &Groups, port: u16) -> Option<String> {
    let mut all = groups.lock().ok()?;
    let g = all.get_mut(&port)?;
    let with = |h: Health| -> Vec<String> {
        g.targets.values().filter(|t| t.health == h).filter_map(|t| t.ip.clone()).collect()
    };
    let healthy = with(Health::Healthy);
    let candidates = if healthy.is_empty() { with(Health::Unhealthy) } else { healthy };
    if candidates.is_empty() {
        return None;
    }
    g.next = g.next.wrapping_add(1);
    Some(format!("{}:{}", candidates[g.next % candidates.len()], g.target_port))
}

async fn forward(listener: TcpListener, port: u16, groups: Groups) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else { continue };
        let Some(target) = pick(&groups, port) else {
            drop(client);
            continue;
        };
        tokio::spawn(async move {
            let connect = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(&target)).await;
            if let Ok(Ok(mut upstream)) = connect {
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        });
    }
}
