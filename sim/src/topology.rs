//! Zones, nodes with roles, and the links between them.
//!
//! Zones are the vertices of a petgraph graph; each edge carries the link
//! parameters between two zones (a self-loop carries the intra-zone link).
//! A dense zone×zone matrix derived from the graph serves the hot path.

use std::fmt::Write as _;
use std::time::Duration;

use petgraph::graph::{NodeIndex, UnGraph};

use crate::time::fmt_duration;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize)]
pub struct ZoneId(pub u16);

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One-way parameters of a link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkParams {
    pub latency: Duration,
    /// Each message adds a uniform delay in `[0, jitter]`.
    pub jitter: Duration,
    /// Probability that a message is lost, in `[0, 1]`.
    pub loss: f64,
}

#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub id: NodeId,
    /// `zone-role-index`, e.g. `az1-table-0`.
    pub name: String,
    pub zone: ZoneId,
    pub role: String,
    /// A spare: its process is deployed but starts only at a `node-add`
    /// (the cluster grows while it runs).
    pub spare: bool,
}

/// One-way latency of a message a node sends to itself.
pub const LOOPBACK_LATENCY: Duration = Duration::from_micros(5);

#[derive(Clone, Debug)]
pub struct Topology {
    zone_names: Vec<String>,
    graph: UnGraph<String, LinkParams>,
    zone_vertex: Vec<NodeIndex>,
    /// `links[a * zones + b]`, derived from the graph.
    links: Vec<LinkParams>,
    nodes: Vec<NodeInfo>,
}

impl Topology {
    /// Zones with the given names, every intra-zone link `intra` and every
    /// inter-zone link `inter` until overridden.
    pub fn new(zone_names: &[String], intra: LinkParams, inter: LinkParams) -> Topology {
        let mut graph = UnGraph::new_undirected();
        let zone_vertex: Vec<NodeIndex> = zone_names.iter().map(|z| graph.add_node(z.clone())).collect();
        for (i, &a) in zone_vertex.iter().enumerate() {
            graph.add_edge(a, a, intra);
            for &b in &zone_vertex[i + 1..] {
                graph.add_edge(a, b, inter);
            }
        }
        let mut t = Topology { zone_names: zone_names.to_vec(), graph, zone_vertex, links: Vec::new(), nodes: Vec::new() };
        t.derive_links();
        t
    }

    fn derive_links(&mut self) {
        let n = self.zone_names.len();
        let mut links = Vec::with_capacity(n * n);
        for a in 0..n {
            for b in 0..n {
                let e = self.graph.find_edge(self.zone_vertex[a], self.zone_vertex[b]).expect("complete zone graph");
                links.push(self.graph[e]);
            }
        }
        self.links = links;
    }

    /// Overrides the link between two zones (both directions), or the
    /// intra-zone link when `a == b`.
    pub fn set_link(&mut self, a: ZoneId, b: ZoneId, params: LinkParams) {
        let e = self.graph.find_edge(self.zone_vertex[a.0 as usize], self.zone_vertex[b.0 as usize]).expect("complete zone graph");
        self.graph[e] = params;
        self.derive_links();
    }

    pub fn add_node(&mut self, zone: ZoneId, role: &str) -> NodeId {
        self.push_node(zone, role, false)
    }

    /// A spare node (see [`NodeInfo::spare`]), named after the role's
    /// other nodes in its zone.
    pub fn add_spare_node(&mut self, zone: ZoneId, role: &str) -> NodeId {
        self.push_node(zone, role, true)
    }

    fn push_node(&mut self, zone: ZoneId, role: &str, spare: bool) -> NodeId {
        assert!((zone.0 as usize) < self.zone_names.len(), "zone out of range");
        let index = self.nodes.iter().filter(|n| n.zone == zone && n.role == role).count();
        let id = NodeId(u32::try_from(self.nodes.len()).expect("node count fits u32"));
        let name = format!("{}-{}-{}", self.zone_names[zone.0 as usize], role, index);
        self.nodes.push(NodeInfo { id, name, zone, role: role.to_string(), spare });
        id
    }

    pub fn link(&self, a: NodeId, b: NodeId) -> LinkParams {
        if a == b {
            return LinkParams { latency: LOOPBACK_LATENCY, jitter: Duration::ZERO, loss: 0.0 };
        }
        let za = self.nodes[a.index()].zone.0 as usize;
        let zb = self.nodes[b.index()].zone.0 as usize;
        self.links[za * self.zone_names.len() + zb]
    }

    pub fn zone_link(&self, a: ZoneId, b: ZoneId) -> LinkParams {
        self.links[a.0 as usize * self.zone_names.len() + b.0 as usize]
    }

    pub fn zones(&self) -> impl Iterator<Item = ZoneId> + '_ {
        (0..self.zone_names.len()).map(|i| ZoneId(i as u16))
    }
    pub fn zone_count(&self) -> usize {
        self.zone_names.len()
    }
    pub fn zone_name(&self, z: ZoneId) -> &str {
        &self.zone_names[z.0 as usize]
    }
    pub fn zone_by_name(&self, name: &str) -> Option<ZoneId> {
        self.zone_names.iter().position(|z| z == name).map(|i| ZoneId(i as u16))
    }
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }
    pub fn node(&self, id: NodeId) -> &NodeInfo {
        &self.nodes[id.index()]
    }
    pub fn node_by_name(&self, name: &str) -> Option<NodeId> {
        self.nodes.iter().find(|n| n.name == name).map(|n| n.id)
    }
    pub fn zone_of(&self, id: NodeId) -> ZoneId {
        self.nodes[id.index()].zone
    }
    pub fn nodes_in_zone(&self, z: ZoneId) -> Vec<NodeId> {
        self.nodes.iter().filter(|n| n.zone == z).map(|n| n.id).collect()
    }
    pub fn nodes_with_role(&self, role: &str) -> Vec<NodeId> {
        self.nodes.iter().filter(|n| n.role == role).map(|n| n.id).collect()
    }

    /// The topology as text for reports: zones with their node counts per
    /// role, then every link of the zone graph.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for z in self.zones() {
            let mut roles: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
            for n in self.nodes.iter().filter(|n| n.zone == z) {
                let e = roles.entry(n.role.as_str()).or_default();
                e.0 += 1;
                e.1 += usize::from(n.spare);
            }
            let roles: Vec<String> = roles.iter().map(|(r, (c, spare))| if *spare > 0 { format!("{c} {r} ({spare} spare)") } else { format!("{c} {r}") }).collect();
            let _ = writeln!(s, "zone {}: {}", self.zone_name(z), roles.join(", "));
        }
        for e in self.graph.edge_indices() {
            let (a, b) = self.graph.edge_endpoints(e).expect("edge exists");
            let p = self.graph[e];
            let _ = writeln!(
                s,
                "link {} <-> {}: {} ± {}, loss {}",
                self.graph[a],
                self.graph[b],
                fmt_duration(p.latency),
                fmt_duration(p.jitter),
                p.loss
            );
        }
        s
    }

    /// Graphviz DOT of the zone graph.
    pub fn to_dot(&self) -> String {
        let g = self.graph.map(|_, z| z.clone(), |_, p| fmt_duration(p.latency));
        format!("{}", petgraph::dot::Dot::new(&g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(us: u64) -> LinkParams {
        LinkParams { latency: Duration::from_micros(us), jitter: Duration::ZERO, loss: 0.0 }
    }

    #[test]
    fn links_follow_zones_and_overrides() {
        let zones: Vec<String> = ["az1", "az2", "az3"].iter().map(|s| s.to_string()).collect();
        let mut t = Topology::new(&zones, lp(100), lp(1000));
        let a = t.add_node(ZoneId(0), "table");
        let b = t.add_node(ZoneId(0), "table");
        let c = t.add_node(ZoneId(2), "table");
        assert_eq!(t.node(b).name, "az1-table-1");
        assert_eq!(t.link(a, b).latency, Duration::from_micros(100));
        assert_eq!(t.link(a, c).latency, Duration::from_micros(1000));
        t.set_link(ZoneId(2), ZoneId(0), lp(2500));
        assert_eq!(t.link(a, c).latency, Duration::from_micros(2500));
        assert_eq!(t.link(c, a).latency, Duration::from_micros(2500));
        assert_eq!(t.link(a, a).latency, LOOPBACK_LATENCY);
        assert!(t.describe().contains("link az1 <-> az3: 2.5ms"));
    }
}
