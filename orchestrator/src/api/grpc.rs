//! The gRPC `Orchestrator` service `orchctl` talks to, on the HTTP port.

use orch_proto::v1 as pb;
use orch_proto::v1::orchestrator_server::Orchestrator;
use tonic::{Request, Response, Status};

use super::AppState;
use crate::topology::InstanceKey;

pub struct OrchestratorService {
    state: AppState,
}

impl OrchestratorService {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl Orchestrator for OrchestratorService {
    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusReply>, Status> {
        let s = &self.state;
        Ok(Response::new(pb::StatusReply {
            node_id: s.node_id,
            version: env!("CARGO_PKG_VERSION").to_string(),
            http_address: s.http_address.to_string(),
            uptime_seconds: s.started.elapsed().as_secs(),
            known_instances: s.store.instance_count() as u32,
            clusters: s.store.cluster_count() as u32,
        }))
    }

    async fn list_clusters(
        &self,
        _: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersReply>, Status> {
        let clusters = self
            .state
            .store
            .clusters()
            .iter()
            .map(|c| pb::ClusterSummary {
                alias: c.alias.clone(),
                master: c.master.to_string(),
                instances: c.instances.len() as u32,
                reachable: c.reachable_count() as u32,
            })
            .collect();
        Ok(Response::new(pb::ListClustersReply { clusters }))
    }

    async fn get_cluster(
        &self,
        request: Request<pb::GetClusterRequest>,
    ) -> Result<Response<pb::ClusterTopology>, Status> {
        let alias = request.into_inner().alias;
        let cluster = self
            .state
            .store
            .cluster(&alias)
            .ok_or_else(|| Status::not_found(format!("no cluster `{alias}`")))?;
        Ok(Response::new(pb::ClusterTopology::from(&cluster)))
    }

    async fn discover(
        &self,
        request: Request<pb::DiscoverRequest>,
    ) -> Result<Response<pb::DiscoverReply>, Status> {
        let r = request.into_inner();
        let port = u16::try_from(r.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| Status::invalid_argument(format!("port {} is not 1-65535", r.port)))?;
        let key = InstanceKey::new(r.host, port);
        self.state
            .discovery
            .discover(key.clone())
            .await
            .map_err(|e| Status::unavailable(format!("cannot discover {key}: {e}")))?;
        Ok(Response::new(pb::DiscoverReply { key: key.to_string() }))
    }
}
