//! Scenario files: TOML data describing a world, the service it runs, its
//! workloads, timed faults, hotspots and what the run must show.
//!
//! Parsing never panics: every problem becomes one [`ScenarioError`] naming
//! the file, the line and column, and the field (`fault[2].target`).
//! Validation goes beyond types: names must exist in the topology, the
//! service's rules ([`ServiceRules`], given by whoever runs scenarios)
//! decide which nodes, `[service]` fields, workloads, expectations and
//! fault targets it takes, faults must fall inside the run, and the fault
//! timeline is replayed statically so that contradictions (a zone taken
//! down twice, a restart of a running node, a heal of a partition that was
//! never made) are refused before the run.
//!
//! The format depends on nothing that runs it.
//!
//! - [`mod@format`]: the shapes TOML text is read into.
//! - [`limits`]: the named bound of every number a file can give.
//! - [`model`]: the validated [`Scenario`] and [`ScenarioError`].
//! - [`service`]: what validation asks of a service kind.
//! - `validate`: the checks, in file order; `spans`: the line of any
//!   field, by its path.
//! - [`timeline`]: fault verbs and their inverses, the static replay, the
//!   fault windows.

pub mod format;
pub mod limits;
pub mod model;
pub mod service;
mod spans;
pub mod timeline;
mod validate;

use std::path::Path;

pub use format::{Distribution, Dur, ExpectDef, HotOp, Mix, ServiceDef, WorkloadDef, WorkloadKind, CLIENT_ROLE, DEFAULT_SERVICE};
pub use model::{Hotspot, Quota, QuotaOp, QuotaUnit, Scenario, ScenarioError, TimedFault};
pub use service::{DynamicTarget, Refusal, Role, ServiceRules, WorkloadFeature};
pub use timeline::{fault_windows, heal_all};

use format::ScenarioFile;
pub use limits::SCENARIO_BYTES_MAX;
use model::line_col;
use validate::validate;

/// Reads and validates a scenario file for one of `services`. The file is
/// read through the size cap: at most one byte more than
/// [`SCENARIO_BYTES_MAX`] is ever read (`/dev/zero` is refused at once).
pub fn load(path: &Path, services: &[&dyn ServiceRules]) -> Result<Scenario, ScenarioError> {
    let bytes = read_capped(path, SCENARIO_BYTES_MAX as u64).map_err(|e| ScenarioError {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        field: String::new(),
        message: format!("cannot read the scenario file: {e}"),
    })?;
    parse(path, &bytes, services)
}

/// Reads at most `max + 1` bytes of `path` (one more than allowed shows
/// that the file is too large without reading the rest).
pub fn read_capped(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    #[allow(clippy::disallowed_methods)] // the CLI reads the user's file from the real disk
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Parses and validates scenario text for one of `services`; `path` is
/// only used in messages.
pub fn parse(path: &Path, bytes: &[u8], services: &[&dyn ServiceRules]) -> Result<Scenario, ScenarioError> {
    // A refusal of the whole file names its first line.
    let whole = |message: String| ScenarioError { file: path.to_path_buf(), line: 1, column: 1, field: String::new(), message };
    if bytes.len() > SCENARIO_BYTES_MAX {
        return Err(whole(format!("the file is over {SCENARIO_BYTES_MAX} bytes, the limit of a scenario file")));
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
    if let Some(at) = text.find('\0') {
        let (line, column) = line_col(text, at);
        return Err(ScenarioError { line, column, ..whole("not a text file (contains NUL bytes): a scenario file is TOML text".into()) });
    }
    if text.trim().is_empty() {
        return Err(whole("the file is empty: a scenario needs at least name, description, duration and [topology]".into()));
    }
    let at = |offset: usize, field: &str, message: String| {
        let (line, column) = line_col(text, offset);
        ScenarioError { file: path.to_path_buf(), line, column, field: field.to_string(), message }
    };
    let doc = toml::de::DeTable::parse(text).map_err(|e| at(e.span().map(|s| s.start).unwrap_or(0), "", first_line(e.message())))?;
    let spans = spans::FieldSpans::new(doc.get_ref().clone());
    let de = toml::de::Deserializer::from(doc);
    let file: ScenarioFile = serde_path_to_error::deserialize(de).map_err(|e| {
        // serde_spanned wraps values in a private field: not the user's words.
        let field = e.path().to_string().replace(".$__serde_spanned_private_value", "").replace("$__serde_spanned_private_value", "");
        let field = limits::shown(&field);
        let inner = e.into_inner();
        at(inner.span().map(|s| s.start).unwrap_or(0), &field, first_line(inner.message()))
    })?;
    validate(path, text, &spans, file, services)
}

/// The first line of a parser's message, cut to a readable length (it may
/// quote the user's words).
fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    let max = 4 * limits::ECHO_CHARS_MAX;
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line.to_string()
    }
}
