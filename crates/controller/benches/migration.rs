//! Whole migrations on the simulated cluster with every operator delay at
//! zero, so the figures show the controller and the simulation, not sleeps:
//! wall time, the controller's Kubernetes requests by verb and resource
//! (kube-sim counts them per user), its vSphere calls (its own /metrics),
//! and its CPU time and peak RSS.
//!
//! The controller runs as its own process, the release `vcfm controller`
//! binary next to this bench (`cargo build --release -p vcfm` first), with
//! its production settings; CPU and peak RSS are that process's
//! (`/proc/<pid>/stat` utime+stime, `/proc/<pid>/status` VmHWM), and what that
//! peak is made of (`/proc/<pid>/smaps` by mapping when VmRSS peaked). Without the
//! binary, or with `VCFM_BENCH_INPROC=1`, it runs on a thread of this process
//! with the test harness's settings (300 ms safety-net poll), and the RSS
//! printed is the whole process's (kube-sim and the operators included).
//!
//! `VCFM_BENCH_SIZES` picks the clusters (default `3+2,3+3`; the issue's
//! scaling case is `3+50`). `VCFM_BENCH_WATCH_LIST=off` runs the API server
//! with its `WatchList` feature gate off, as OpenShift 4.16-4.18 and 4.20 run
//! it: every watch then lists first.
//!
//! `cargo build --release -p vcfm && cargo bench -p vcfm-controller --bench migration`
//! (needs `target/vcsim/vcsim`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use openshift_sim::{Delays, Scenario};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testbed::e2e::*;
use testbed::*;
use tokio_util::sync::CancellationToken;
use vcfm_api::{MigrationPhase, PhaseName, PhaseStatus};
use vcfm_controller::RunOptions;

/// The API server's `WatchList` gate: on unless `VCFM_BENCH_WATCH_LIST=off`.
fn watch_list() -> bool {
    std::env::var("VCFM_BENCH_WATCH_LIST").as_deref() != Ok("off")
}

/// The OpenShift release the simulated cluster reports: one whose Kubernetes has the
/// WatchList gate as the bench sets it by default, 4.21 (Kubernetes 1.34, on) or 4.20
/// (1.33, off).
fn release() -> &'static str {
    if watch_list() { "4.21.0" } else { "4.20.8" }
}

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

/// The release `vcfm` binary next to this bench executable, if built.
fn vcfm_binary() -> Option<std::path::PathBuf> {
    if std::env::var_os("VCFM_BENCH_INPROC").is_some() {
        return None;
    }
    if let Some(p) = std::env::var_os("VCFM_BENCH_BIN") {
        return Some(p.into());
    }
    // target/release/deps/migration-HASH → target/release/vcfm
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("vcfm");
    bin.is_file().then_some(bin)
}

/// Fields of `/proc/<pid>/stat` after the `(comm)`.
fn proc_cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn proc_status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The controller's resident memory at its peak, by mapping: a thread reads
/// `/proc/<pid>/status` every few milliseconds and, whenever VmRSS passes its
/// highest value so far, keeps a copy of `/proc/<pid>/smaps`.
struct PeakSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u64, String)>,
}

impl PeakSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut peak, mut smaps) = (0u64, String::new());
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let rss = proc_status_kb(pid, "VmRSS:");
                if rss > peak
                    && let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
                {
                    peak = rss;
                    smaps = text;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (peak, smaps)
        });
        Self { stop, thread }
    }

    /// VmRSS at the sampled peak and its make-up: Rss (and its anonymous part) per mapped
    /// file, `[heap]`, `[stack]`, other anonymous mappings, largest first.
    fn finish(self) -> String {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (peak, smaps) = self.thread.join().unwrap_or_default();
        let mut by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut current = String::new();
        for line in smaps.lines() {
            let mut f = line.split_whitespace();
            let Some(first) = f.next() else { continue };
            if first.contains('-') && !first.ends_with(':') {
                // A mapping's header: range perms offset dev inode [path].
                let path = f.nth(4).unwrap_or("");
                current = match path {
                    "" => "anonymous".into(),
                    p if p.starts_with('[') => p.into(),
                    p => std::path::Path::new(p)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| p.into()),
                };
            } else if first == "Rss:" || first == "Anonymous:" {
                let kb: u64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                let e = by.entry(current.clone()).or_default();
                if first == "Rss:" {
                    e.0 += kb
                } else {
                    e.1 += kb
                }
            }
        }
        let mut rows: Vec<_> = by.into_iter().filter(|(_, (rss, _))| *rss > 0).collect();
        rows.sort_by_key(|(_, (rss, _))| std::cmp::Reverse(*rss));
        let parts: Vec<String> = rows
            .iter()
            .map(|(name, (rss, anon))| {
                if *anon > 0 && anon != rss {
                    format!("{name} {rss} KiB ({anon} anon)")
                } else {
                    format!("{name} {rss} KiB")
                }
            })
            .collect();
        format!("{peak} KiB: {}", parts.join(", "))
    }
}

/// When the bench last saw a change to any cluster object a phase waits on.
type LastChange = Arc<Mutex<Option<Instant>>>;

/// Notes the arrival of every change to the objects of `api` in `last`.
fn probe<K>(api: Api<K>, last: LastChange, stop: CancellationToken)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    probe_events(watcher(api, watcher::Config::default()), last, stop);
}

/// Notes in `last` when `events` (a watch) delivers a change.
fn probe_events<K: Send + 'static>(
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    last: LastChange,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))) => {
                        *last.lock().unwrap() = Some(Instant::now());
                    }
                    Some(_) => {}
                    None => return,
                },
                _ = stop.cancelled() => return,
            }
        }
    });
}

/// The added latency of each wait: for every phase that ended by seeing the
/// cluster reach a state (a pod Ready, a node Ready, a pool rolled, ...),
/// the time from the last change to an object of the kinds the phases wait
/// on to the status write that ended the phase, both as this bench's own
/// watches deliver them. An upper bound of the controller's reaction time
/// (a later, unrelated change only shortens it; a change that did not end
/// the wait, made before the one that did, cannot lengthen it).
fn latency_probe(env: &Env, stop: CancellationToken) -> Arc<Mutex<Vec<(PhaseName, Duration)>>> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use vcfm_api::openshift::{ClusterOperator, ControlPlaneMachineSet, Machine, MachineSet};
    let last: LastChange = Arc::default();
    let c = env.client.clone();
    probe(Api::<Pod>::all(c.clone()), last.clone(), stop.clone());
    probe(Api::<Node>::all(c.clone()), last.clone(), stop.clone());
    probe(
        Api::<ClusterOperator>::all(c.clone()),
        last.clone(),
        stop.clone(),
    );
    probe(Api::<Machine>::all(c.clone()), last.clone(), stop.clone());
    probe(
        Api::<MachineSet>::all(c.clone()),
        last.clone(),
        stop.clone(),
    );
    probe(
        Api::<ControlPlaneMachineSet>::all(c.clone()),
        last.clone(),
        stop.clone(),
    );
    probe(
        Api::<Deployment>::all(c.clone()),
        last.clone(),
        stop.clone(),
    );
    let mcp = kube::core::ApiResource {
        group: "machineconfiguration.openshift.io".into(),
        version: "v1".into(),
        api_version: "machineconfiguration.openshift.io/v1".into(),
        kind: "MachineConfigPool".into(),
        plural: "machineconfigpools".into(),
    };
    let pools = Api::<DynamicObject>::all_with(c.clone(), &mcp);
    probe_events(
        watcher(pools, watcher::Config::default()),
        last.clone(),
        stop.clone(),
    );
    let out: Arc<Mutex<Vec<(PhaseName, Duration)>>> = Arc::default();
    let (o, migrations) = (out.clone(), env.api());
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(migrations, watcher::Config::default()));
        let mut ended: std::collections::BTreeSet<PhaseName> = Default::default();
        loop {
            let ev = tokio::select! {
                ev = events.next() => ev,
                _ = stop.cancelled() => return,
            };
            let Some(Ok(watcher::Event::Apply(m))) = ev else {
                if ev.is_none() {
                    return;
                }
                continue;
            };
            let now = Instant::now();
            for (p, st) in history(&m) {
                let done = matches!(st, PhaseStatus::Completed);
                if done
                    && WAITS.contains(&p)
                    && ended.insert(p)
                    && let Some(t) = *last.lock().unwrap()
                {
                    o.lock()
                        .unwrap()
                        .push((p, now.saturating_duration_since(t)));
                }
            }
        }
    });
    out
}

/// The phases that end by seeing the cluster reach a state (MonitorHealth
/// ends by a timer, its settle window, and is left out).
const WAITS: [PhaseName; 8] = [
    PhaseName::DisableCvo,
    PhaseName::UpdateConfig,
    PhaseName::RestartPods,
    PhaseName::CreateWorkers,
    PhaseName::RecreateCpms,
    PhaseName::ScaleOldMachines,
    PhaseName::Cleanup,
    PhaseName::Verify,
];

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
        watch_list: watch_list(),
        version: release().into(),
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
    let dir = std::env::temp_dir().join(format!("vcfm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let binary = vcfm_binary();
    // What the API server has answered until now is not ours.
    let mark = env.request_mark();
    reset_peak_rss();
    let cpu0 = process_cpu_seconds();
    let token = CancellationToken::new();
    let (controller, child) = match &binary {
        Some(bin) => {
            let kubeconfig = dir.join("kubeconfig");
            let text = env
                .sim
                .kubeconfig_for_user(CONTROLLER_USER, &["system:masters"])
                .await
                .unwrap();
            std::fs::write(&kubeconfig, text).unwrap();
            let ca = dir.join("vcenter-ca.pem");
            std::fs::write(&ca, opts.config.vcenter_ca_pem.clone().unwrap_or_default()).unwrap();
            let child = std::process::Command::new(bin)
                .arg("controller")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--vcenter-ca-file")
                .arg(&ca)
                .arg("--health-settle")
                .arg(opts.config.health_settle.as_secs().to_string())
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("vcfm controller");
            (None, Some(child))
        }
        None => (
            Some(spawn_controller(
                env.controller_client.clone(),
                opts,
                token.clone(),
            )),
            None,
        ),
    };
    let sampler = child.as_ref().map(|c| PeakSampler::start(c.id()));
    let probes = CancellationToken::new();
    let latencies = latency_probe(&env, probes.clone());
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
    // The last status write reaches the probe's watch a moment after the wait above.
    tokio::time::sleep(Duration::from_millis(500)).await;
    probes.cancel();
    let latencies = std::mem::take(&mut *latencies.lock().unwrap());
    let (controller_cpu, controller_hwm) = match (controller, child) {
        (_, Some(mut child)) => {
            let pid = child.id();
            let figures = (proc_cpu_seconds(pid), proc_status_kb(pid, "VmHWM:"));
            // What the resident memory is made of at the end (heap and
            // stacks, or the binary's pages), and the threads it runs.
            println!(
                "controller at the end: RssAnon {} KiB, RssFile {} KiB, {} threads",
                proc_status_kb(pid, "RssAnon:"),
                proc_status_kb(pid, "RssFile:"),
                proc_status_kb(pid, "Threads:")
            );
            if let Some(sampler) = sampler {
                println!("controller at its peak: VmRSS {}", sampler.finish());
            }
            let _ = child.kill();
            let _ = child.wait();
            figures
        }
        (Some(thread), None) => {
            token.cancel();
            let cpu = tokio::task::spawn_blocking(move || thread.join().unwrap_or(0.0))
                .await
                .unwrap_or(0.0);
            (cpu, 0)
        }
        (None, None) => (0.0, 0),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let process_cpu = process_cpu_seconds() - cpu0;
    let hwm = status_kb("VmHWM:");

    let mut by_verb: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_resource: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut sim_total = 0;
    for ((user, verb, resource), n) in env.requests_since(&mark) {
        if user == CONTROLLER_USER {
            *by_verb.entry(verb.clone()).or_default() += n;
            *by_resource.entry((verb, resource)).or_default() += n;
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
    println!(
        "== {masters} masters + {workers} workers, OpenShift {}, {}, WatchList {} ==",
        release(),
        if env.sim.real().is_some() {
            "real tier (kube-apiserver; requests counted from its audit log)"
        } else {
            "sim tier (kube-sim; requests counted by kube-sim)"
        },
        if watch_list() {
            "on (streaming lists)"
        } else {
            "off (list, then watch)"
        }
    );
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
    let mut rows: Vec<_> = by_resource.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for ((verb, resource), n) in rows {
        println!("  {n:>5}  {verb:<7} {resource}");
    }
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
    if !latencies.is_empty() {
        let mut ms: Vec<u128> = latencies.iter().map(|(_, d)| d.as_millis()).collect();
        ms.sort_unstable();
        println!(
            "added latency per wait  max {} ms, median {} ms over {} waits ({})",
            ms[ms.len() - 1],
            ms[ms.len() / 2],
            ms.len(),
            latencies
                .iter()
                .map(|(p, d)| format!("{p} {} ms", d.as_millis()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if binary.is_some() {
        println!("controller CPU       {controller_cpu:.2} s (the vcfm controller process)");
        println!(
            "controller peak RSS  {:.1} MiB (VmHWM of the vcfm controller process)",
            controller_hwm as f64 / 1024.0
        );
        println!("bench process CPU    {process_cpu:.2} s (kube-sim + operators + harness)");
    } else {
        println!("controller CPU       {controller_cpu:.2} s (its thread)");
        println!("process CPU          {process_cpu:.2} s (controller + kube-sim + operators)");
        println!(
            "process peak RSS     {:.1} MiB (VmHWM; controller + kube-sim + operators)",
            hwm as f64 / 1024.0
        );
    }
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
    let sizes = std::env::var("VCFM_BENCH_SIZES").unwrap_or_else(|_| "3+2,3+3".into());
    let sizes: Vec<(u32, u32)> = sizes
        .split(',')
        .filter_map(|s| {
            let (m, w) = s.trim().split_once('+')?;
            Some((m.parse().ok()?, w.parse().ok()?))
        })
        .collect();
    rt.block_on(async {
        for (i, (masters, workers)) in sizes.into_iter().enumerate() {
            if quick && i > 0 {
                break;
            }
            run(masters, workers).await;
        }
    });
}
