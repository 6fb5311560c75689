//! `openshift-sim` binary (work in progress).
fn main() {}
