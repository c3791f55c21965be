//! The scenario file format: the shapes TOML text is read into, field by
//! field, before validation. Durations are written `150us`, `2ms`, `30s`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;
use sim::time::parse_duration;

/// A duration written as `150us`, `2ms`, `30s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        duration_text(&s).map(Dur).map_err(serde::de::Error::custom)
    }
}

/// A duration as written, refused whole when it is too long to be one
/// (the parser's message quotes it).
fn duration_text(s: &str) -> Result<Duration, String> {
    let n = s.chars().count();
    if n > super::limits::DURATION_CHARS_MAX {
        return Err(format!("a duration of {n} characters (e.g. \"150us\", at most {})", super::limits::DURATION_CHARS_MAX));
    }
    parse_duration(s)
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
        let d = duration_text(rest).map_err(serde::de::Error::custom)?;
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
    /// Table scenarios: quotas of the instances (traffic control).
    #[serde(default)]
    pub quota: Vec<Spanned<QuotaDef>>,
    #[serde(default)]
    pub expect: ExpectDef,
    pub resources: Option<Spanned<ResourcesDef>>,
}

/// `[resources]`: the CPU of each role's nodes and what work costs.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ResourcesDef {
    /// Cores of each role's nodes, e.g. `{ table = 2 }` (default 4).
    #[serde(default)]
    pub cores: BTreeMap<String, u32>,
    /// Data jobs that may wait for a core on each role's nodes (default
    /// 1024); one more is refused at once ("busy").
    #[serde(default)]
    pub queue_max: BTreeMap<String, u32>,
    /// CPU time of each kind of work the service charges, by name, e.g.
    /// `server_read = "30us"` (the kinds and defaults are the service's).
    #[serde(default)]
    pub costs: BTreeMap<String, Dur>,
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
    /// Spare nodes of each role in every zone, beside `nodes`: deployed
    /// but started only by a `node-add` (only roles whose service takes
    /// new nodes while it runs, e.g. the table service's servers).
    pub spare: Option<Spanned<BTreeMap<String, u32>>>,
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
    /// Two different zones (validation refuses any other count).
    pub zones: Spanned<Vec<String>>,
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

/// The service under test and its knobs: one `[service]` table for every
/// kind, so that one parser names the line of any mistake; each kind says
/// which of the optional fields it reads and checks their values
/// ([`crate::scenario::ServiceRules`]).
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ServiceDef {
    /// The service kind (one of the deployments' names).
    #[serde(default = "default_kind", deserialize_with = "kind_name")]
    pub kind: Spanned<String>,
    /// The role whose nodes serve data (each kind has its default).
    pub server_role: Option<String>,
    /// The role of the metadata replicas (default `meta`).
    pub meta_role: Option<String>,
    /// Records one group commit may carry (minikv; every kind takes it).
    #[serde(default = "default_group_commit")]
    pub group_commit_max: usize,
    /// How long a storage node stays silent before it is declared dead.
    pub dead_after: Option<Dur>,
    /// The grace period before a dead node's extents are re-replicated.
    pub rereplicate_after: Option<Dur>,
    /// Bytes after which a writer seals its extent and opens the next.
    pub extent_bytes: Option<u64>,
    /// Range partitions of the workload's table.
    pub partitions: Option<u32>,
    /// Table: the lease on partitions and on the master role.
    pub lease: Option<Dur>,
    /// Bytes of a table partition's memtable before it is flushed.
    pub memtable_bytes: Option<u64>,
    /// Bytes of a table partition's block cache (0: none).
    pub block_cache_bytes: Option<u64>,
    /// Table: reads per second above which a key is hot.
    pub hotkey_qps: Option<u64>,
    /// Table: how stale a hot key's read from a HotZone may be.
    pub hot_staleness: Option<Dur>,
    /// Table: how long the first put of a hot key waits for others to
    /// combine with.
    pub combine_period: Option<Dur>,
    /// Table: most puts of a hot key in one combined batch.
    pub combine_max: Option<u64>,
    /// A bug the service plants on purpose (minikv: `ack-before-sync`;
    /// table: `hotzone-stale`, `combine-early-ack`), to
    /// show that the checkers find it.
    pub planted_bug: Option<String>,
}

/// The service kind of a scenario without `[service]` or without `kind`.
pub const DEFAULT_SERVICE: &str = "minikv";

fn default_kind() -> Spanned<String> {
    Spanned::new(0..0, DEFAULT_SERVICE.to_string())
}

/// A service kind is read as the variant of an enum whose variants the
/// deployments name (validation checks the name against them).
fn kind_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Spanned<String>, D::Error> {
    struct Name(String);
    impl<'de> Deserialize<'de> for Name {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = Name;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a service kind")
                }
                fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<Name, A::Error> {
                    use serde::de::VariantAccess;
                    let (name, variant) = data.variant::<String>()?;
                    variant.unit_variant()?;
                    Ok(Name(name))
                }
            }
            d.deserialize_enum("ServiceKind", &[], Visitor)
        }
    }
    let name = Spanned::<Name>::deserialize(d)?;
    Ok(Spanned::new(name.span(), name.into_inner().0))
}

impl Default for ServiceDef {
    fn default() -> Self {
        ServiceDef {
            kind: default_kind(),
            server_role: None,
            meta_role: None,
            group_commit_max: default_group_commit(),
            dead_after: None,
            rereplicate_after: None,
            extent_bytes: None,
            partitions: None,
            lease: None,
            memtable_bytes: None,
            block_cache_bytes: None,
            hotkey_qps: None,
            hot_staleness: None,
            combine_period: None,
            combine_max: None,
            planted_bug: None,
        }
    }
}

impl ServiceDef {
    /// The service kind.
    pub fn kind(&self) -> &str {
        self.kind.get_ref()
    }

    /// The role whose nodes serve data: `server_role`, or `default`.
    pub fn server_role_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.server_role.as_deref().unwrap_or(default)
    }

    /// The optional fields a kind may or may not read, in file order, and
    /// whether the scenario sets each.
    pub fn optional_fields(&self) -> [(&'static str, bool); 13] {
        [
            ("meta_role", self.meta_role.is_some()),
            ("dead_after", self.dead_after.is_some()),
            ("rereplicate_after", self.rereplicate_after.is_some()),
            ("extent_bytes", self.extent_bytes.is_some()),
            ("partitions", self.partitions.is_some()),
            ("lease", self.lease.is_some()),
            ("memtable_bytes", self.memtable_bytes.is_some()),
            ("block_cache_bytes", self.block_cache_bytes.is_some()),
            ("hotkey_qps", self.hotkey_qps.is_some()),
            ("hot_staleness", self.hot_staleness.is_some()),
            ("combine_period", self.combine_period.is_some()),
            ("combine_max", self.combine_max.is_some()),
            ("planted_bug", self.planted_bug.is_some()),
        ]
    }
}

fn default_group_commit() -> usize {
    64
}

/// The role of the nodes workloads run on (every service's scenarios have them).
pub const CLIENT_ROLE: &str = "client";

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
    /// Open loop: operations arrive on schedule whatever the answers. Each
    /// client process keeps up to `outstanding_max` operations open (each
    /// its own history process); an arrival that finds them all open is
    /// shed at the client and counted as offered but not sent. Latency is
    /// then measured from the scheduled arrival, so overload shows in the
    /// figures instead of lowering the offered rate (closed loop, the
    /// default, issues the next operation only after the last answer).
    #[serde(default)]
    pub open_loop: bool,
    #[serde(default = "default_outstanding_max")]
    pub outstanding_max: u32,
    /// Table scenarios: the instance (tenant) the workload's rows belong
    /// to; each instance has its own table, and its rows keys begin with
    /// `{instance}.`. Absent: the scenario's main instance.
    pub instance: Option<String>,
}

/// The most operations one open-loop client process keeps open.
pub const OUTSTANDING_MAX_LIMIT: u32 = 1024;

fn default_outstanding_max() -> u32 {
    16
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
    /// `cpu-slow`: the fraction of its speed a CPU keeps, in (0, 1).
    pub speed: Option<Spanned<f64>>,
}

impl FaultDef {
    /// The fields beside `at`, `until` and `verb`, in file order, and
    /// whether the entry sets each (a verb refuses those it does not read).
    pub fn optional_fields(&self) -> [(&'static str, bool); 17] {
        [
            ("target", self.target.is_some()),
            ("from", self.from.is_some()),
            ("to", self.to.is_some()),
            ("mode", self.mode.is_some()),
            ("direction", self.direction.is_some()),
            ("rate", self.rate.is_some()),
            ("extra", self.extra.is_some()),
            ("offset", self.offset.is_some()),
            ("ppm", self.ppm.is_some()),
            ("read_error_rate", self.read_error_rate.is_some()),
            ("write_error_rate", self.write_error_rate.is_some()),
            ("bitflip_read_rate", self.bitflip_read_rate.is_some()),
            ("bitflip_write_rate", self.bitflip_write_rate.is_some()),
            ("misdirect_rate", self.misdirect_rate.is_some()),
            ("full", self.full.is_some()),
            ("slow_factor", self.slow_factor.is_some()),
            ("speed", self.speed.is_some()),
        ]
    }
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
    /// Table scenarios: the instance whose first workload's keys it loads
    /// (absent: the main instance's).
    pub instance: Option<Spanned<String>>,
}

/// `[[quota]]`: one limit of an instance (or of its table) on one kind of
/// operation, set when the instance is created, or from `at` on (the
/// `set-quota` change, made through the master while the run goes on).
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct QuotaDef {
    /// The instance: a workload's `instance`, or `main`.
    pub instance: Spanned<String>,
    /// Limit the instance's table only (absent: the whole instance).
    #[serde(default)]
    pub table: bool,
    /// `read`, `write` or `scan`.
    pub op: Spanned<String>,
    /// What `rate` and `burst` count: `requests` (default), `bytes` (of
    /// row data: a write's when admitted, a read's or scan's once
    /// answered) or `rows`.
    pub unit: Option<Spanned<String>>,
    /// Units per second over all proxies.
    pub rate: Spanned<u64>,
    /// Requests admitted above the rate at any moment (default a tenth of
    /// a second's worth, at least 1).
    pub burst: Option<Spanned<u64>>,
    /// When the limit takes effect (absent: at creation).
    pub at: Option<Spanned<Dur>>,
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
    /// Streams (and the table store's layer): fewest replicas repaired in
    /// place.
    pub min_replicas_repaired: Option<u64>,
    /// Streams (and the table store's layer): every replica of every sealed
    /// extent holds the same bytes, read whole at the end of the run
    /// (default true; false turns the audit's verdict off).
    pub replicas_agree_at_end: Option<bool>,
    /// Streams: the most times one replica may be repaired (1: never twice).
    pub max_repairs_per_replica: Option<u64>,
    /// Streams: the most reads that may fall back to another replica after
    /// the last fault healed.
    pub max_read_fallbacks_after_heal: Option<u64>,
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
    /// Table: no table server answered for a partition after a newer owner
    /// of it began serving (leases kept the owners apart).
    pub no_split_brain: Option<bool>,
    /// Table: the longest any failover after a server died or lost its
    /// lease may take to recover (the report's `time_to_recover`).
    pub max_time_to_recover: Option<Dur>,
    /// Load: the goodput (successful operations per second) from
    /// `recovery_window` after the last fault healed to the end of the main
    /// phase, at least this fraction of the goodput before the first fault.
    pub min_recovered_goodput: Option<f64>,
    /// How long after healing the store has to get its goodput back
    /// (default 10 s).
    pub recovery_window: Option<Dur>,
    /// Fewest operations each workload must complete successfully in the
    /// main phase (default 1: a workload that did nothing fails the run;
    /// 0 turns the check off).
    pub min_workload_ops: Option<u64>,
    /// Fewest operations each fault window must see invoked (default 1: a
    /// fault no operation met fails the run; 0 turns the check off).
    pub min_fault_window_ops: Option<u64>,
    /// Every fault the world applied that begins one must show an effect
    /// (messages it cut, lost or delayed, nodes it stopped, disk operations
    /// it failed, clock readings it moved, CPU jobs it slowed); default on.
    pub faults_take_effect: Option<bool>,
    /// Traffic control: the highest p99 latency of each named workload's
    /// successful operations in the main phase.
    pub tenant_max_p99: Option<BTreeMap<String, Dur>>,
    /// Traffic control: the lowest availability of each named workload.
    pub tenant_min_availability: Option<BTreeMap<String, f64>>,
    /// Traffic control: every quota admits within this fraction of its
    /// rate in every saturated second (the report's `accuracy`).
    pub quota_accuracy: Option<f64>,
    /// Traffic control: fewest requests throttled per reason prefix
    /// (`instance b`, `partition`), so a run that throttled nothing fails.
    pub min_throttled: Option<BTreeMap<String, u64>>,
    /// Table: every server a `node-drain` marked held no partition within
    /// this long of it.
    pub max_drain_time: Option<Dur>,
    /// Table: every server a `node-add` started owned, at the end of the
    /// main phase, at least this fraction of the mean partitions per
    /// serving server.
    pub min_added_share: Option<f64>,
    /// Table: every hotspot whose per-key rate reaches the hot-key
    /// threshold has a key of its range called hot within this long of
    /// its start.
    pub max_hot_key_detection: Option<Dur>,
    /// Table: every key of a hotspot called hot is called cooled within
    /// this long of its hotspot's end.
    pub max_hot_key_cooldown: Option<Dur>,
    /// Table: most keys called hot that belong to no hotspot.
    pub max_false_hot_keys: Option<u64>,
    /// Table: fewest of the reads of hot keys the HotZones answer.
    pub min_hotzone_hit_rate: Option<f64>,
    /// Table: the busiest proxy's HotZone hits over the mean of those that
    /// answered any.
    pub max_hotzone_spread: Option<f64>,
    /// Table: most source reads one hot key gets in one second.
    pub max_hot_source_reads: Option<u64>,
    /// Table: most engine writes one hot key gets in one second (combined
    /// batches, and its writes that were not combined while it was hot).
    pub max_hot_key_engine_writes: Option<u64>,
    /// Table: fewest puts combined into batches (so a run that combined
    /// nothing fails).
    pub min_combined_writes: Option<u64>,
}

impl ExpectDef {
    /// Every expectation, in file order, and whether the scenario sets it.
    pub fn fields(&self) -> [(&'static str, bool); 40] {
        [
            ("lost_acked_writes", self.lost_acked_writes.is_some()),
            ("linearizable", self.linearizable.is_some()),
            ("sequence_ok", self.sequence_ok.is_some()),
            ("live", self.live.is_some()),
            ("max_unavailability", self.max_unavailability.is_some()),
            ("min_availability", self.min_availability.is_some()),
            ("liveness_bound", self.liveness_bound.is_some()),
            ("streams_ok", self.streams_ok.is_some()),
            ("max_append_stall", self.max_append_stall.is_some()),
            ("rereplicated", self.rereplicated.is_some()),
            ("replicated_at_end", self.replicated_at_end.is_some()),
            ("min_replicas_repaired", self.min_replicas_repaired.is_some()),
            ("replicas_agree_at_end", self.replicas_agree_at_end.is_some()),
            ("max_repairs_per_replica", self.max_repairs_per_replica.is_some()),
            ("max_read_fallbacks_after_heal", self.max_read_fallbacks_after_heal.is_some()),
            ("bad_requests_accepted", self.bad_requests_accepted.is_some()),
            ("min_bad_requests_refused", self.min_bad_requests_refused.is_some()),
            ("bad_values_seen", self.bad_values_seen.is_some()),
            ("min_master_takeovers", self.min_master_takeovers.is_some()),
            ("no_split_brain", self.no_split_brain.is_some()),
            ("max_time_to_recover", self.max_time_to_recover.is_some()),
            ("min_recovered_goodput", self.min_recovered_goodput.is_some()),
            ("recovery_window", self.recovery_window.is_some()),
            ("min_workload_ops", self.min_workload_ops.is_some()),
            ("min_fault_window_ops", self.min_fault_window_ops.is_some()),
            ("faults_take_effect", self.faults_take_effect.is_some()),
            ("tenant_max_p99", self.tenant_max_p99.is_some()),
            ("tenant_min_availability", self.tenant_min_availability.is_some()),
            ("quota_accuracy", self.quota_accuracy.is_some()),
            ("min_throttled", self.min_throttled.is_some()),
            ("max_drain_time", self.max_drain_time.is_some()),
            ("min_added_share", self.min_added_share.is_some()),
            ("max_hot_key_detection", self.max_hot_key_detection.is_some()),
            ("max_hot_key_cooldown", self.max_hot_key_cooldown.is_some()),
            ("max_false_hot_keys", self.max_false_hot_keys.is_some()),
            ("min_hotzone_hit_rate", self.min_hotzone_hit_rate.is_some()),
            ("max_hotzone_spread", self.max_hotzone_spread.is_some()),
            ("max_hot_source_reads", self.max_hot_source_reads.is_some()),
            ("max_hot_key_engine_writes", self.max_hot_key_engine_writes.is_some()),
            ("min_combined_writes", self.min_combined_writes.is_some()),
        ]
    }
}
