//! The controller's phase tests use the one harness crate, `testbed`; this module keeps
//! `mod common_os; use common_os::*;` working.
#![allow(unused_imports)]

pub use testbed::phases::*;
pub use testbed::*;
