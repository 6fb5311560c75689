//! The controller's whole-migration tests use the one harness crate, `testbed`; this
//! module keeps `mod common_e2e; use common_e2e::*;` working.
#![allow(unused_imports)]

pub use testbed::e2e::*;
pub use testbed::*;
