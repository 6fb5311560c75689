//! Request throughput and watch fan-out latency of kube-sim over HTTPS with kube-rs:
//! ~5,000 objects, 100 concurrent watchers. Prints figures; asserts nothing.

#![allow(clippy::unwrap_used)] // A benchmark binary: failing loudly is the point.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use tokio::sync::mpsc;

const OBJECTS: usize = 5_000;
const NAMESPACES: usize = 50;
const WATCHERS: usize = 100;
const UPDATES: usize = 200;
const CONCURRENCY: usize = 16;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run_concurrent<F, Fut>(total: usize, f: F) -> Duration
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let t0 = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let f = f.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                f(i).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    t0.elapsed()
}

fn report(what: &str, n: usize, d: Duration) {
    println!(
        "{what:<44} {n:>6} in {:>8.2?}  = {:>8.0} req/s",
        d,
        n as f64 / d.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let t0 = Instant::now();
    let sim = kube_sim::KubeSim::builder().start().await.unwrap();
    println!("kube-sim started in {:?} at {}", t0.elapsed(), sim.url());
    let client = sim.client().await.unwrap();

    let nss: Api<Namespace> = Api::all(client.clone());
    for i in 0..NAMESPACES {
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": format!("ns{i}")}})).unwrap(),
        )
        .await
        .unwrap();
    }

    let c = client.clone();
    let d = run_concurrent(OBJECTS, move |i| {
        let c = c.clone();
        async move {
            let api: Api<ConfigMap> = Api::namespaced(c, &format!("ns{}", i % NAMESPACES));
            let cm: ConfigMap = serde_json::from_value(json!({
                "metadata": {"name": format!("cm{i}"), "labels": {"shard": (i % 10).to_string()}},
                "data": {"payload": "x".repeat(256)},
            }))
            .unwrap();
            api.create(&PostParams::default(), &cm).await.unwrap();
        }
    })
    .await;
    report("create (16 concurrent clients)", OBJECTS, d);

    let c = client.clone();
    let d = run_concurrent(OBJECTS, move |i| {
        let c = c.clone();
        async move {
            let api: Api<ConfigMap> = Api::namespaced(c, &format!("ns{}", i % NAMESPACES));
            api.get(&format!("cm{i}")).await.unwrap();
        }
    })
    .await;
    report("get", OBJECTS, d);

    let c = client.clone();
    let d = run_concurrent(OBJECTS, move |i| {
        let c = c.clone();
        async move {
            let api: Api<ConfigMap> = Api::namespaced(c, &format!("ns{}", i % NAMESPACES));
            api.patch(
                &format!("cm{i}"),
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"n": i.to_string()}})),
            )
            .await
            .unwrap();
        }
    })
    .await;
    report("merge patch", OBJECTS, d);

    let lists = 500;
    let c = client.clone();
    let d = run_concurrent(lists, move |i| {
        let c = c.clone();
        async move {
            let api: Api<ConfigMap> = Api::namespaced(c, &format!("ns{}", i % NAMESPACES));
            assert_eq!(
                api.list(&ListParams::default()).await.unwrap().items.len(),
                OBJECTS / NAMESPACES
            );
        }
    })
    .await;
    report("list one namespace (100 objects)", lists, d);

    let t = Instant::now();
    let all = Api::<ConfigMap>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    println!(
        "{:<44} {:>6} in {:>8.2?}",
        "list all namespaces (one request)",
        all.items.len(),
        t.elapsed()
    );
    let t = Instant::now();
    let sel = Api::<ConfigMap>::all(client.clone())
        .list(&ListParams::default().labels("shard=3"))
        .await
        .unwrap();
    println!(
        "{:<44} {:>6} in {:>8.2?}",
        "list all with label selector",
        sel.items.len(),
        t.elapsed()
    );

    // Watch fan-out: 100 watchers on all configmaps; time from update sent to each delivery.
    let rv = all.metadata.resource_version.clone().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Instant)>();
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let api: Api<ConfigMap> = Api::all(sim.client().await.unwrap());
        let mut stream = api
            .watch(&WatchParams::default().timeout(120), &rv)
            .await
            .unwrap()
            .boxed();
        let tx = tx.clone();
        watchers.push(tokio::spawn(async move {
            let mut seen = 0;
            while seen < UPDATES {
                match stream.try_next().await.unwrap() {
                    Some(WatchEvent::Modified(o)) => {
                        let idx: usize = o.data.unwrap()["seq"].parse().unwrap();
                        tx.send((idx, Instant::now())).unwrap();
                        seen += 1;
                    }
                    Some(_) => {}
                    None => break,
                }
            }
        }));
    }
    drop(tx);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "ns0");
    let mut sent = Vec::with_capacity(UPDATES);
    let t = Instant::now();
    for i in 0..UPDATES {
        sent.push(Instant::now());
        api.patch(
            "cm0",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"seq": i.to_string()}})),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut lat = Vec::with_capacity(UPDATES * WATCHERS);
    let mut last = vec![Duration::ZERO; UPDATES];
    while let Some((i, at)) = rx.recv().await {
        let l = at - sent[i];
        last[i] = last[i].max(l);
        lat.push(l);
    }
    let total = t.elapsed();
    for w in watchers {
        w.await.unwrap();
    }
    lat.sort();
    last.sort();
    println!(
        "watch fan-out: {} updates x {} watchers = {} deliveries in {:.2?} ({:.0} events/s)",
        UPDATES,
        WATCHERS,
        lat.len(),
        total,
        lat.len() as f64 / total.as_secs_f64()
    );
    println!(
        "  per-delivery latency   p50 {:>8.2?}  p99 {:>8.2?}  max {:>8.2?}",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or_default()
    );
    println!(
        "  last-watcher latency   p50 {:>8.2?}  p99 {:>8.2?}  max {:>8.2?}",
        pct(&last, 0.5),
        pct(&last, 0.99),
        last.last().copied().unwrap_or_default()
    );
    let stats = sim.stats();
    println!(
        "requests served: {} (watch {}, list {})",
        stats.total(),
        stats.count("watch", None),
        stats.count("list", None)
    );
    sim.shutdown().await;
}
