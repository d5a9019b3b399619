//! The event log's contract, on SQLite and PostgreSQL alike.

use admit_ledger::testing::{fresh_databases, fresh_postgres};
use admit_ledger::{Database, ExpectedVersion, GlobalCursor, LedgerError, Metadata, NewEvent};
use chrono::Utc;
use uuid::Uuid;

fn event(n: usize) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "Counted".into(),
        schema_version: 1,
        payload: format!("{{\"n\":{n}}}"),
    }
}

fn meta() -> Metadata {
    Metadata { actor: Some("test".into()), correlation_id: Some(Uuid::now_v7()), ..Default::default() }
}

/// Pages through the global order until `expected` events were read.
/// Readers wait for transactions in flight anywhere on the server (other
/// tests' too), so the tail may need a few tries; bounded.
async fn read_everything(db: &Database, expected: usize) -> Vec<admit_ledger::RecordedEvent> {
    let mut out = Vec::new();
    let mut cursor = GlobalCursor::START;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let batch = db.read_all(cursor, 7).await.unwrap();
        match batch.last() {
            Some(last) => cursor = GlobalCursor::after(last),
            None if out.len() >= expected || std::time::Instant::now() > deadline => return out,
            None => tokio::task::yield_now().await,
        }
        out.extend(batch);
    }
}

#[tokio::test]
async fn append_checks_the_expected_version_and_writes_nothing_on_conflict() {
    for (url, db) in fresh_databases().await {
        let out = db.append("s-1", ExpectedVersion::Exact(0), &[event(1), event(2)], &meta()).await.unwrap();
        assert_eq!(out.version, 2, "{url}");
        let err = db.append("s-1", ExpectedVersion::Exact(1), &[event(3)], &meta()).await.unwrap_err();
        assert!(matches!(err, LedgerError::Conflict { actual: 2, .. }), "{url}: {err}");
        let err = db.append("s-1", ExpectedVersion::Exact(0), &[event(3)], &meta()).await.unwrap_err();
        assert!(err.is_retryable(), "{url}");
        assert_eq!(db.read_stream("s-1").await.unwrap().len(), 2, "{url}");
        let out = db.append("s-1", ExpectedVersion::Any, &[event(3)], &meta()).await.unwrap();
        assert_eq!(out.version, 3, "{url}");
        let stream = db.read_stream("s-1").await.unwrap();
        assert_eq!(stream.iter().map(|e| e.stream_version).collect::<Vec<_>>(), vec![1, 2, 3], "{url}");
        assert_eq!(stream[0].metadata.actor.as_deref(), Some("test"));
        assert_eq!(stream[1].payload, "{\"n\":2}");
    }
}

#[tokio::test]
async fn a_retried_append_is_a_no_op() {
    for (url, db) in fresh_databases().await {
        let batch = [event(1), event(2)];
        let first = db.append("s", ExpectedVersion::Exact(0), &batch, &meta()).await.unwrap();
        let again = db.append("s", ExpectedVersion::Exact(0), &batch, &meta()).await.unwrap();
        assert!(!first.already_appended);
        assert!(again.already_appended, "{url}");
        assert_eq!(again.version, 2);
        assert_eq!(db.read_stream("s").await.unwrap().len(), 2, "{url}");
        let mixed = [batch[0].clone(), event(3)];
        let err = db.append("s", ExpectedVersion::Any, &mixed, &meta()).await.unwrap_err();
        assert!(matches!(err, LedgerError::PartialDuplicate { .. }), "{url}: {err}");
        // An event stored in another stream, appended to a new one: refused,
        // and the new stream is not opened.
        let err = db.append("t", ExpectedVersion::Any, &batch[..1], &meta()).await.unwrap_err();
        assert!(matches!(err, LedgerError::Conflict { .. }), "{url}: {err}");
        assert!(db.read_stream("t").await.unwrap().is_empty(), "{url}");
        let opened = db.append("t", ExpectedVersion::Exact(0), &[event(9)], &meta()).await.unwrap();
        assert_eq!(opened.version, 1, "{url}: the failed append left no head");
    }
}

#[tokio::test]
async fn a_failed_transaction_leaves_no_trace() {
    for (url, db) in fresh_databases().await {
        let mut tx = db.begin().await.unwrap();
        tx.append("a", ExpectedVersion::Exact(0), &[event(1)], &meta(), Utc::now()).await.unwrap();
        let err = tx.append("b", ExpectedVersion::Exact(5), &[event(2)], &meta(), Utc::now()).await;
        assert!(err.is_err());
        tx.rollback().await.unwrap();
        assert!(read_everything(&db, 0).await.is_empty(), "{url}");
        assert_eq!(db.verify().await.unwrap().streams, 0);
    }
}

#[tokio::test]
async fn the_global_order_pages_through_every_event_once() {
    for (url, db) in fresh_databases().await {
        for i in 0..30 {
            db.append(&format!("s-{}", i % 4), ExpectedVersion::Any, &[event(i), event(i + 100)], &meta())
                .await
                .unwrap();
        }
        let all = read_everything(&db, 60).await;
        assert_eq!(all.len(), 60, "{url}");
        let mut ids: Vec<_> = all.iter().map(|e| e.event_id).collect();
        ids.dedup();
        assert_eq!(ids.len(), 60);
        assert!(all.windows(2).all(|w| GlobalCursor::after(&w[0]) < GlobalCursor::after(&w[1])));
        assert!(db.head().await.unwrap() <= GlobalCursor::after(all.last().unwrap()), "{url}");
    }
}

#[tokio::test]
async fn the_events_table_refuses_update_and_delete() {
    for (url, db) in fresh_databases().await {
        db.append("s", ExpectedVersion::Any, &[event(1)], &meta()).await.unwrap();
        let mut tx = db.begin().await.unwrap();
        let upd = admit_ledger::on_tx!(&mut tx, c => sqlx::query("UPDATE events SET payload = '{}'")
            .execute(&mut *c).await.map(|_| ()));
        assert!(upd.is_err(), "{url}: UPDATE went through");
        tx.rollback().await.unwrap();
        let mut tx = db.begin().await.unwrap();
        let del = admit_ledger::on_tx!(&mut tx, c => sqlx::query("DELETE FROM events")
            .execute(&mut *c).await.map(|_| ()));
        assert!(del.is_err(), "{url}: DELETE went through");
        tx.rollback().await.unwrap();
        assert_eq!(db.read_stream("s").await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn verify_names_the_event_whose_stored_bytes_were_edited() {
    for (url, db) in fresh_databases().await {
        for i in 0..5 {
            db.append("victim", ExpectedVersion::Any, &[event(i)], &meta()).await.unwrap();
            db.append("bystander", ExpectedVersion::Any, &[event(i)], &meta()).await.unwrap();
        }
        let report = db.verify().await.unwrap();
        assert!(report.is_ok(), "{url}: {report:?}");
        assert_eq!((report.streams, report.events), (2, 10));
        let target = db.read_stream("victim").await.unwrap()[2].clone();

        // An attacker with full database rights, bypassing the triggers.
        let mut tx = db.begin().await.unwrap();
        match &mut tx.conn {
            admit_ledger::Conn::Postgres(t) => {
                sqlx::query("ALTER TABLE events DISABLE TRIGGER events_refuse_update_delete")
                    .execute(&mut **t)
                    .await
                    .unwrap();
                sqlx::query("UPDATE events SET payload = '{\"n\":999}' WHERE event_id = $1")
                    .bind(target.event_id)
                    .execute(&mut **t)
                    .await
                    .unwrap();
            }
            admit_ledger::Conn::Sqlite(t) => {
                sqlx::query("DROP TRIGGER events_refuse_update").execute(&mut **t).await.unwrap();
                sqlx::query("UPDATE events SET payload = '{\"n\":999}' WHERE event_id = $1")
                    .bind(target.event_id)
                    .execute(&mut **t)
                    .await
                    .unwrap();
            }
        }
        tx.commit().await.unwrap();

        let report = db.verify().await.unwrap();
        assert!(!report.is_ok(), "{url}");
        let first = report.first_mismatch().unwrap();
        assert_eq!(first.event_id, target.event_id, "{url}");
        assert_eq!(first.stream_version, 3);
        assert_eq!(report.mismatches.len(), 1, "{url}: {report:?}");
    }
}

/// A transaction that started first but commits last must not be skipped
/// by a reader that already saw a later transaction's events.
#[tokio::test]
async fn a_late_committing_transaction_is_not_skipped() {
    let (_, db) = fresh_postgres().await;
    let mut slow = db.begin().await.unwrap();
    slow.append("slow", ExpectedVersion::Any, &[event(1)], &meta(), Utc::now()).await.unwrap();
    db.append("fast", ExpectedVersion::Any, &[event(2)], &meta()).await.unwrap();

    // The fast event committed, but the slow transaction holds a lower
    // position and is still open: the reader must wait for it.
    let seen = db.read_all(GlobalCursor::START, 100).await.unwrap();
    assert!(seen.is_empty(), "reader ran ahead of an open transaction: {seen:?}");

    slow.commit().await.unwrap();
    // Readers also wait for transactions in flight elsewhere on the server
    // (other tests); wait, bounded, until both are readable.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let seen = loop {
        let seen = db.read_all(GlobalCursor::START, 100).await.unwrap();
        if seen.len() >= 2 || std::time::Instant::now() > deadline {
            break seen;
        }
        tokio::task::yield_now().await;
    };
    let streams: Vec<_> = seen.iter().map(|e| e.stream_id.as_str()).collect();
    assert_eq!(streams, ["slow", "fast"]);
    assert!(seen[0].position < seen[1].position);
}

/// A transaction that took its id before a stream's last writer gives way
/// (retryable `Conflict`), so the global order by transaction id never puts
/// a stream's later version before an earlier one (PostgreSQL; SQLite has
/// one writer and orders by position).
#[tokio::test]
async fn an_older_transaction_never_appends_after_a_newer_writer_of_the_stream() {
    let (_, db) = fresh_postgres().await;
    db.append("shared", ExpectedVersion::Exact(0), &[event(0)], &meta()).await.unwrap();
    let mut older = db.begin().await.unwrap();
    older.append("own", ExpectedVersion::Exact(0), &[event(1)], &meta(), Utc::now()).await.unwrap();
    // A newer transaction writes the shared stream and commits first.
    db.append("shared", ExpectedVersion::Exact(1), &[event(2)], &meta()).await.unwrap();
    let err = older.append("shared", ExpectedVersion::Any, &[event(3)], &meta(), Utc::now()).await.unwrap_err();
    assert!(matches!(err, LedgerError::Conflict { .. }) && err.is_retryable(), "{err}");
    older.rollback().await.unwrap();
    // Run again (a new transaction, a new id), it appends.
    let mut again = db.begin().await.unwrap();
    again.append("own", ExpectedVersion::Exact(0), &[event(1)], &meta(), Utc::now()).await.unwrap();
    let out = again.append("shared", ExpectedVersion::Any, &[event(3)], &meta(), Utc::now()).await.unwrap();
    again.commit().await.unwrap();
    assert_eq!(out.version, 3);
    let global = read_everything(&db, 4).await;
    let shared: Vec<i64> = global.iter().filter(|e| e.stream_id == "shared").map(|e| e.stream_version).collect();
    assert_eq!(shared, [1, 2, 3], "the global order keeps the stream's order");
}

/// The binary copy of the log a rebuild streams on PostgreSQL returns what
/// paging with `read_all_payloads` returns, field for field and in the
/// same order, in batches of any size; it stops below a transaction still
/// in flight, as the pages do, and SQLite has none.
#[tokio::test]
async fn the_binary_copy_of_the_log_equals_its_pages() {
    let (_, db) = fresh_postgres().await;
    for n in 0..25 {
        let stream = format!("copied-{}", n % 4);
        let batch: Vec<NewEvent> = (0..=n % 3).map(|i| event(n * 10 + i)).collect();
        db.append(&stream, ExpectedVersion::Any, &batch, &meta()).await.unwrap();
    }
    // Unicode and an escape in a payload travel as they were stored.
    let odd = NewEvent { payload: "{\"name\":\"Zoë \\\"Ω\\\" 名前\"}".into(), ..event(999) };
    db.append("copied-odd", ExpectedVersion::Any, &[odd], &meta()).await.unwrap();
    let expected = read_everything(&db, 50).await;
    assert_eq!(expected.len(), 50);

    let mut slow = db.begin().await.unwrap();
    slow.append("in-flight", ExpectedVersion::Any, &[event(1)], &meta(), Utc::now()).await.unwrap();
    // Committed, but by a transaction newer than `slow`: held back too.
    db.append("after-in-flight", ExpectedVersion::Any, &[event(2)], &meta()).await.unwrap();
    // Like the pages, a copy stops below transactions in flight anywhere
    // on the server (other tests' too): copied again, bounded, until it
    // holds everything committed before `slow`.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let copied = loop {
        let mut copy = db.copy_log().await.unwrap().expect("PostgreSQL copies");
        let mut copied = Vec::new();
        loop {
            let batch = copy.next_batch(5).await.unwrap();
            assert!(batch.len() <= 5);
            if batch.is_empty() {
                break;
            }
            copied.extend(batch);
        }
        assert!(copy.next_batch(5).await.unwrap().is_empty(), "the end stays the end");
        if copied.len() >= expected.len() || std::time::Instant::now() > deadline {
            break copied;
        }
        tokio::task::yield_now().await;
    };
    slow.commit().await.unwrap();

    let fields = |e: &admit_ledger::RecordedEvent| {
        (
            e.position,
            e.transaction_id,
            e.event_id,
            e.stream_id.clone(),
            e.stream_version,
            e.event_type.clone(),
            e.schema_version,
            e.payload.clone(),
            e.recorded_at,
        )
    };
    let copied: Vec<_> = copied.iter().map(fields).collect();
    assert_eq!(
        copied,
        expected.iter().map(fields).collect::<Vec<_>>(),
        "the copy ran ahead of an open transaction, or differs"
    );
    assert!(copied.iter().any(|c| c.7.contains("Zoë \\\"Ω\\\" 名前")));

    let sqlite = Database::connect(&admit_ledger::testing::fresh_sqlite_url()).await.unwrap();
    assert!(sqlite.copy_log().await.unwrap().is_none());
}
