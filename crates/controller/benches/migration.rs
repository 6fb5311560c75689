//! Whole migrations on the simulated cluster with every operator delay at
//! zero, so the figures show the controller and the simulation, not sleeps:
//! wall time, the controller's Kubernetes requests by verb (kube-sim counts
//! them per user), its vSphere calls (its own /metrics), its CPU time (the
//! controller runs alone on one thread with its own runtime) and the process
//! peak RSS (kube-sim and the simulated operators share the process; the two
//! vcsims do not).
//!
//! `cargo bench -p vcfm-controller --bench migration` (needs `target/vcsim/vcsim`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openshift_sim::{Delays, Scenario};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use testbed::e2e::*;
use testbed::*;
use tokio_util::sync::CancellationToken;
use vcfm_api::MigrationPhase;
use vcfm_controller::RunOptions;

fn zero_delays() -> Delays {
    let z = Duration::ZERO;
    Delays {
        provision: z,
        node_ready: z,
        machine_delete: z,
        credentials_sync: z,
        pod_ready: z,
        pod_terminate: z,
        operator_notice: z,
        operator_progressing: z,
        cpms_observe: z,
        cpms_recreate: z,
        deployment_ready: z,
        cvo_restore: z,
        mcp_node_update: z,
        // A safety-net period, not a delay: watch events drive the operators.
        resync: Duration::from_millis(200),
    }
}

/// utime + stime of the calling thread, in seconds (`/proc/thread-self/stat`, USER_HZ = 100).
fn thread_cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the `(comm)`, which may contain spaces.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat; here 0-based after `)` → 11, 12.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn process_cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0), so each run reports its own peak.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn scrape(addr: std::net::SocketAddr) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The controller on its own thread and runtime; returns its CPU seconds when stopped.
fn spawn_controller(
    client: kube::Client,
    opts: RunOptions,
    token: CancellationToken,
) -> std::thread::JoinHandle<f64> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let _ = vcfm_controller::run(client, opts, token).await;
        });
        thread_cpu_seconds()
    })
}

async fn run(masters: u32, workers: u32) {
    let env = Env::start(Scenario {
        masters,
        workers,
        delays: zero_delays(),
        ..Scenario::default()
    })
    .await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let opts = RunOptions {
        config: env.config(),
        leader_election: None,
        listen: Some(addr),
    };
    env.sim.kube().stats().reset();
    reset_peak_rss();
    let cpu0 = process_cpu_seconds();
    let token = CancellationToken::new();
    let controller = spawn_controller(env.controller_client.clone(), opts, token.clone());
    let start = Instant::now();
    env.create_migration("bench", env.spec(FD, workers, false))
        .await;
    let m = env.wait_terminal("bench", Duration::from_secs(900)).await;
    let wall = start.elapsed();
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::Completed),
        "{}",
        summary(&m)
    );
    let metrics = scrape(addr);
    token.cancel();
    let controller_cpu = tokio::task::spawn_blocking(move || controller.join().unwrap_or(0.0))
        .await
        .unwrap_or(0.0);
    let process_cpu = process_cpu_seconds() - cpu0;
    let hwm = status_kb("VmHWM:");

    let mut by_verb: BTreeMap<String, u64> = BTreeMap::new();
    let mut sim_total = 0;
    for (k, n) in env.sim.kube().stats().snapshot() {
        if k.user == CONTROLLER_USER {
            *by_verb.entry(k.verb).or_default() += n;
        } else {
            sim_total += n;
        }
    }
    let total: u64 = by_verb.values().sum();
    let mut vsphere: BTreeMap<String, f64> = BTreeMap::new();
    for line in metrics.lines() {
        if line.starts_with("vcfm_vsphere_calls")
            && let Some((k, v)) = line.rsplit_once(' ')
        {
            // `{server="…",outcome="…"}`: the source or target, ok or failed.
            let labels = k
                .split_once('{')
                .map(|(_, l)| l.trim_end_matches('}'))
                .unwrap_or(k);
            let labels = labels
                .replace(&env.sim.source().server, "source")
                .replace(&env.sim.target().server, "target");
            *vsphere.entry(labels).or_default() += v.parse::<f64>().unwrap_or(0.0);
        }
    }
    let vsphere_total: f64 = vsphere.values().sum();
    let reconciles: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("vcfm_reconciles"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum();
    println!("== {masters} masters + {workers} workers ==");
    println!("wall time            {:.1} s", wall.as_secs_f64());
    println!("phases               {}", durations(&m));
    println!(
        "controller K8s reqs  {total} ({})",
        by_verb
            .iter()
            .map(|(v, n)| format!("{v} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  (simulated operators and the harness made {sim_total} more)");
    println!(
        "controller vSphere   {vsphere_total} calls ({})",
        if vsphere.is_empty() {
            "no vsphere_calls metric found".to_string()
        } else {
            vsphere
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!("controller reconciles {reconciles}");
    println!("controller CPU       {controller_cpu:.2} s (its thread)");
    println!("process CPU          {process_cpu:.2} s (controller + kube-sim + operators)");
    println!(
        "process peak RSS     {:.1} MiB (VmHWM; controller + kube-sim + operators)",
        hwm as f64 / 1024.0
    );
    env.shutdown().await;
}

fn main() {
    // `cargo test --benches` runs this too: keep that to the small case.
    let quick = std::env::args().any(|a| a == "--test");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        run(3, 3).await;
        if !quick {
            run(3, 50).await;
        }
    });
}
