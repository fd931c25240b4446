//! Property test: random appends, reads, rolls (small segments), retention, delete-records,
//! timestamp lookups and reopen, checked against a plain in-memory model of the log.

use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use proptest::prelude::*;
use ringbroker::storage::batch::{build_test_batch, patch_base_offset};
use ringbroker::storage::{LogConfig, LogEnv, PartitionLog, ShardCache};

#[derive(Debug, Clone)]
enum Op {
    Append { records: i32, value_bytes: usize },
    Read { pick: u32, max_bytes: u32 },
    Reopen,
    RetainBytes { limit: i64 },
    DeleteRecords { pick: u32 },
    ForTimestamp { pick: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1..4i32, 0..3000usize).prop_map(|(records, value_bytes)| Op::Append { records, value_bytes }),
        4 => (any::<u32>(), 1..20_000u32).prop_map(|(pick, max_bytes)| Op::Read { pick, max_bytes }),
        1 => Just(Op::Reopen),
        1 => (0..40_000i64).prop_map(|limit| Op::RetainBytes { limit }),
        1 => any::<u32>().prop_map(|pick| Op::DeleteRecords { pick }),
        1 => any::<u32>().prop_map(|pick| Op::ForTimestamp { pick }),
    ]
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 8192,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

struct Model {
    /// (base offset, last offset, timestamp, bytes as stored)
    batches: Vec<(i64, i64, i64, Vec<u8>)>,
    log_start_offset: i64,
    end: i64,
}

async fn open(dir: &Path, cache: &Rc<ShardCache>) -> PartitionLog {
    let env = LogEnv {
        cache: cache.clone(),
        background_queue: None,
        reserve_space: true,
        reserve_budget: ringbroker::storage::ReserveBudget::new(u64::MAX),
    };
    PartitionLog::open_with(dir, config(), env).await.unwrap()
}

async fn run_ops(dir: &Path, ops: Vec<Op>) {
    let cache = Rc::new(ShardCache::new(16 * 1024));
    let mut log = open(dir, &cache).await;
    let mut m = Model {
        batches: Vec::new(),
        log_start_offset: 0,
        end: 0,
    };
    let mut ts = 0i64;
    for op in ops {
        match op {
            Op::Append {
                records,
                value_bytes,
            } => {
                ts += 1;
                let mut b = build_test_batch(records, value_bytes, ts, ts as u8);
                let info = log.append(Bytes::from(b.clone())).await.unwrap();
                assert_eq!(info.base_offset, m.end);
                assert_eq!(info.last_offset, m.end + records as i64 - 1);
                patch_base_offset(&mut b, info.base_offset);
                m.batches.push((info.base_offset, info.last_offset, ts, b));
                m.end = info.last_offset + 1;
            }
            Op::Read { pick, max_bytes } => {
                let span = (m.end - m.log_start_offset + 1) as u32;
                let offset = m.log_start_offset + (pick % span) as i64;
                let got = log.read(offset, max_bytes).await.unwrap().to_vec();
                if offset == m.end {
                    assert!(got.is_empty());
                    continue;
                }
                let i = m.batches.iter().position(|b| b.1 >= offset).unwrap();
                let mut want = Vec::new();
                let mut k = 0;
                while want.len() < got.len() {
                    want.extend_from_slice(&m.batches[i + k].3);
                    k += 1;
                }
                assert_eq!(got, want, "read({offset}, {max_bytes})");
                assert!(k >= 1);
                assert!(k == 1 || got.len() <= max_bytes as usize);
                if m.log_start_offset > 0 {
                    assert!(log.read(m.log_start_offset - 1, 10).await.is_err());
                }
                assert!(log.read(m.end + 1, 10).await.is_err());
            }
            Op::Reopen => {
                log.close().await.unwrap();
                log = open(dir, &cache).await;
                assert_eq!(log.high_watermark(), m.end);
                assert_eq!(log.log_start_offset(), m.log_start_offset);
            }
            Op::RetainBytes { limit } => {
                let mut c = config();
                c.retention_ms = -1;
                c.retention_bytes = limit;
                log.set_config(c);
                log.apply_retention(0).await.unwrap();
                log.set_config(config());
                let lso = log.log_start_offset();
                assert!(lso >= m.log_start_offset && lso <= m.end);
                assert_eq!(lso.max(log.segment_bases()[0]), lso);
                assert!(lso == m.end || m.batches.iter().any(|b| b.0 <= lso && lso <= b.1));
                m.log_start_offset = lso;
                m.batches.retain(|b| b.1 >= lso);
            }
            Op::DeleteRecords { pick } => {
                let span = (m.end - m.log_start_offset + 1) as u32;
                let offset = m.log_start_offset + (pick % span) as i64;
                let lso = log.delete_records(offset).await.unwrap();
                assert_eq!(lso, offset);
                m.log_start_offset = lso;
                m.batches.retain(|b| b.1 >= lso);
            }
            Op::ForTimestamp { pick } => {
                let t = (pick % (ts as u32 + 2)) as i64;
                let got = log.offset_for_timestamp(t).await.unwrap();
                let want = m
                    .batches
                    .iter()
                    .find(|b| b.2 >= t && b.1 >= m.log_start_offset)
                    .map(|b| (b.0.max(m.log_start_offset), b.2));
                assert_eq!(got, want, "offset_for_timestamp({t})");
            }
        }
        assert_eq!(log.high_watermark(), m.end);
    }
    log.close().await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p-0");
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move { run_ops(&dir, ops).await })
            .unwrap()
            .join()
            .unwrap();
    }
}
