//! minikv: the testbed's self-check. A deliberately simple key-value
//! service (one copy per key, hashed over the `kv` nodes; a checksummed,
//! group-committed WAL; acknowledged after sync) whose guarantees are few
//! and plain, so that its scenarios check the testbed itself (network,
//! disks, the fault machinery, the checkers) apart from the store. Its
//! bugs are known, so the checkers must find them: `planted_bug` in
//! `[service]` plants one.

use engine::minikv::{KvClient, KvMsg, PlantedBug, ServerConfig};
use sim::net::Net;
use sim::topology::NodeId;
use sim::world::{NodeCtx, World};

use super::{hashed_owner, Deployment, Service};
use crate::scenario::{Refusal, Role, Scenario, ServiceDef, ServiceRules, WorkloadKind};
use crate::workload::clients::ClientNode;

/// The role of minikv's servers unless `server_role` names another.
pub const KV_ROLE: &str = "kv";

pub struct Minikv;

impl ServiceRules for Minikv {
    fn kind(&self) -> &'static str {
        "minikv"
    }

    /// Its servers read no clock and run no CPU model.
    fn untouched_by(&self) -> Vec<(&'static str, &'static str)> {
        vec![("clock-offset", "*"), ("clock-drift", "*"), ("cpu-slow", "*")]
    }

    fn roles(&self, def: &ServiceDef) -> Vec<Role> {
        vec![Role::serving(def.server_role_or(KV_ROLE))]
    }

    fn fields(&self) -> &'static [&'static str] {
        &["planted_bug"]
    }

    fn check(&self, def: &ServiceDef) -> Result<(), Refusal> {
        match def.planted_bug.as_deref() {
            Some(name) if PlantedBug::from_name(name).is_none() => {
                let known: Vec<&str> = PlantedBug::ALL.iter().map(|b| b.name()).collect();
                Err(Refusal::new("service.planted_bug", format!("unknown bug `{name}` (known: {})", known.join(", "))))
            }
            _ => Ok(()),
        }
    }

    fn workload(&self) -> WorkloadKind {
        WorkloadKind::Kv
    }
}

impl Service for Minikv {
    fn rules(&self) -> &dyn ServiceRules {
        self
    }

    /// A server on every node of the server role.
    fn deploy(&self, world: &World, scn: &Scenario) -> Box<dyn Deployment> {
        let servers = world.topology().nodes_with_role(scn.service.server_role_or(KV_ROLE));
        let planted_bug = scn.service.planted_bug.as_deref().and_then(PlantedBug::from_name);
        let server_cfg = ServerConfig { group_commit_max: scn.service.group_commit_max, planted_bug };
        for &s in &servers {
            let cfg = server_cfg.clone();
            world.start_node(s, move |ctx| engine::minikv::serve(ctx, cfg.clone()));
        }
        Box::new(Running { servers })
    }

    /// A key is unavailable with its server.
    fn availability_unit<'a>(&self, scn: &'a Scenario) -> Box<dyn Fn(&str) -> String + 'a> {
        hashed_owner(scn, scn.service.server_role_or(KV_ROLE))
    }
}

struct Running {
    servers: Vec<NodeId>,
}

impl Deployment for Running {
    fn start_client(&self, world: &World, node: NodeId, share: ClientNode) {
        let servers = self.servers.clone();
        world.start_node(node, move |ctx| client_main(ctx, share.clone(), servers.clone()));
    }
}

/// A client node: minikv's client routes each key to its server.
async fn client_main(ctx: NodeCtx, share: ClientNode, servers: Vec<NodeId>) {
    let (net, _inbox) = Net::<KvMsg>::bind(&ctx).await;
    let client = KvClient::new(net, servers, share.op_timeout);
    share.run_kv(ctx, client).await
}
