//! Gap safety under load: 8 writers append 2,000 events each on PostgreSQL
//! while a reader tails the global order; the reader must see every event
//! exactly once, in cursor order, and each stream in version order.

use std::collections::{HashMap, HashSet};

use admit_ledger::testing::fresh_postgres;
use admit_ledger::{ExpectedVersion, GlobalCursor, Metadata, NewEvent};
use uuid::Uuid;

const WRITERS: usize = 8;
const EVENTS_PER_WRITER: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tailing_reader_sees_every_event_once_in_order() {
    let (_, db) = fresh_postgres().await;
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let db = db.clone();
        writers.spawn(async move {
            let stream = format!("writer-{w}");
            let mut written = 0;
            while written < EVENTS_PER_WRITER {
                // Batches of 1..=3 events, so transactions differ in length
                // and commit in an order unlike their positions.
                let n = (1 + (written % 3)).min(EVENTS_PER_WRITER - written);
                let batch: Vec<NewEvent> = (0..n)
                    .map(|i| NewEvent {
                        event_id: Uuid::now_v7(),
                        event_type: "Written".into(),
                        schema_version: 1,
                        payload: format!("{{\"n\":{}}}", written + i),
                    })
                    .collect();
                let mut tx = db.begin().await.unwrap();
                tx.append(&stream, ExpectedVersion::Any, &batch, &Metadata::default(), chrono::Utc::now())
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
                tx.commit().await.unwrap();
                written += n;
            }
        });
    }

    let total = WRITERS * EVENTS_PER_WRITER;
    let mut seen = HashSet::new();
    let mut versions: HashMap<String, i64> = HashMap::new();
    let mut cursor = GlobalCursor::START;
    let mut positions_in_tx: Option<(u64, i64)> = None;
    // Readers wait for every transaction in flight on the whole server (other
    // tests' too), so the tail can lag; the deadline only bounds a hang.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while seen.len() < total {
        while let Some(done) = writers.try_join_next() {
            done.expect("a writer failed");
        }
        assert!(std::time::Instant::now() < deadline, "reader saw {} of {total} events", seen.len());
        let batch = db.read_all(cursor, 500).await.unwrap();
        if batch.is_empty() {
            tokio::task::yield_now().await;
            continue;
        }
        for e in batch {
            let next = GlobalCursor::after(&e);
            assert!(next > cursor, "cursor went backwards: {cursor:?} then {next:?}");
            if let Some((tx, pos)) = positions_in_tx {
                if tx == e.transaction_id {
                    assert!(e.position > pos, "positions not ascending within a transaction");
                }
            }
            positions_in_tx = Some((e.transaction_id, e.position));
            cursor = next;
            assert!(seen.insert(e.event_id), "event {} seen twice", e.event_id);
            let v = versions.entry(e.stream_id.clone()).or_insert(0);
            assert_eq!(e.stream_version, *v + 1, "stream {} out of order", e.stream_id);
            *v = e.stream_version;
        }
    }
    while let Some(done) = writers.join_next().await {
        done.expect("a writer failed");
    }
    assert_eq!(seen.len(), total, "reader missed events");
    assert!(versions.values().all(|v| *v == EVENTS_PER_WRITER as i64));
    // Nothing is left behind the cursor.
    assert!(db.read_all(cursor, 10).await.unwrap().is_empty());
}
