//! The vcfm controller: a kube-runtime reconciler over
//! `VmwareCloudFoundationMigration` that walks each migration through its
//! phases with approvals, pause/resume, backups and a rollback that runs at
//! most once and never past the point of no return.
//!
//! Layout: [`state`] decides (pure), [`reconciler`] acts one step at a time
//! and writes what [`transition`] computes (pure),
//! [`phases`] hold the per-phase work, [`backup`] keeps what rollback needs,
//! [`runtime`] wires watches, leader election and the metrics endpoint.

pub mod backup;
pub mod cache;
pub mod conditions;
pub mod context;
pub mod deletion;
pub mod error;
pub mod events;
pub mod metrics;
pub mod named;
pub mod openshift;
pub mod phases;
pub mod reconciler;
pub mod runtime;
pub mod secure_metrics;
pub mod state;
pub mod status;
pub mod streaming;
pub mod transition;
pub mod undo;
pub mod wake;
pub mod written;

pub use context::ControllerConfig;
pub use runtime::{LeaderElection, RunOptions, run, run_with_metrics};
pub use secure_metrics::SecureMetrics;
