//! Scenario files: TOML data describing a world, its workloads, timed faults,
//! hotspots and what the run must show.
//!
//! Parsing never panics: every problem becomes one [`ScenarioError`] naming
//! the file, the line and column, and the field (`fault[2].target`).
//! Validation goes beyond types: names must exist in the topology, faults
//! must fall inside the run, and the fault timeline is replayed statically so
//! that contradictions (a zone taken down twice, a restart of a running node,
//! a heal of a partition that was never made) are refused before the run.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;
use sim::disk::{DiskConfig, DiskFaults};
use sim::fault::{Direction, Fault, ZoneMode};
use sim::time::{fmt_duration, parse_duration};
use sim::topology::{LinkParams, Topology};

/// A duration written as `150us`, `2ms`, `30s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(serde::de::Error::custom)
    }
}

/// A signed duration (clock offsets): `-200ms`, `1.5s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedDur(pub i64);

impl<'de> Deserialize<'de> for SignedDur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let (neg, rest) = match s.trim().strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s.trim()),
        };
        let d = parse_duration(rest).map_err(serde::de::Error::custom)?;
        let ns = i64::try_from(d.as_nanos()).map_err(|_| serde::de::Error::custom("offset too large"))?;
        Ok(SignedDur(if neg { -ns } else { ns }))
    }
}

/// One name or a list of names.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Names {
    One(String),
    Many(Vec<String>),
}

impl Names {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Names::One(s) => vec![s.clone()],
            Names::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub name: String,
    pub description: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub duration: Spanned<Dur>,
    pub topology: TopologyDef,
    #[serde(default)]
    pub disk: DiskDef,
    #[serde(default)]
    pub service: ServiceDef,
    #[serde(default)]
    pub workload: Vec<Spanned<WorkloadDef>>,
    #[serde(default)]
    pub fault: Vec<Spanned<FaultDef>>,
    #[serde(default)]
    pub hotspot: Vec<Spanned<HotspotDef>>,
    #[serde(default)]
    pub expect: ExpectDef,
}

fn default_seed() -> u64 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyDef {
    pub zones: Spanned<Vec<String>>,
    /// Nodes of each role in every zone, e.g. `{ kv = 2, client = 1 }`.
    pub nodes: Spanned<BTreeMap<String, u32>>,
    pub intra_zone_latency: Dur,
    pub inter_zone_latency: Dur,
    #[serde(default = "zero_dur")]
    pub jitter: Dur,
    pub packet_loss: Option<Spanned<f64>>,
    #[serde(default)]
    pub link: Vec<Spanned<LinkDef>>,
}

fn zero_dur() -> Dur {
    Dur(Duration::ZERO)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkDef {
    pub zones: Spanned<[String; 2]>,
    pub latency: Dur,
    pub jitter: Option<Dur>,
    pub loss: Option<f64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DiskDef {
    pub sector: Option<u64>,
    pub capacity_mib: Option<u64>,
    pub write_latency: Option<Dur>,
    pub read_latency: Option<Dur>,
    pub sync_latency: Option<Dur>,
    pub bandwidth_mib_s: Option<u64>,
    pub crash_writeback: Option<f64>,
}

/// Which service a scenario runs.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// One copy per key on the `kv` servers (the interim service).
    #[default]
    Minikv,
    /// The replicated stream layer: `meta` replicas, `storage` nodes.
    Stream,
    /// The table store on the stream layer: `meta` replicas, stream
    /// `manager`s and `storage` nodes, plus `master`s, table servers
    /// (`table`) and `proxy` nodes; key-value workloads drive one table.
    Table,
}

impl ServiceKind {
    /// Whether the service runs on the stream layer (metadata replicas,
    /// managers, storage nodes).
    pub fn on_streams(self) -> bool {
        self != ServiceKind::Minikv
    }
}

/// The service under test and its knobs.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ServiceDef {
    #[serde(default)]
    pub kind: ServiceKind,
    /// The role whose nodes serve data (default `kv` for minikv, `storage`
    /// for streams).
    pub server_role: Option<String>,
    /// The role of the metadata replicas (streams; default `meta`).
    pub meta_role: Option<String>,
    /// Records one group commit may carry (minikv).
    #[serde(default = "default_group_commit")]
    pub group_commit_max: usize,
    /// Streams: how long a storage node stays silent before it is declared dead.
    pub dead_after: Option<Dur>,
    /// Streams: the grace period before a dead node's extents are re-replicated.
    pub rereplicate_after: Option<Dur>,
    /// Streams: bytes after which a writer seals its extent and opens the next.
    pub extent_bytes: Option<u64>,
    /// Table: range partitions of the workload's table.
    pub partitions: Option<u32>,
}

impl Default for ServiceDef {
    fn default() -> Self {
        ServiceDef {
            kind: ServiceKind::default(),
            server_role: None,
            meta_role: None,
            group_commit_max: default_group_commit(),
            dead_after: None,
            rereplicate_after: None,
            extent_bytes: None,
            partitions: None,
        }
    }
}

impl ServiceDef {
    pub fn server_role(&self) -> &str {
        match (&self.server_role, self.kind) {
            (Some(r), _) => r,
            (None, ServiceKind::Minikv) => "kv",
            (None, ServiceKind::Stream) => "storage",
            (None, ServiceKind::Table) => TABLE_SERVER_ROLE,
        }
    }

    pub fn meta_role(&self) -> &str {
        self.meta_role.as_deref().unwrap_or("meta")
    }
}

/// Table service roles: table servers, masters, proxies, and the stream
/// layer's storage nodes beneath them.
pub const TABLE_SERVER_ROLE: &str = "table";
pub const MASTER_ROLE: &str = "master";
pub const PROXY_ROLE: &str = "proxy";
pub const STORAGE_ROLE: &str = "storage";
/// Partitions of a table when `service.partitions` is not given.
pub const DEFAULT_PARTITIONS: u32 = 8;

fn default_group_commit() -> usize {
    64
}

/// What a workload drives.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// Rows of a key-value table: read, write, cas, delete, append, scan.
    #[default]
    Kv,
    /// Streams (`keys` of them): append, read, and `open` (a process takes
    /// the stream over, fencing its writer).
    Stream,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    Uniform,
    Zipf,
}

#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    #[serde(default)]
    pub read: f64,
    #[serde(default)]
    pub write: f64,
    #[serde(default)]
    pub cas: f64,
    #[serde(default)]
    pub delete: f64,
    #[serde(default)]
    pub append: f64,
    #[serde(default)]
    pub scan: f64,
    /// Streams: take the stream over as its writer.
    #[serde(default)]
    pub open: f64,
}

impl Mix {
    pub fn weights(&self) -> [(&'static str, f64); 7] {
        [
            ("read", self.read),
            ("write", self.write),
            ("cas", self.cas),
            ("delete", self.delete),
            ("append", self.append),
            ("scan", self.scan),
            ("open", self.open),
        ]
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct WorkloadDef {
    pub name: String,
    #[serde(default)]
    pub kind: WorkloadKind,
    /// Client processes (each has at most one operation open).
    pub clients: u32,
    /// Operations per second over all clients.
    pub rate: f64,
    pub keys: u64,
    #[serde(default = "default_dist")]
    pub distribution: Distribution,
    #[serde(default = "default_theta")]
    pub zipf_theta: f64,
    pub mix: Mix,
    /// Bytes of value payload per write.
    #[serde(default = "default_value_size")]
    pub value_size: u32,
    #[serde(default = "default_op_timeout")]
    pub timeout: Dur,
    /// Rows a scan asks for.
    #[serde(default = "default_scan_limit")]
    pub scan_limit: u32,
    /// Table scenarios: the fraction of a process's operations sent as bad
    /// requests (missing or wrong access key, another instance's table, a
    /// malformed row key, an oversized cell), which the proxies must refuse.
    #[serde(default)]
    pub bad_requests: f64,
    /// Table scenarios: columns every write puts beside the row's value
    /// (wide rows), each derived from the value, and every read reads the
    /// whole row back: a row whose columns do not all match its value
    /// (columns of two writes mixed) reads as a value nobody wrote.
    #[serde(default)]
    pub columns: u32,
}

fn default_dist() -> Distribution {
    Distribution::Uniform
}
fn default_theta() -> f64 {
    0.99
}
fn default_value_size() -> u32 {
    128
}
fn default_op_timeout() -> Dur {
    Dur(Duration::from_millis(500))
}
fn default_scan_limit() -> u32 {
    100
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct FaultDef {
    pub at: Spanned<Dur>,
    pub until: Option<Spanned<Dur>>,
    pub verb: Spanned<String>,
    /// A zone or node (zone and node verbs).
    pub target: Option<Spanned<String>>,
    /// Sets for link verbs (zones or nodes; absent = every node).
    pub from: Option<Spanned<Names>>,
    pub to: Option<Spanned<Names>>,
    pub mode: Option<Spanned<String>>,
    pub direction: Option<Spanned<String>>,
    pub rate: Option<Spanned<f64>>,
    pub extra: Option<Dur>,
    pub offset: Option<SignedDur>,
    pub ppm: Option<Spanned<i64>>,
    pub read_error_rate: Option<Spanned<f64>>,
    pub write_error_rate: Option<Spanned<f64>>,
    pub bitflip_read_rate: Option<Spanned<f64>>,
    pub bitflip_write_rate: Option<Spanned<f64>>,
    pub misdirect_rate: Option<Spanned<f64>>,
    pub full: Option<bool>,
    pub slow_factor: Option<u32>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HotOp {
    Read,
    Write,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct HotspotDef {
    pub at: Spanned<Dur>,
    pub until: Spanned<Dur>,
    /// Key index (into the workload's key space) or an inclusive range `[lo, hi]`.
    pub key: Option<u64>,
    pub keys: Option<[u64; 2]>,
    pub op: HotOp,
    pub rate: Spanned<f64>,
    #[serde(default = "default_hot_clients")]
    pub clients: u32,
}

fn default_hot_clients() -> u32 {
    4
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ExpectDef {
    pub lost_acked_writes: Option<u64>,
    pub linearizable: Option<bool>,
    pub sequence_ok: Option<bool>,
    pub live: Option<bool>,
    pub max_unavailability: Option<Dur>,
    pub min_availability: Option<f64>,
    /// Time after the last fault heals within which everything must be served again.
    pub liveness_bound: Option<Dur>,
    /// Streams: the stream checker passes.
    pub streams_ok: Option<bool>,
    /// Streams: no stream went longer than this without an acknowledged append.
    pub max_append_stall: Option<Dur>,
    /// Streams: whether re-replication copied data during the run.
    pub rereplicated: Option<bool>,
    /// Streams: every extent has three replicas in three zones at the end.
    pub replicated_at_end: Option<bool>,
    /// Table: most bad requests the service may accept (answer as if valid).
    pub bad_requests_accepted: Option<u64>,
    /// Table: fewest bad requests that must have been refused.
    pub min_bad_requests_refused: Option<u64>,
    /// Table: most reads, scans and final reads that may see a bad request's
    /// marker value or malformed key.
    pub bad_values_seen: Option<u64>,
    /// Table: fewest master takeovers from the first fault on (the first
    /// election at start-up is not one).
    pub min_master_takeovers: Option<u64>,
    /// Table: the longest any failover after a server died or lost its
    /// lease may take to recover (the report's `time_to_recover`).
    pub max_time_to_recover: Option<Dur>,
}

/// A fault verb at a time, after validation.
#[derive(Clone, Debug)]
pub struct TimedFault {
    pub at: Duration,
    pub fault: Fault,
    /// 1-based line of the `[[fault]]` entry that asked for it.
    pub line: usize,
}

#[derive(Clone, Debug)]
pub struct Hotspot {
    pub at: Duration,
    pub until: Duration,
    pub lo: u64,
    pub hi: u64,
    pub op: HotOp,
    pub rate: f64,
    pub clients: u32,
}

/// A validated scenario, ready to run.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub path: PathBuf,
    pub name: String,
    pub description: String,
    pub seed: u64,
    pub duration: Duration,
    pub topology: Topology,
    pub disk: DiskConfig,
    pub service: ServiceDef,
    pub workloads: Vec<WorkloadDef>,
    pub faults: Vec<TimedFault>,
    pub hotspots: Vec<Hotspot>,
    pub expect: ExpectDef,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = if self.field.is_empty() || self.field == "." { String::new() } else { format!("{}: ", self.field) };
        if self.line == 0 {
            write!(f, "{}: {field}{}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}:{}: {field}{}", self.file.display(), self.line, self.column, self.message)
        }
    }
}

impl std::error::Error for ScenarioError {}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = offset - before.iter().rposition(|&b| b == b'\n').map(|p| p + 1).unwrap_or(0) + 1;
    (line, col)
}

/// Files larger than this are refused before parsing.
pub const SCENARIO_BYTES_MAX: usize = 1 << 20;

/// Reads and validates a scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    #[allow(clippy::disallowed_methods)] // the CLI reads the user's scenario file from the real disk
    let bytes = std::fs::read(path).map_err(|e| ScenarioError {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        field: String::new(),
        message: format!("cannot read the scenario file: {e}"),
    })?;
    parse(path, &bytes)
}

/// Parses and validates scenario text; `path` is only used in messages.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Scenario, ScenarioError> {
    let whole = |message: String| ScenarioError { file: path.to_path_buf(), line: 0, column: 0, field: String::new(), message };
    if bytes.len() > SCENARIO_BYTES_MAX {
        return Err(whole(format!("the file is {} bytes; scenario files are at most {SCENARIO_BYTES_MAX}", bytes.len())));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let (line, column) = line_col(&String::from_utf8_lossy(&bytes[..e.valid_up_to()]), e.valid_up_to());
        ScenarioError {
            file: path.to_path_buf(),
            line,
            column,
            field: String::new(),
            message: "not a text file (invalid UTF-8): a scenario file is TOML text".into(),
        }
    })?;
    if text.contains('\0') {
        return Err(whole("not a text file (contains NUL bytes): a scenario file is TOML text".into()));
    }
    if text.trim().is_empty() {
        return Err(whole("the file is empty: a scenario needs at least name, description, duration and [topology]".into()));
    }
    let at = |offset: usize, field: &str, message: String| {
        let (line, column) = line_col(text, offset);
        ScenarioError { file: path.to_path_buf(), line, column, field: field.to_string(), message }
    };
    let de = toml::de::Deserializer::parse(text).map_err(|e| at(e.span().map(|s| s.start).unwrap_or(0), "", first_line(e.message())))?;
    let file: ScenarioFile = serde_path_to_error::deserialize(de).map_err(|e| {
        // serde_spanned wraps values in a private field: not the user's words.
        let field = e.path().to_string().replace(".$__serde_spanned_private_value", "").replace("$__serde_spanned_private_value", "");
        let inner = e.into_inner();
        at(inner.span().map(|s| s.start).unwrap_or(0), &field, first_line(inner.message()))
    })?;
    validate(path, text, file)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

fn validate(path: &Path, text: &str, f: ScenarioFile) -> Result<Scenario, ScenarioError> {
    let err = |span: std::ops::Range<usize>, field: String, message: String| {
        let (line, column) = line_col(text, span.start);
        ScenarioError { file: path.to_path_buf(), line, column, field, message }
    };
    let duration = f.duration.get_ref().0;
    if duration.is_zero() {
        return Err(err(f.duration.span(), "duration".into(), "the run must last longer than zero".into()));
    }

    // Topology.
    let zones = f.topology.zones.get_ref();
    if zones.is_empty() {
        return Err(err(f.topology.zones.span(), "topology.zones".into(), "at least one zone is needed".into()));
    }
    for (i, z) in zones.iter().enumerate() {
        if zones[..i].contains(z) {
            return Err(err(f.topology.zones.span(), "topology.zones".into(), format!("zone `{z}` is listed twice")));
        }
        if z.is_empty() || !z.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(err(f.topology.zones.span(), "topology.zones".into(), format!("zone name `{z}` must be letters, digits and `_`")));
        }
    }
    let loss = f.topology.packet_loss.as_ref().map(|l| *l.get_ref()).unwrap_or(0.0);
    if let Some(l) = f.topology.packet_loss.as_ref().filter(|_| !(0.0..=1.0).contains(&loss)) {
        return Err(err(l.span(), "topology.packet_loss".into(), format!("{loss} is not a probability in [0, 1]")));
    }
    let jitter = f.topology.jitter.0;
    let intra = LinkParams { latency: f.topology.intra_zone_latency.0, jitter, loss };
    let inter = LinkParams { latency: f.topology.inter_zone_latency.0, jitter, loss };
    let mut topology = Topology::new(zones, intra, inter);
    for (i, l) in f.topology.link.iter().enumerate() {
        let field = format!("topology.link[{i}]");
        let names = l.get_ref().zones.get_ref();
        let mut ids = Vec::new();
        for n in names {
            ids.push(topology.zone_by_name(n).ok_or_else(|| {
                err(l.get_ref().zones.span(), format!("{field}.zones"), format!("unknown zone `{n}` (zones: {})", zones.join(", ")))
            })?);
        }
        let loss = l.get_ref().loss.unwrap_or(loss);
        if !(0.0..=1.0).contains(&loss) {
            return Err(err(l.span(), format!("{field}.loss"), format!("{loss} is not a probability in [0, 1]")));
        }
        topology.set_link(ids[0], ids[1], LinkParams { latency: l.get_ref().latency.0, jitter: l.get_ref().jitter.map(|d| d.0).unwrap_or(jitter), loss });
    }
    let roles = f.topology.nodes.get_ref();
    if roles.values().all(|&c| c == 0) {
        return Err(err(f.topology.nodes.span(), "topology.nodes".into(), "no nodes: give each role a count per zone, e.g. { kv = 2, client = 1 }".into()));
    }
    for z in topology.zones().collect::<Vec<_>>() {
        for (role, &count) in roles {
            for _ in 0..count {
                topology.add_node(z, role);
            }
        }
    }
    if topology.nodes().len() > 4096 {
        return Err(err(f.topology.nodes.span(), "topology.nodes".into(), "more than 4096 nodes".into()));
    }
    let server_role = f.service.server_role();
    if topology.nodes_with_role(server_role).is_empty() {
        return Err(err(f.topology.nodes.span(), "topology.nodes".into(), format!("the service needs nodes of role `{server_role}`")));
    }
    if f.service.kind.on_streams() {
        let meta_role = f.service.meta_role();
        if topology.nodes_with_role(meta_role).is_empty() {
            return Err(err(f.topology.nodes.span(), "topology.nodes".into(), format!("the stream service needs metadata replicas: nodes of role `{meta_role}`")));
        }
        if topology.nodes_with_role(crate::runner::MANAGER_ROLE).is_empty() {
            return Err(err(f.topology.nodes.span(), "topology.nodes".into(), format!("the stream service needs stream managers: nodes of role `{}` (one per zone)", crate::runner::MANAGER_ROLE)));
        }
        let storage_role = if f.service.kind == ServiceKind::Table { STORAGE_ROLE } else { server_role };
        if topology.nodes_with_role(storage_role).len() < 3 {
            return Err(err(f.topology.nodes.span(), "topology.nodes".into(), format!("an extent has three replicas on three `{storage_role}` nodes: give at least three")));
        }
        if f.service.kind == ServiceKind::Table {
            for role in [MASTER_ROLE, PROXY_ROLE] {
                if topology.nodes_with_role(role).is_empty() {
                    return Err(err(f.topology.nodes.span(), "topology.nodes".into(), format!("the table service needs nodes of role `{role}`")));
                }
            }
            let max = engine::table::master::CREATE_PARTITIONS_MAX as u32;
            if f.service.partitions.is_some_and(|p| p == 0 || p > max) {
                return Err(err(0..0, "service.partitions".into(), format!("must be 1..={max}")));
            }
        }
        if f.service.extent_bytes == Some(0) {
            return Err(err(0..0, "service.extent_bytes".into(), "must be at least 1".into()));
        }
        for (name, d) in [("dead_after", f.service.dead_after), ("rereplicate_after", f.service.rereplicate_after)] {
            if d.is_some_and(|d| d.0.is_zero()) {
                return Err(err(0..0, format!("service.{name}"), "must be positive".into()));
            }
        }
    } else {
        for (name, set) in [
            ("meta_role", f.service.meta_role.is_some()),
            ("dead_after", f.service.dead_after.is_some()),
            ("rereplicate_after", f.service.rereplicate_after.is_some()),
            ("extent_bytes", f.service.extent_bytes.is_some()),
        ] {
            if set {
                return Err(err(0..0, format!("service.{name}"), "applies to the stream and table services only".into()));
            }
        }
    }
    if f.service.kind != ServiceKind::Table && f.service.partitions.is_some() {
        return Err(err(0..0, "service.partitions".into(), "applies to `kind = \"table\"` only".into()));
    }
    if f.service.group_commit_max == 0 {
        return Err(err(0..0, "service.group_commit_max".into(), "must be at least 1".into()));
    }

    // Expectations that only one service can meet.
    let e = &f.expect;
    for (name, set, kind) in [
        ("streams_ok", e.streams_ok.is_some(), ServiceKind::Stream),
        ("max_append_stall", e.max_append_stall.is_some(), ServiceKind::Stream),
        ("rereplicated", e.rereplicated.is_some(), ServiceKind::Stream),
        ("replicated_at_end", e.replicated_at_end.is_some(), ServiceKind::Stream),
        ("bad_requests_accepted", e.bad_requests_accepted.is_some(), ServiceKind::Table),
        ("min_bad_requests_refused", e.min_bad_requests_refused.is_some(), ServiceKind::Table),
        ("bad_values_seen", e.bad_values_seen.is_some(), ServiceKind::Table),
        ("min_master_takeovers", e.min_master_takeovers.is_some(), ServiceKind::Table),
        ("max_time_to_recover", e.max_time_to_recover.is_some(), ServiceKind::Table),
    ] {
        if set && f.service.kind != kind {
            return Err(err(0..0, format!("expect.{name}"), format!("applies to `kind = \"{}\"` scenarios only", format!("{kind:?}").to_lowercase())));
        }
    }

    // Disk.
    let mut disk = DiskConfig::default();
    let d = &f.disk;
    if let Some(s) = d.sector {
        if s == 0 || !s.is_power_of_two() {
            return Err(err(0..0, "disk.sector".into(), format!("{s} is not a power of two")));
        }
        disk.sector = s;
    }
    if let Some(c) = d.capacity_mib {
        disk.capacity = c << 20;
    }
    if let Some(b) = d.bandwidth_mib_s {
        if b == 0 {
            return Err(err(0..0, "disk.bandwidth_mib_s".into(), "must be positive".into()));
        }
        disk.bandwidth = b << 20;
    }
    disk.write_latency = d.write_latency.map(|x| x.0).unwrap_or(disk.write_latency);
    disk.read_latency = d.read_latency.map(|x| x.0).unwrap_or(disk.read_latency);
    disk.sync_latency = d.sync_latency.map(|x| x.0).unwrap_or(disk.sync_latency);
    if let Some(p) = d.crash_writeback {
        if !(0.0..=1.0).contains(&p) {
            return Err(err(0..0, "disk.crash_writeback".into(), format!("{p} is not a probability in [0, 1]")));
        }
        disk.crash_writeback = p;
    }

    // Workloads.
    let client_nodes = topology.nodes_with_role("client");
    let mut workloads = Vec::new();
    for (i, w) in f.workload.iter().enumerate() {
        let field = format!("workload[{i}]");
        let wd = w.get_ref();
        let bad = |what: &str, msg: String| Err(err(w.span(), format!("{field}.{what}"), msg));
        if client_nodes.is_empty() {
            return bad("clients", "workloads run on nodes of role `client`: add `client = 1` to [topology.nodes]".into());
        }
        if !(wd.rate.is_finite() && wd.rate > 0.0) {
            return bad("rate", format!("{} is not a positive rate (operations per second)", wd.rate));
        }
        if wd.clients == 0 || wd.clients > 10_000 {
            return bad("clients", format!("{} clients: use 1 to 10000", wd.clients));
        }
        if wd.keys == 0 {
            return bad("keys", "at least one key is needed".into());
        }
        if wd.distribution == Distribution::Zipf && !(wd.zipf_theta > 0.0 && wd.zipf_theta.is_finite()) {
            return bad("zipf_theta", format!("{} must be positive", wd.zipf_theta));
        }
        let weights = wd.mix.weights();
        if weights.iter().any(|(_, x)| !(x.is_finite() && *x >= 0.0)) || weights.iter().map(|(_, x)| x).sum::<f64>() <= 0.0 {
            return bad("mix", "weights must be non-negative and not all zero".into());
        }
        if wd.timeout.0.is_zero() {
            return bad("timeout", "must be positive".into());
        }
        let wanted = match f.service.kind {
            ServiceKind::Minikv => WorkloadKind::Kv,
            ServiceKind::Stream => WorkloadKind::Stream,
            ServiceKind::Table => WorkloadKind::Kv,
        };
        if wd.kind != wanted {
            return bad("kind", format!("a {:?} workload cannot run against the {:?} service", wd.kind, f.service.kind).to_lowercase());
        }
        let allowed: &[&str] = match wd.kind {
            WorkloadKind::Kv => &["read", "write", "cas", "delete", "append", "scan"],
            WorkloadKind::Stream => &["read", "append", "open"],
        };
        if let Some((name, _)) = weights.iter().find(|(n, w)| *w > 0.0 && !allowed.contains(n)) {
            return bad("mix", format!("`{name}` is not an operation of a {:?} workload (use {})", wd.kind, allowed.join(", ")).to_lowercase());
        }
        if wd.kind == WorkloadKind::Stream && wd.value_size < 16 {
            return bad("value_size", format!("{} bytes: a stream append carries at least 16 (its id and brackets)", wd.value_size));
        }
        if !(0.0..=1.0).contains(&wd.bad_requests) {
            return bad("bad_requests", format!("{} is not a fraction in [0, 1]", wd.bad_requests));
        }
        if wd.bad_requests > 0.0 && f.service.kind != ServiceKind::Table {
            return bad("bad_requests", "bad requests (refused by the table store's proxies) apply to `kind = \"table\"` scenarios only".into());
        }
        if wd.columns > 0 && f.service.kind != ServiceKind::Table {
            return bad("columns", "wide rows (columns beside the value) apply to `kind = \"table\"` scenarios only".into());
        }
        if wd.columns as usize > engine::table::COLUMNS_MAX {
            return bad("columns", format!("{} columns over the table store's {} per row", wd.columns, engine::table::COLUMNS_MAX));
        }
        let row_bytes = crate::tableload::wide_row_bytes(wd.value_size as usize, wd.columns);
        if wd.columns > 0 && row_bytes > engine::table::ROW_BYTES_MAX {
            return bad("columns", format!("{} columns of {} bytes make rows of up to {row_bytes} bytes, over the table store's {}", wd.columns, wd.value_size, engine::table::ROW_BYTES_MAX));
        }
        if workloads.iter().any(|o: &WorkloadDef| o.columns != wd.columns) {
            return bad("columns", "the workloads of a scenario drive one table: give them the same `columns`".into());
        }
        if workloads.iter().any(|o: &WorkloadDef| o.name == wd.name) {
            return bad("name", format!("two workloads are named `{}`", wd.name));
        }
        workloads.push(wd.clone());
    }
    if f.expect.min_bad_requests_refused.is_some_and(|n| n > 0) && !workloads.iter().any(|w| w.bad_requests > 0.0) {
        return Err(err(0..0, "expect.min_bad_requests_refused".into(), "no workload sends bad requests: set `bad_requests` in a [[workload]]".into()));
    }

    // Hotspots.
    if let (Some(h), ServiceKind::Stream) = (f.hotspot.first(), f.service.kind) {
        return Err(err(h.span(), "hotspot[0]".into(), "hotspots add load to key-value workloads; the stream service has none".into()));
    }
    let mut hotspots = Vec::new();
    for (i, h) in f.hotspot.iter().enumerate() {
        let field = format!("hotspot[{i}]");
        let hd = h.get_ref();
        let keys = workloads.first().map(|w| w.keys).unwrap_or(0);
        if keys == 0 {
            return Err(err(h.span(), field, "a hotspot adds load to the first workload's keys: define a [[workload]]".into()));
        }
        let (lo, hi) = match (hd.key, hd.keys) {
            (Some(k), None) => (k, k),
            (None, Some([lo, hi])) if lo <= hi => (lo, hi),
            (None, Some(_)) => return Err(err(h.span(), format!("{field}.keys"), "the range must be [low, high] with low <= high".into())),
            _ => return Err(err(h.span(), field, "give exactly one of `key` or `keys`".into())),
        };
        if hi >= keys {
            return Err(err(h.span(), format!("{field}.key"), format!("key {hi} is outside the workload's {keys} keys")));
        }
        let rate = *hd.rate.get_ref();
        if !(rate.is_finite() && rate > 0.0) {
            return Err(err(hd.rate.span(), format!("{field}.rate"), format!("{rate} is not a positive rate")));
        }
        let (at, until) = (hd.at.get_ref().0, hd.until.get_ref().0);
        if until <= at {
            return Err(err(hd.until.span(), format!("{field}.until"), "must be after `at`".into()));
        }
        if until > duration {
            return Err(err(hd.until.span(), format!("{field}.until"), format!("{} is after the end of the run ({})", fmt_duration(until), fmt_duration(duration))));
        }
        if hd.clients == 0 {
            return Err(err(h.span(), format!("{field}.clients"), "at least one client".into()));
        }
        hotspots.push(Hotspot { at, until, lo, hi, op: hd.op, rate, clients: hd.clients });
    }

    // Faults.
    let mut faults = Vec::new();
    for (i, fd) in f.fault.iter().enumerate() {
        let (line, _) = line_col(text, fd.span().start);
        let (on, off) = fault_pair(&topology, fd.get_ref(), i, f.service.kind, &err)?;
        let at = fd.get_ref().at.get_ref().0;
        if at > duration {
            return Err(err(fd.get_ref().at.span(), format!("fault[{i}].at"), format!("{} is after the end of the run ({})", fmt_duration(at), fmt_duration(duration))));
        }
        faults.push(TimedFault { at, fault: on, line });
        if let Some(until) = &fd.get_ref().until {
            let u = until.get_ref().0;
            if u <= at {
                return Err(err(until.span(), format!("fault[{i}].until"), "must be after `at`".into()));
            }
            if u > duration {
                return Err(err(until.span(), format!("fault[{i}].until"), format!("{} is after the end of the run ({})", fmt_duration(u), fmt_duration(duration))));
            }
            let off = off.ok_or_else(|| err(until.span(), format!("fault[{i}].until"), format!("`{}` has no inverse to apply at `until`", fd.get_ref().verb.get_ref())))?;
            faults.push(TimedFault { at: u, fault: off, line });
        }
    }
    // Stable: equal times keep file order.
    faults.sort_by_key(|f| f.at);
    replay(&topology, &faults).map_err(|(idx, msg)| {
        let tf = &faults[idx];
        ScenarioError { file: path.to_path_buf(), line: tf.line, column: 1, field: "fault".into(), message: format!("at {}: {} — {msg}", fmt_duration(tf.at), tf.fault) }
    })?;

    Ok(Scenario {
        path: path.to_path_buf(),
        name: f.name,
        description: f.description,
        seed: f.seed,
        duration,
        topology,
        disk,
        service: f.service,
        workloads,
        faults,
        hotspots,
        expect: f.expect,
    })
}

type ErrFn<'a> = dyn Fn(std::ops::Range<usize>, String, String) -> ScenarioError + 'a;

/// The verb of a `[[fault]]` entry and, for entries with `until`, its inverse.
/// The zone-down target that names, when the fault fires, the zone whose
/// metadata replica leads (resolved by the runner).
pub const META_LEADER: &str = "meta-leader";
/// The zone-down target that names, when the fault fires, the zone of the
/// active table master (the latest master takeover; resolved by the runner).
pub const MASTER_ZONE: &str = "master-zone";

/// Whether a zone name is resolved only when its fault fires.
pub fn is_dynamic_zone(zone: &str) -> bool {
    zone == META_LEADER || zone == MASTER_ZONE
}

fn fault_pair(topo: &Topology, fd: &FaultDef, i: usize, service: ServiceKind, err: &ErrFn<'_>) -> Result<(Fault, Option<Fault>), ScenarioError> {
    let verb = fd.verb.get_ref().as_str();
    let field = |s: &str| format!("fault[{i}].{s}");
    let zone_names: Vec<&str> = topo.zones().map(|z| topo.zone_name(z)).collect();
    let target = |want_zone: bool, want_node: bool| -> Result<String, ScenarioError> {
        let t = fd.target.as_ref().ok_or_else(|| err(fd.verb.span(), field("target"), format!("`{verb}` needs a `target`")))?;
        let name = t.get_ref();
        let is_zone = topo.zone_by_name(name).is_some();
        let is_node = topo.node_by_name(name).is_some();
        if (want_zone && is_zone) || (want_node && is_node) {
            return Ok(name.clone());
        }
        let what = match (want_zone, want_node) {
            (true, false) => format!("unknown zone `{name}` (zones: {})", zone_names.join(", ")),
            (false, true) => format!("unknown node `{name}` (nodes are named zone-role-index, e.g. `{}`)", topo.nodes()[0].name),
            _ => format!("unknown zone or node `{name}`"),
        };
        Err(err(t.span(), field("target"), what))
    };
    let set = |which: &Option<Spanned<Names>>, name: &str| -> Result<Vec<String>, ScenarioError> {
        let Some(s) = which else { return Ok(Vec::new()) };
        let v = s.get_ref().to_vec();
        for n in &v {
            if topo.zone_by_name(n).is_none() && topo.node_by_name(n).is_none() {
                return Err(err(s.span(), field(name), format!("unknown zone or node `{n}` (zones: {})", zone_names.join(", "))));
            }
        }
        Ok(v)
    };
    let prob = |p: &Option<Spanned<f64>>, name: &str| -> Result<f64, ScenarioError> {
        match p {
            None => Ok(0.0),
            Some(s) if (0.0..=1.0).contains(s.get_ref()) => Ok(*s.get_ref()),
            Some(s) => Err(err(s.span(), field(name), format!("{} is not a probability in [0, 1]", s.get_ref()))),
        }
    };
    let direction = match fd.direction.as_ref().map(|d| (d.get_ref().as_str(), d.span())) {
        None | Some(("both", _)) => Direction::Both,
        Some(("one-way", _)) => Direction::OneWay,
        Some((other, span)) => return Err(err(span, field("direction"), format!("unknown direction `{other}` (both, one-way)"))),
    };
    let (a, b) = (set(&fd.from, "from")?, set(&fd.to, "to")?);
    Ok(match verb {
        "zone-down" if fd.target.as_ref().is_some_and(|t| is_dynamic_zone(t.get_ref())) => {
            let dynamic = fd.target.as_ref().map(|t| t.get_ref().as_str()).unwrap_or_default();
            let span = fd.target.as_ref().map_or_else(|| fd.verb.span(), |t| t.span());
            if dynamic == META_LEADER && !service.on_streams() {
                return Err(err(span, field("target"), format!("`{META_LEADER}` names the zone of the metadata leader: the stream service only (and the table service on it)")));
            }
            if dynamic == MASTER_ZONE && service != ServiceKind::Table {
                return Err(err(span, field("target"), format!("`{MASTER_ZONE}` names the zone of the active table master: `kind = \"table\"` scenarios only")));
            }
            let mode = match fd.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
                None | Some(("crash", _)) => ZoneMode::Crash,
                Some(("isolate", _)) => ZoneMode::Isolate,
                Some((other, span)) => return Err(err(span, field("mode"), format!("unknown mode `{other}` (crash, isolate)"))),
            };
            (Fault::ZoneDown { zone: dynamic.into(), mode }, Some(Fault::ZoneUp { zone: dynamic.into() }))
        }
        "zone-down" => {
            let zone = target(true, false)?;
            let mode = match fd.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
                None | Some(("crash", _)) => ZoneMode::Crash,
                Some(("isolate", _)) => ZoneMode::Isolate,
                Some((other, span)) => return Err(err(span, field("mode"), format!("unknown mode `{other}` (crash, isolate)"))),
            };
            (Fault::ZoneDown { zone: zone.clone(), mode }, Some(Fault::ZoneUp { zone }))
        }
        "zone-up" => (Fault::ZoneUp { zone: target(true, false)? }, None),
        "node-crash" => {
            let node = target(false, true)?;
            (Fault::NodeCrash { node: node.clone() }, Some(Fault::NodeRestart { node }))
        }
        "node-restart" => (Fault::NodeRestart { node: target(false, true)? }, None),
        "node-pause" => {
            let node = target(false, true)?;
            (Fault::NodePause { node: node.clone() }, Some(Fault::NodeResume { node }))
        }
        "node-resume" => (Fault::NodeResume { node: target(false, true)? }, None),
        "partition" => (Fault::Partition { a: a.clone(), b: b.clone(), direction }, Some(Fault::Heal { a, b, direction })),
        "heal" => (Fault::Heal { a, b, direction }, None),
        "clog" => (Fault::Clog { a: a.clone(), b: b.clone() }, Some(Fault::Unclog { a, b })),
        "unclog" => (Fault::Unclog { a, b }, None),
        "loss" => {
            let rate = fd.rate.as_ref().ok_or_else(|| err(fd.verb.span(), field("rate"), "`loss` needs a `rate`".into()))?;
            let r = prob(&Some(rate.clone()), "rate")?;
            (Fault::Loss { a: a.clone(), b: b.clone(), rate: r }, Some(Fault::LossOff { a, b }))
        }
        "loss-off" => (Fault::LossOff { a, b }, None),
        "latency-spike" => {
            let extra = fd.extra.ok_or_else(|| err(fd.verb.span(), field("extra"), "`latency-spike` needs `extra` (e.g. \"5ms\")".into()))?.0;
            (Fault::LatencySpike { a: a.clone(), b: b.clone(), extra }, Some(Fault::LatencyClear { a, b }))
        }
        "latency-clear" => (Fault::LatencyClear { a, b }, None),
        "disk-faults" => {
            let node = target(false, true)?;
            let faults = DiskFaults {
                read_error_rate: prob(&fd.read_error_rate, "read_error_rate")?,
                write_error_rate: prob(&fd.write_error_rate, "write_error_rate")?,
                bitflip_read_rate: prob(&fd.bitflip_read_rate, "bitflip_read_rate")?,
                bitflip_write_rate: prob(&fd.bitflip_write_rate, "bitflip_write_rate")?,
                misdirect_rate: prob(&fd.misdirect_rate, "misdirect_rate")?,
                full: fd.full.unwrap_or(false),
                slow_factor: fd.slow_factor.unwrap_or(1),
            };
            if faults == (DiskFaults { slow_factor: 1, ..DiskFaults::default() }) {
                return Err(err(fd.verb.span(), field("verb"), "`disk-faults` sets no fault: give a rate, `full` or `slow_factor`".into()));
            }
            (Fault::DiskFaultsOn { node: node.clone(), faults }, Some(Fault::DiskFaultsOff { node }))
        }
        "disk-faults-off" => (Fault::DiskFaultsOff { node: target(false, true)? }, None),
        "clock-offset" => {
            let node = target(false, true)?;
            let offset = fd.offset.ok_or_else(|| err(fd.verb.span(), field("offset"), "`clock-offset` needs `offset` (e.g. \"-200ms\")".into()))?;
            (Fault::ClockOffset { node: node.clone(), offset_ns: offset.0 }, Some(Fault::ClockReset { node }))
        }
        "clock-drift" => {
            let node = target(false, true)?;
            let ppm = fd.ppm.as_ref().ok_or_else(|| err(fd.verb.span(), field("ppm"), "`clock-drift` needs `ppm`".into()))?;
            if *ppm.get_ref() <= -1_000_000 {
                return Err(err(ppm.span(), field("ppm"), "a clock cannot stop or run backwards: ppm must exceed -1000000".into()));
            }
            (Fault::ClockDrift { node: node.clone(), ppm: *ppm.get_ref() }, Some(Fault::ClockReset { node }))
        }
        "clock-reset" => (Fault::ClockReset { node: target(false, true)? }, None),
        other => {
            return Err(err(
                fd.verb.span(),
                field("verb"),
                format!(
                    "unknown verb `{other}` (zone-down, zone-up, node-crash, node-restart, node-pause, node-resume, partition, heal, clog, unclog, \
                     loss, loss-off, latency-spike, latency-clear, disk-faults, disk-faults-off, clock-offset, clock-drift, clock-reset)"
                ),
            ))
        }
    })
}

/// Replays the fault timeline on a model of the world's state and returns
/// the index of the first contradictory action, with why.
fn replay(topo: &Topology, faults: &[TimedFault]) -> Result<(), (usize, String)> {
    use std::collections::BTreeSet;
    let mut zone_down: BTreeMap<String, ZoneMode> = BTreeMap::new();
    let mut node_down: BTreeSet<String> = BTreeSet::new();
    let mut paused: BTreeSet<String> = BTreeSet::new();
    let mut rules: BTreeSet<String> = BTreeSet::new();
    let key = |kind: &str, a: &[String], b: &[String]| format!("{kind}:{}|{}", a.join(","), b.join(","));
    let zone_nodes = |z: &str| -> Vec<String> {
        topo.zone_by_name(z).map(|id| topo.nodes_in_zone(id).into_iter().map(|n| topo.node(n).name.clone()).collect()).unwrap_or_default()
    };
    let zone_of = |n: &str| topo.node_by_name(n).map(|id| topo.zone_name(topo.zone_of(id)).to_string()).unwrap_or_default();
    for (i, tf) in faults.iter().enumerate() {
        let bad = |why: String| Err((i, why));
        match &tf.fault {
            Fault::ZoneDown { zone, mode } => {
                if zone_down.contains_key(zone) {
                    return bad(format!("zone {zone} is already down"));
                }
                // A dynamic zone (the metadata leader's, the master's) is
                // known only when the fault fires: it may be any zone, so it
                // may not overlap another zone fault, nor a crashed or paused
                // node.
                let dynamic = if is_dynamic_zone(zone) && !zone_down.is_empty() { Some(zone) } else { zone_down.keys().find(|z| is_dynamic_zone(z)) };
                if let Some(d) = dynamic {
                    return bad(format!("`{d}` may be any zone: it cannot be down together with another zone"));
                }
                if is_dynamic_zone(zone) && *mode == ZoneMode::Crash {
                    if let Some(n) = node_down.iter().chain(paused.iter()).next() {
                        return bad(format!("`{zone}` may be any zone: node {n} is down or paused; bring it back first"));
                    }
                }
                if *mode == ZoneMode::Crash {
                    if let Some(n) = zone_nodes(zone).iter().find(|n| node_down.contains(*n)) {
                        return bad(format!("node {n} of the zone is already crashed; restart it first"));
                    }
                    if let Some(n) = zone_nodes(zone).iter().find(|n| paused.contains(*n)) {
                        return bad(format!("node {n} of the zone is paused; resume it first"));
                    }
                }
                zone_down.insert(zone.clone(), *mode);
            }
            Fault::ZoneUp { zone } => {
                if zone_down.remove(zone).is_none() {
                    return bad(format!("zone {zone} is not down"));
                }
            }
            Fault::NodeCrash { node } => {
                if let Some(d) = zone_down.iter().find(|(z, m)| is_dynamic_zone(z) && **m == ZoneMode::Crash).map(|(z, _)| z) {
                    return bad(format!("`{d}` is down and may be the zone of {node}: bring it back first"));
                }
                if node_down.contains(node) || zone_down.get(&zone_of(node)) == Some(&ZoneMode::Crash) {
                    return bad(format!("node {node} is already down"));
                }
                if paused.contains(node) {
                    return bad(format!("node {node} is paused; resume it first"));
                }
                node_down.insert(node.clone());
            }
            Fault::NodeRestart { node } => {
                if !node_down.remove(node) {
                    return bad(format!("node {node} is not crashed"));
                }
            }
            Fault::NodePause { node } => {
                if let Some(d) = zone_down.iter().find(|(z, m)| is_dynamic_zone(z) && **m == ZoneMode::Crash).map(|(z, _)| z) {
                    return bad(format!("`{d}` is down and may be the zone of {node}: bring it back first"));
                }
                if node_down.contains(node) || zone_down.get(&zone_of(node)) == Some(&ZoneMode::Crash) {
                    return bad(format!("node {node} is down"));
                }
                if !paused.insert(node.clone()) {
                    return bad(format!("node {node} is already paused"));
                }
            }
            Fault::NodeResume { node } => {
                if !paused.remove(node) {
                    return bad(format!("node {node} is not paused"));
                }
            }
            Fault::Partition { a, b, .. } => {
                if !rules.insert(key("partition", a, b)) {
                    return bad("the same partition is already in place".into());
                }
            }
            Fault::Heal { a, b, .. } => {
                if !rules.remove(&key("partition", a, b)) {
                    return bad("no such partition to heal".into());
                }
            }
            Fault::Clog { a, b } => {
                if !rules.insert(key("clog", a, b)) {
                    return bad("the link is already clogged".into());
                }
            }
            Fault::Unclog { a, b } => {
                if !rules.remove(&key("clog", a, b)) {
                    return bad("the link is not clogged".into());
                }
            }
            Fault::Loss { a, b, .. } => {
                if !rules.insert(key("loss", a, b)) {
                    return bad("a loss rule is already in place there".into());
                }
            }
            Fault::LossOff { a, b } => {
                if !rules.remove(&key("loss", a, b)) {
                    return bad("no loss rule there".into());
                }
            }
            Fault::LatencySpike { a, b, .. } => {
                if !rules.insert(key("spike", a, b)) {
                    return bad("a latency spike is already in place there".into());
                }
            }
            Fault::LatencyClear { a, b } => {
                if !rules.remove(&key("spike", a, b)) {
                    return bad("no latency spike there".into());
                }
            }
            Fault::DiskFaultsOn { node, .. } => {
                if !rules.insert(format!("disk:{node}")) {
                    return bad(format!("disk faults are already on for {node}"));
                }
            }
            Fault::CpuSlow { target, .. } => {
                if !rules.insert(format!("cpu:{}", target.join(","))) {
                    return bad("those CPUs are already slowed".into());
                }
            }
            Fault::CpuRestore { target } => {
                if !rules.remove(&format!("cpu:{}", target.join(","))) {
                    return bad("those CPUs are not slowed".into());
                }
            }
            Fault::DiskFaultsOff { node } => {
                if !rules.remove(&format!("disk:{node}")) {
                    return bad(format!("disk faults are not on for {node}"));
                }
            }
            Fault::ClockOffset { node, .. } | Fault::ClockDrift { node, .. } => {
                if !rules.insert(format!("clock:{node}")) {
                    return bad(format!("the clock of {node} is already skewed; reset it first"));
                }
            }
            Fault::ClockReset { node } => {
                if !rules.remove(&format!("clock:{node}")) {
                    return bad(format!("the clock of {node} is not skewed"));
                }
            }
        }
    }
    Ok(())
}

/// The windows of a fault timeline: each fault that has an inverse, by its
/// index in `faults`, with the index of the entry that undid it (its
/// `until`, or a later entry with the inverse verb), `None` if nothing did.
/// An inverse undoes the oldest open fault it is the inverse of.
pub fn fault_windows(faults: &[TimedFault]) -> Vec<(usize, Option<usize>)> {
    let mut windows: Vec<(usize, Option<usize>)> = Vec::new();
    let mut open: Vec<(usize, Fault)> = Vec::new();
    for (i, tf) in faults.iter().enumerate() {
        match inverse(&tf.fault) {
            Some(inv) => {
                open.push((windows.len(), inv));
                windows.push((i, None));
            }
            None => {
                if let Some(pos) = open.iter().position(|(_, o)| o == &tf.fault) {
                    let (w, _) = open.remove(pos);
                    windows[w].1 = Some(i);
                }
            }
        }
    }
    windows
}

/// Inverse verbs that heal whatever the timeline leaves in place at its
/// end, so the liveness phase starts from a healed world.
pub fn heal_all(faults: &[TimedFault]) -> Vec<Fault> {
    fault_windows(faults).into_iter().filter(|(_, off)| off.is_none()).filter_map(|(on, _)| inverse(&faults[on].fault)).collect()
}

fn inverse(f: &Fault) -> Option<Fault> {
    Some(match f {
        Fault::ZoneDown { zone, .. } => Fault::ZoneUp { zone: zone.clone() },
        Fault::NodeCrash { node } => Fault::NodeRestart { node: node.clone() },
        Fault::NodePause { node } => Fault::NodeResume { node: node.clone() },
        Fault::Partition { a, b, direction } => Fault::Heal { a: a.clone(), b: b.clone(), direction: *direction },
        Fault::Clog { a, b } => Fault::Unclog { a: a.clone(), b: b.clone() },
        Fault::Loss { a, b, .. } => Fault::LossOff { a: a.clone(), b: b.clone() },
        Fault::LatencySpike { a, b, .. } => Fault::LatencyClear { a: a.clone(), b: b.clone() },
        Fault::DiskFaultsOn { node, .. } => Fault::DiskFaultsOff { node: node.clone() },
        Fault::ClockOffset { node, .. } | Fault::ClockDrift { node, .. } => Fault::ClockReset { node: node.clone() },
        _ => return None,
    })
}
