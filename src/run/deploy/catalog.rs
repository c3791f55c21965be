//! The service kinds this package deploys, by the `kind` that names them.

use super::minikv::Minikv;
use super::stream::Stream;
use super::table::Table;
use super::Service;
use crate::scenario::ServiceRules;

/// Every service kind, in the order messages list them.
pub const SERVICES: [&dyn Service; 3] = [&Minikv, &Stream, &Table];

/// The service of kind `kind` (scenario validation has made sure it is one).
pub fn service(kind: &str) -> &'static dyn Service {
    SERVICES.iter().copied().find(|s| s.rules().kind() == kind).unwrap_or_else(|| panic!("no service of kind `{kind}`"))
}

/// The rules of every service kind, for validating scenarios.
pub fn rules() -> Vec<&'static dyn ServiceRules> {
    SERVICES.iter().map(|s| s.rules()).collect()
}
