//! Appending to several streams at once (`Tx::append_streams`): the same
//! rows, outcomes and errors as appending one stream after the other, on
//! SQLite (which does exactly that) and PostgreSQL (five statements).

use admit_ledger::testing::{fresh_databases, fresh_postgres};
use admit_ledger::{Database, ExpectedVersion, LedgerError, Metadata, NewEvent, StreamAppend};
use chrono::{DateTime, Utc};
use uuid::Uuid;

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "Counted".into(),
            schema_version: 1,
            payload: format!("{{\"n\":{i}}}"),
        })
        .collect()
}

fn meta() -> Metadata {
    Metadata { actor: Some("test".into()), correlation_id: Some(Uuid::now_v7()), ..Default::default() }
}

/// `existing` at version 1 and `any` at version 2; `new` does not exist.
async fn three_streams(db: &Database) {
    db.append("existing", ExpectedVersion::Exact(0), &events(1), &meta()).await.unwrap();
    db.append("any", ExpectedVersion::Exact(0), &events(2), &meta()).await.unwrap();
}

/// Every stored column of every event, stream by stream.
async fn stored(db: &Database) -> Vec<(String, i64, Uuid, String, Vec<u8>)> {
    let mut rows = Vec::new();
    for stream in ["any", "existing", "new"] {
        for e in db.read_stream(stream).await.unwrap() {
            rows.push((e.stream_id, e.stream_version, e.event_id, e.metadata_text, e.hash));
        }
    }
    rows
}

#[tokio::test]
async fn several_streams_at_once_store_what_one_by_one_stores() {
    let (new, existing, any) = (events(2), events(1), events(3));
    let metadata = meta();
    let at: DateTime<Utc> = Utc::now();
    let batch = [
        StreamAppend { stream: "new", expected: ExpectedVersion::Exact(0), events: &new },
        StreamAppend { stream: "existing", expected: ExpectedVersion::Exact(1), events: &existing },
        StreamAppend { stream: "any", expected: ExpectedVersion::Any, events: &any },
    ];
    for (url, db) in fresh_databases().await {
        // The same history and the same events, appended one by one.
        let (_, one_by_one) = match db.backend() {
            admit_ledger::Backend::Postgres => fresh_postgres().await,
            admit_ledger::Backend::Sqlite => {
                let url = admit_ledger::testing::fresh_sqlite_url();
                let db = Database::connect(&url).await.unwrap();
                db.migrate().await.unwrap();
                (url, db)
            }
        };
        // Heads and chains must come from identical histories.
        for d in [&db, &one_by_one] {
            let mut tx = d.begin().await.unwrap();
            tx.append("existing", ExpectedVersion::Exact(0), &existing_history(), &metadata, at).await.unwrap();
            tx.append("any", ExpectedVersion::Exact(0), &any_history(), &metadata, at).await.unwrap();
            tx.commit().await.unwrap();
        }
        let mut tx = db.begin().await.unwrap();
        let outcomes = tx.append_streams(&batch, &metadata, at).await.unwrap();
        tx.commit().await.unwrap();
        let versions: Vec<(i64, bool)> = outcomes.iter().map(|o| (o.version, o.already_appended)).collect();
        assert_eq!(versions, [(2, false), (2, false), (5, false)], "{url}");

        let mut tx = one_by_one.begin().await.unwrap();
        for a in &batch {
            tx.append(a.stream, a.expected, a.events, &metadata, at).await.unwrap();
        }
        tx.commit().await.unwrap();

        assert_eq!(stored(&db).await, stored(&one_by_one).await, "{url}: the same rows, hashes included");
        let report = db.verify().await.unwrap();
        assert!(report.is_ok(), "{url}: {report:?}");
        assert_eq!((report.streams, report.events), (3, 2 + 2 + 5), "{url}");
    }
}

/// Fixed event ids for the histories both databases share.
fn existing_history() -> Vec<NewEvent> {
    fixed(1, 1)
}

fn any_history() -> Vec<NewEvent> {
    fixed(100, 2)
}

fn fixed(from: u128, n: u128) -> Vec<NewEvent> {
    (from..from + n)
        .map(|i| NewEvent {
            event_id: Uuid::from_u128(i),
            event_type: "Counted".into(),
            schema_version: 1,
            payload: format!("{{\"history\":{i}}}"),
        })
        .collect()
}

#[tokio::test]
async fn one_stream_at_the_wrong_version_fails_the_batch_naming_it() {
    for (url, db) in fresh_databases().await {
        three_streams(&db).await;
        let (new, existing, any) = (events(1), events(1), events(1));
        let mut tx = db.begin().await.unwrap();
        let err = tx
            .append_streams(
                &[
                    StreamAppend { stream: "new", expected: ExpectedVersion::Exact(0), events: &new },
                    StreamAppend { stream: "existing", expected: ExpectedVersion::Exact(7), events: &existing },
                    StreamAppend { stream: "any", expected: ExpectedVersion::Any, events: &any },
                ],
                &meta(),
                Utc::now(),
            )
            .await
            .unwrap_err();
        tx.rollback().await.unwrap();
        assert!(
            matches!(&err, LedgerError::Conflict { stream, actual: 1, .. } if stream == "existing")
                && err.is_retryable(),
            "{url}: {err}"
        );
        assert_eq!(stored(&db).await.len(), 3, "{url}: nothing of the batch is stored");
    }
}

#[tokio::test]
async fn a_retried_batch_is_a_no_op_and_a_partly_stored_one_is_refused() {
    for (url, db) in fresh_databases().await {
        three_streams(&db).await;
        let (new, existing) = (events(2), events(1));
        let batch = [
            StreamAppend { stream: "new", expected: ExpectedVersion::Exact(0), events: &new },
            StreamAppend { stream: "existing", expected: ExpectedVersion::Exact(1), events: &existing },
        ];
        for expect_retry in [false, true] {
            let mut tx = db.begin().await.unwrap();
            let outcomes = tx.append_streams(&batch, &meta(), Utc::now()).await.unwrap();
            tx.commit().await.unwrap();
            let seen: Vec<(i64, bool)> = outcomes.iter().map(|o| (o.version, o.already_appended)).collect();
            assert_eq!(seen, [(2, expect_retry), (2, expect_retry)], "{url}");
        }
        assert_eq!(stored(&db).await.len(), 3 + 3, "{url}: stored once");

        let mixed = [new[0].clone(), events(1).remove(0)];
        let other = events(1);
        let mut tx = db.begin().await.unwrap();
        let err = tx
            .append_streams(
                &[
                    StreamAppend { stream: "any", expected: ExpectedVersion::Any, events: &other },
                    StreamAppend { stream: "new", expected: ExpectedVersion::Any, events: &mixed },
                ],
                &meta(),
                Utc::now(),
            )
            .await
            .unwrap_err();
        tx.rollback().await.unwrap();
        assert!(matches!(&err, LedgerError::PartialDuplicate { stream } if stream == "new"), "{url}: {err}");
    }
}

/// As `an_older_transaction_never_appends_after_a_newer_writer_of_the_stream`
/// in tests/log.rs, for a stream in a batch.
#[tokio::test]
async fn an_older_transaction_gives_way_in_a_batch_too() {
    let (_, db) = fresh_postgres().await;
    db.append("shared", ExpectedVersion::Exact(0), &events(1), &meta()).await.unwrap();
    let mut older = db.begin().await.unwrap();
    older.append("own", ExpectedVersion::Exact(0), &events(1), &meta(), Utc::now()).await.unwrap();
    db.append("shared", ExpectedVersion::Exact(1), &events(1), &meta()).await.unwrap();
    let (mine, shared) = (events(1), events(1));
    let err = older
        .append_streams(
            &[
                StreamAppend { stream: "mine", expected: ExpectedVersion::Exact(0), events: &mine },
                StreamAppend { stream: "shared", expected: ExpectedVersion::Any, events: &shared },
            ],
            &meta(),
            Utc::now(),
        )
        .await
        .unwrap_err();
    assert!(matches!(&err, LedgerError::Conflict { stream, .. } if stream == "shared") && err.is_retryable(), "{err}");
    older.rollback().await.unwrap();
    assert_eq!(db.read_stream("shared").await.unwrap().len(), 2);
    assert!(db.read_stream("mine").await.unwrap().is_empty());
}
