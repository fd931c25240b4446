//! Router hop benchmark (`cargo bench --bench router_hop`; `make bench BENCH=router_hop`).
//!
//! Starts a two-shard pool in process (shards on cores 0 and 1, temp data dir) and, from
//! shard 0, times `router.call` with `ShardRequest::Ping` (an empty `Bytes` payload): to itself
//! (a direct call, no mesh), to shard 1 one call at a time (a full cross-shard round trip:
//! channel send, the other executor wakes, serves, replies), and to shard 1 with 64 calls in
//! flight (mesh throughput). Prints ns per call. `RB_HOP_CALLS` sets calls per case;
//! `RB_HOP_SPIN_US` sets the shards' `shard-spin-before-park-us`.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use ringbroker::broker::{ShardContext, ShardRequest};
use ringbroker::config::Config;
use ringbroker::metadata::{MetadataStore, store};
use ringbroker::pool::{self, BrokerSpec, ShardHook};
use ringbroker::runtime::ShardId;

fn main() {
    let calls: usize = std::env::var("RB_HOP_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let pairs = vec![
        (
            "data-dir".to_string(),
            dir.path().to_str().unwrap().to_string(),
        ),
        ("listen".to_string(), "127.0.0.1:0".to_string()),
    ];
    let mut pairs = pairs;
    if let Ok(spin) = std::env::var("RB_HOP_SPIN_US") {
        pairs.push(("shard-spin-before-park-us".to_string(), spin));
    }
    let config = Config::build(&pairs).unwrap();
    let online = pool::select_cores(&config).unwrap();
    let cores = vec![online[0], *online.get(1).unwrap_or(&online[0])];
    let identity = store::load_or_create_identity(dir.path(), 0).unwrap();
    let (metadata_store, image) = MetadataStore::open(dir.path()).unwrap();
    let (tx, rx) = mpsc::channel::<(String, f64)>();
    let hook: ShardHook = Arc::new(move |context: Rc<ShardContext>| {
        if context.id != ShardId(0) {
            return;
        }
        let tx = tx.clone();
        glommio::spawn_local(async move {
            let ping = || ShardRequest::Ping {
                payload: Bytes::new(),
            };
            for (name, to) in [("local (shard 0 -> 0)", 0), ("cross-shard (0 -> 1)", 1)] {
                // Warm-up, then the timed sequential calls.
                for _ in 0..calls / 10 {
                    context.router.call(ShardId(to), ping()).await.unwrap();
                }
                let t = Instant::now();
                for _ in 0..calls {
                    context.router.call(ShardId(to), ping()).await.unwrap();
                }
                let ns = t.elapsed().as_nanos() as f64 / calls as f64;
                tx.send((format!("{name}, 1 in flight"), ns)).unwrap();
            }
            let in_flight = 64;
            let t = Instant::now();
            let mut pending = FuturesUnordered::new();
            let mut sent = 0;
            while sent < calls || !pending.is_empty() {
                while sent < calls && pending.len() < in_flight {
                    pending.push(context.router.call(ShardId(1), ping()));
                    sent += 1;
                }
                pending.next().await.unwrap().unwrap();
            }
            let ns = t.elapsed().as_nanos() as f64 / calls as f64;
            tx.send((format!("cross-shard (0 -> 1), {in_flight} in flight"), ns))
                .unwrap();
        })
        .detach();
    });
    let spec = BrokerSpec {
        config,
        identity,
        image,
        on_shard_ready: Some(hook),
    };
    let broker = pool::start(spec, metadata_store, &cores, false).expect("broker starts");
    println!(
        "router hop: shards on cores {cores:?}, {calls} calls per case, spin before park {} us",
        std::env::var("RB_HOP_SPIN_US").unwrap_or_else(|_| "0".into())
    );
    for _ in 0..3 {
        let (name, ns) = rx.recv().unwrap();
        println!(
            "  {name:<40} {ns:>8.0} ns per call ({:.2} M calls/s)",
            1e3 / ns
        );
    }
    assert!(broker.shutdown(), "clean shutdown");
}
