//! The shard pool in process: cross-shard calls over the router, and metadata changes made
//! through the controller reaching every shard in order.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use ringbroker::broker::{ShardContext, ShardRequest, ShardResponse};
use ringbroker::config::Config;
use ringbroker::metadata::{ControllerRequest, ControllerResponse, MetadataStore, NewTopic, store};
use ringbroker::pool::{self, BrokerSpec, ShardHook};
use ringbroker::runtime::ShardId;

#[derive(Debug)]
enum Report {
    Pong {
        from: usize,
        to: usize,
        answered_by: usize,
        payload: Bytes,
    },
    Created {
        shard: usize,
        seen_on_caller: bool,
        images: Vec<(String, i32)>,
    },
}

/// Starts a two-shard broker whose shards run `hook` once they listen.
fn start_with(dir: &std::path::Path, hook: ShardHook) -> pool::RunningBroker {
    let pairs = vec![
        ("data-dir".to_string(), dir.to_str().unwrap().to_string()),
        ("listen".to_string(), "127.0.0.1:0".to_string()),
    ];
    let config = Config::build(&pairs).unwrap();
    let online = pool::select_cores(&config).unwrap();
    // Two shards even on a one-core machine: two executors may share a core.
    let cores = vec![online[0], *online.get(1).unwrap_or(&online[0])];
    let identity = store::load_or_create_identity(dir, 0).unwrap();
    let (metadata_store, image) = MetadataStore::open(dir).unwrap();
    let spec = BrokerSpec {
        config,
        identity,
        image,
        on_shard_ready: Some(hook),
    };
    pool::start(spec, metadata_store, &cores, false).expect("broker starts")
}

#[test]
fn every_shard_reaches_every_shard_and_sees_controller_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel::<Report>();
    let hook: ShardHook = Arc::new(move |context: Rc<ShardContext>| {
        let tx = tx.clone();
        glommio::spawn_local(async move {
            for to in 0..context.shard_count {
                let payload = Bytes::from(format!("{}->{}", context.id.0, to));
                let response = context
                    .router
                    .call(ShardId(to), ShardRequest::Ping { payload })
                    .await
                    .expect("ping answered");
                let ShardResponse::Pong { shard, payload } = response else {
                    panic!("unexpected {response:?}");
                };
                tx.send(Report::Pong {
                    from: context.id.0,
                    to,
                    answered_by: shard.0,
                    payload,
                })
                .unwrap();
            }
            if context.id == ShardId(1) {
                let request = ControllerRequest::CreateTopics {
                    topics: (0..5)
                        .map(|i| NewTopic {
                            name: format!("topic-{i}"),
                            partitions: i + 1,
                            ..NewTopic::default()
                        })
                        .collect(),
                    validate_only: false,
                };
                let response = context
                    .router
                    .call(ShardId::CONTROLLER, ShardRequest::Controller(request))
                    .await
                    .unwrap();
                let ShardResponse::Controller(ControllerResponse::Results(results)) = response
                else {
                    panic!("unexpected {response:?}");
                };
                assert!(results.iter().all(Result::is_ok), "{results:?}");
                // The image is posted on the same FIFO channel before the reply: a caller
                // always reads its own change.
                let image = context.image();
                tx.send(Report::Created {
                    shard: 1,
                    seen_on_caller: image.topics.len() == 5,
                    images: image
                        .topics
                        .values()
                        .map(|t| (t.name.clone(), t.partitions))
                        .collect(),
                })
                .unwrap();
            }
        })
        .detach();
    });
    let broker = start_with(dir.path(), hook);

    let mut pongs = Vec::new();
    let mut created = None;
    while pongs.len() < 4 || created.is_none() {
        match rx
            .recv_timeout(Duration::from_secs(20))
            .expect("reports arrive")
        {
            pong @ Report::Pong { .. } => pongs.push(pong),
            report @ Report::Created { .. } => created = Some(report),
        }
    }
    for pong in &pongs {
        let Report::Pong {
            from,
            to,
            answered_by,
            payload,
        } = pong
        else {
            unreachable!()
        };
        assert_eq!(answered_by, to, "the target shard answers");
        assert_eq!(payload, &Bytes::from(format!("{from}->{to}")));
    }
    let Some(Report::Created {
        shard,
        seen_on_caller,
        images,
    }) = created
    else {
        unreachable!()
    };
    assert_eq!(shard, 1);
    assert!(seen_on_caller);
    assert_eq!(images.len(), 5);
    assert!(broker.shutdown(), "clean shutdown");

    // The change was made durable: it is in the store after the broker stopped.
    let (_, image) = MetadataStore::open(dir.path()).unwrap();
    assert_eq!(image.topics.len(), 5);
    assert_eq!(image.topic("topic-4").unwrap().partitions, 5);
}

#[test]
fn controller_refusals_are_per_topic_and_validate_only_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel();
    let hook: ShardHook = Arc::new(move |context: Rc<ShardContext>| {
        if context.id != ShardId(1) {
            return;
        }
        let tx = tx.clone();
        glommio::spawn_local(async move {
            let topic = |name: &str, partitions| NewTopic {
                name: name.to_string(),
                partitions,
                ..NewTopic::default()
            };
            let call = |topics, validate_only| {
                let context = context.clone();
                async move {
                    let request = ControllerRequest::CreateTopics {
                        topics,
                        validate_only,
                    };
                    match context
                        .router
                        .call(ShardId::CONTROLLER, ShardRequest::Controller(request))
                        .await
                        .unwrap()
                    {
                        ShardResponse::Controller(ControllerResponse::Results(results)) => results
                            .into_iter()
                            .map(|r| r.map(|t| t.name).map_err(|e| e.to_string()))
                            .collect::<Vec<_>>(),
                        other => panic!("unexpected {other:?}"),
                    }
                }
            };
            let dry = call(vec![topic("dry", 1)], true).await;
            let dry_image = context.image().topics.len();
            let mixed = call(
                vec![
                    topic("ok", 2),
                    topic("bad name", 1),
                    topic("zero", 0),
                    topic("ok", 1),
                ],
                false,
            )
            .await;
            let again = call(vec![topic("ok", 2)], false).await;
            tx.send((dry, dry_image, mixed, again, context.image().topics.len()))
                .unwrap();
        })
        .detach();
    });
    let broker = start_with(dir.path(), hook);
    let (dry, dry_image, mixed, again, final_topics) =
        rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(broker.shutdown());
    assert_eq!(dry, vec![Ok("dry".to_string())]);
    assert_eq!(dry_image, 0, "validate_only creates nothing");
    assert_eq!(mixed[0], Ok("ok".to_string()));
    assert!(mixed[1].as_ref().unwrap_err().contains("illegal"));
    assert!(mixed[2].as_ref().unwrap_err().contains("larger than 0"));
    assert!(mixed[3].as_ref().unwrap_err().contains("Duplicate"));
    assert!(again[0].as_ref().unwrap_err().contains("already exists"));
    assert_eq!(final_topics, 1);
}
