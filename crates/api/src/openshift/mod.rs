//! The subset of the OpenShift API that vcfm reads and writes.
//!
//! Typed where the controller reasons about a field; every struct keeps the
//! fields it does not know in `extra`, so that reading an object and writing it
//! back never drops what a newer OpenShift added. Schemas are not generated
//! here: the cluster serves OpenShift's own CRDs.

pub mod config;
pub mod machine;
pub mod operator;

pub use config::*;
pub use machine::*;
pub use operator::*;

/// Fields a type does not model, kept verbatim for lossless round trips.
pub type Extra = serde_json::Map<String, serde_json::Value>;
