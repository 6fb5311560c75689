//! The administrator's commands and `vcfm plan`, as a library so that `vcfm-demo`
//! drives a migration with exactly the code `vcfm approve` and friends run, without
//! the product binary linking the demo's simulators.

pub mod bundle;
pub mod cli;
pub mod gather;
pub mod plan;
