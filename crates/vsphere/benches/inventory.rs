//! Inventory-lookup throughput and bytes per call against vcsim, and the session cache's
//! effect on logins. Prints figures; asserts nothing about time.
//!
//! Run: `cargo bench -p vcfm-vsphere --bench inventory` (needs tools/vcsim/build.sh).

use std::time::Instant;

use vcfm_vsphere::sim::{Vcsim, VcsimOptions};
use vcfm_vsphere::{Client, ClientStats, SessionCache};

fn rate(label: &str, calls: u64, before: ClientStats, after: ClientStats, secs: f64) {
    let http = after.calls - before.calls;
    let bytes = after.bytes - before.bytes;
    println!(
        "{label:<44} {calls:>6} ops in {secs:>6.3}s  {:>8.0} ops/s  {:>6.2} HTTP calls/op  {:>7.0} bytes/HTTP call",
        calls as f64 / secs,
        http as f64 / calls as f64,
        bytes as f64 / http.max(1) as f64
    );
}

async fn run(vc: &Vcsim) {
    let c = vc.client().expect("client");
    c.login().await.expect("login");
    let paths: Vec<String> = vc
        .inventory()
        .datacenters
        .iter()
        .chain(&vc.inventory().clusters)
        .chain(&vc.inventory().hosts)
        .chain(&vc.inventory().datastores)
        .chain(&vc.inventory().vms)
        .cloned()
        .collect();
    for p in &paths {
        c.find_by_inventory_path(p).await.expect("warm-up");
    }

    // Sequential FindByInventoryPath.
    let n = 1000u64;
    let before = c.stats();
    let t = Instant::now();
    for i in 0..n {
        c.find_by_inventory_path(&paths[i as usize % paths.len()])
            .await
            .expect("lookup");
    }
    rate(
        "FindByInventoryPath, sequential",
        n,
        before,
        c.stats(),
        t.elapsed().as_secs_f64(),
    );

    // Concurrent lookups over the shared session (8 in flight).
    let before = c.stats();
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for w in 0..8usize {
        let c = c.clone();
        let paths = paths.clone();
        set.spawn(async move {
            for i in 0..(n as usize / 8) {
                c.find_by_inventory_path(&paths[(i + w) % paths.len()])
                    .await
                    .expect("lookup");
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("worker");
    }
    rate(
        "FindByInventoryPath, 8 concurrent",
        n,
        before,
        c.stats(),
        t.elapsed().as_secs_f64(),
    );

    // Batched property reads: every VM's name/power state/template flag in one call.
    let mut vms = Vec::new();
    for p in &vc.inventory().vms {
        vms.push(c.find_vm(p).await.expect("vm"));
    }
    let n = 300u64;
    let before = c.stats();
    let t = Instant::now();
    for _ in 0..n {
        let r = c
            .retrieve_properties(
                "VirtualMachine",
                &vms,
                &["name", "runtime.powerState", "config.template"],
            )
            .await
            .expect("props");
        assert_eq!(r.len(), vms.len());
    }
    rate(
        &format!("RetrievePropertiesEx, {} VMs x 3 props", vms.len()),
        n,
        before,
        c.stats(),
        t.elapsed().as_secs_f64(),
    );

    // Same read, paged 2 objects per call (ContinueRetrievePropertiesEx).
    let before = c.stats();
    let t = Instant::now();
    for _ in 0..n {
        c.retrieve_properties_paged("VirtualMachine", &vms, &["name"], 2)
            .await
            .expect("paged");
    }
    rate(
        "RetrievePropertiesEx paged by 2",
        n,
        before,
        c.stats(),
        t.elapsed().as_secs_f64(),
    );

    let folder = c.find_folder("/DC0/vm").await.expect("folder");
    let before = c.stats();
    let t = Instant::now();
    for _ in 0..n {
        c.list_vms(&folder, false).await.expect("list");
    }
    rate(
        "list_vms(/DC0/vm)",
        n,
        before,
        c.stats(),
        t.elapsed().as_secs_f64(),
    );

    // Session cache: 100 phase calls, each asking for "its" client.
    let cfg = vc.client_config().expect("cfg");
    let cache = SessionCache::default();
    let t = Instant::now();
    for _ in 0..100 {
        cache
            .client(cfg.clone())
            .expect("cached")
            .find_datacenter("/DC0")
            .await
            .expect("dc");
    }
    let cached = cache.client(cfg.clone()).expect("cached").stats();
    let cached_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut logins = 0;
    for _ in 0..100 {
        let fresh = Client::new(cfg.clone()).expect("fresh");
        fresh.find_datacenter("/DC0").await.expect("dc");
        logins += fresh.stats().soap_logins;
        fresh.logout().await.expect("logout");
    }
    let fresh_secs = t.elapsed().as_secs_f64();
    println!(
        "session cache: {} logins per 100 calls ({:.3}s); without cache: {logins} logins per 100 calls ({:.3}s)",
        cached.soap_logins, cached_secs, fresh_secs
    );
}

fn main() {
    let vc = Vcsim::start(VcsimOptions {
        vms: 4,
        ..VcsimOptions::default()
    })
    .expect("vcsim (run tools/vcsim/build.sh)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "vcsim {} (vCenter {}), TLS verified, release build: {}",
        vc.server(),
        vc.options().about_version,
        !cfg!(debug_assertions)
    );
    rt.block_on(run(&vc));
}
