//! Property: after any sequence of commands (successful or refused), a
//! replay of the log into fresh tables equals the inline read models, on
//! both backends.

mod common;

use std::collections::BTreeSet;

use admit_api::{Admit, RequestContext};
use admit_domain::access::{Access, Permission};
use admit_domain::ids::{AccountId, InvitationId, UserId};
use admit_domain::invitation::DeliveryState;
use common::*;
use proptest::prelude::*;

/// One step of a random run. Indexes pick among people and invitations
/// made so far; out-of-range picks wrap around.
#[derive(Debug, Clone)]
enum Step {
    Invite {
        person: u8,
        roles: u8,
    },
    AcceptNew {
        invitation: u8,
    },
    AcceptExisting {
        invitation: u8,
        user: u8,
    },
    Resend {
        invitation: u8,
    },
    Revoke {
        invitation: u8,
    },
    Decline {
        invitation: u8,
    },
    Update {
        invitation: u8,
        roles: u8,
    },
    Deliver {
        invitation: u8,
        state: u8,
    },
    /// What the mailer records: several invitations' facts in one
    /// transaction (batched on PostgreSQL unless an open or a click is in it).
    DeliverMany {
        facts: Vec<(u8, u8)>,
    },
    DefineRole {
        n: u8,
    },
    ChangeRole {
        n: u8,
    },
    DeleteRole {
        n: u8,
    },
    ChangeMember {
        user: u8,
        roles: u8,
    },
    Deactivate {
        user: u8,
    },
    Reactivate {
        user: u8,
    },
    Remove {
        user: u8,
    },
    Cancel {
        user: u8,
    },
    LogIn {
        user: u8,
    },
    Erase {
        person: u8,
    },
    SetAccountActive {
        active: bool,
    },
}

/// The redirect the property's account allows.
const REDIRECT: &str = "https://app.example.com/welcome";

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..12, 0u8..4).prop_map(|(person, roles)| Step::Invite { person, roles }),
        3 => any::<u8>().prop_map(|invitation| Step::AcceptNew { invitation }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(invitation, user)| Step::AcceptExisting { invitation, user }),
        1 => any::<u8>().prop_map(|invitation| Step::Resend { invitation }),
        1 => any::<u8>().prop_map(|invitation| Step::Revoke { invitation }),
        1 => any::<u8>().prop_map(|invitation| Step::Decline { invitation }),
        1 => (any::<u8>(), 0u8..4).prop_map(|(invitation, roles)| Step::Update { invitation, roles }),
        1 => (any::<u8>(), 0u8..6).prop_map(|(invitation, state)| Step::Deliver { invitation, state }),
        2 => proptest::collection::vec((any::<u8>(), 0u8..8), 1..6).prop_map(|facts| Step::DeliverMany { facts }),
        1 => (0u8..3).prop_map(|n| Step::DefineRole { n }),
        1 => (0u8..3).prop_map(|n| Step::ChangeRole { n }),
        1 => (0u8..3).prop_map(|n| Step::DeleteRole { n }),
        1 => (any::<u8>(), 0u8..4).prop_map(|(user, roles)| Step::ChangeMember { user, roles }),
        1 => any::<u8>().prop_map(|user| Step::Deactivate { user }),
        1 => any::<u8>().prop_map(|user| Step::Reactivate { user }),
        1 => any::<u8>().prop_map(|user| Step::Remove { user }),
        1 => any::<u8>().prop_map(|user| Step::Cancel { user }),
        1 => any::<u8>().prop_map(|user| Step::LogIn { user }),
        1 => (0u8..12).prop_map(|person| Step::Erase { person }),
        1 => any::<bool>().prop_map(|active| Step::SetAccountActive { active }),
    ]
}

fn roles(n: u8) -> Access {
    let custom = ["support", "billing", "ops"];
    match n % 4 {
        0 => Access::roles([role("viewer")]),
        1 => Access::roles([role("editor"), role("viewer")]),
        2 => Access::roles([role(custom[(n / 4) as usize % 3])]),
        _ => Access::default(),
    }
}

struct Run {
    admit: Admit,
    account: AccountId,
    owner: UserId,
    invitations: Vec<(InvitationId, String, String)>,
    users: Vec<(UserId, String)>,
}

fn pick<T: Clone>(v: &[T], i: u8) -> Option<T> {
    (!v.is_empty()).then(|| v[i as usize % v.len()].clone())
}

impl Run {
    fn owner(&self) -> RequestContext {
        as_user(self.owner)
    }

    /// Applies a step; refusals by the rules are expected and ignored,
    /// anything else (a database error) fails the run.
    async fn apply(&mut self, s: &Step) {
        let a = &self.admit;
        let r: Result<(), admit_api::Error> = match s {
            Step::Invite { person, roles: r } => {
                let to = format!("person{person}@example.com");
                let mut req = invite(&to, &[]);
                req.access = roles(*r);
                req.name = Some(name(&format!("Person {person}")));
                // Every part of an invitation's row: metadata and a
                // redirect for some (REDIRECT is allowed in the account).
                req.metadata = (person % 2 == 0).then(|| serde_json::json!({ "person": person, "tags": ["b", "a"] }));
                req.redirect_url = (person % 3 == 0).then(|| REDIRECT.to_string());
                a.invite(&self.owner(), self.account, req).await.map(|i| {
                    self.invitations.push((i.invitation_id, i.token.as_str().to_string(), to));
                })
            }
            Step::AcceptNew { invitation } => match pick(&self.invitations, *invitation) {
                Some((_, token, to)) => a.accept_as_new_user(&token, name("New Person"), PASSWORD).await.map(|u| {
                    self.users.push((u, to));
                }),
                None => Ok(()),
            },
            Step::AcceptExisting { invitation, user } => {
                match (pick(&self.invitations, *invitation), pick(&self.users, *user)) {
                    (Some((_, token, _)), Some((u, _))) => a.accept_as_user(u, &token).await.map(|_| ()),
                    _ => Ok(()),
                }
            }
            Step::Resend { invitation } => match pick(&self.invitations, *invitation) {
                Some((id, _, to)) => a.resend(&self.owner(), self.account, id, false).await.map(|i| {
                    self.invitations.push((id, i.token.as_str().to_string(), to));
                }),
                None => Ok(()),
            },
            Step::Revoke { invitation } => match pick(&self.invitations, *invitation) {
                Some((id, _, _)) => a.revoke(&self.owner(), self.account, id).await,
                None => Ok(()),
            },
            Step::Decline { invitation } => match pick(&self.invitations, *invitation) {
                Some((_, token, _)) => a.decline(&token).await.map(|_| ()),
                None => Ok(()),
            },
            Step::Update { invitation, roles: r } => match pick(&self.invitations, *invitation) {
                Some((id, _, _)) => {
                    a.update_invitation(
                        &self.owner(),
                        self.account,
                        id,
                        Some(roles(*r)),
                        Some(admit_domain::values::LinkLifetime::from_hours(48).unwrap()),
                    )
                    .await
                }
                None => Ok(()),
            },
            Step::Deliver { invitation, state } => match pick(&self.invitations, *invitation) {
                Some((id, _, _)) => {
                    let states = [
                        DeliveryState::Processed,
                        DeliveryState::Delivered,
                        DeliveryState::Opened,
                        DeliveryState::Clicked,
                        DeliveryState::Bounced,
                        DeliveryState::Failed,
                    ];
                    a.record_delivery(id, states[*state as usize % 6], Some("250 ok".into())).await
                }
                None => Ok(()),
            },
            Step::DeliverMany { facts } => {
                // Mostly the mailer's own facts; now and then an open.
                let states = [
                    DeliveryState::Processed,
                    DeliveryState::Delivered,
                    DeliveryState::Processed,
                    DeliveryState::Delivered,
                    DeliveryState::Failed,
                    DeliveryState::Failed,
                    DeliveryState::Processed,
                    DeliveryState::Opened,
                ];
                let facts: Vec<_> = facts
                    .iter()
                    .filter_map(|(i, st)| {
                        pick(&self.invitations, *i)
                            .map(|(id, _, _)| (id, states[*st as usize % 8], Some("250 ok".to_string())))
                    })
                    .collect();
                if facts.is_empty() {
                    Ok(())
                } else {
                    a.record_deliveries(|_tx| {
                        let facts = facts.clone();
                        Box::pin(async move { Ok(facts) })
                    })
                    .await
                    .map(|_| ())
                }
            }
            Step::DefineRole { n } | Step::ChangeRole { n } => {
                let name = role(["support", "billing", "ops"][*n as usize % 3]);
                let perms: BTreeSet<Permission> = if matches!(s, Step::DefineRole { .. }) {
                    [Permission::AccountRead, Permission::MembersRead].into()
                } else {
                    [Permission::AccountRead, Permission::InvitationsRead].into()
                };
                if matches!(s, Step::DefineRole { .. }) {
                    a.define_role(&self.owner(), self.account, name, perms).await
                } else {
                    a.change_role(&self.owner(), self.account, name, perms).await
                }
            }
            Step::DeleteRole { n } => {
                a.delete_role(&self.owner(), self.account, role(["support", "billing", "ops"][*n as usize % 3])).await
            }
            Step::ChangeMember { user, roles: r } => match pick(&self.users, *user) {
                Some((u, _)) => a.change_member_access(&self.owner(), self.account, u, roles(*r)).await,
                None => Ok(()),
            },
            Step::Deactivate { user } | Step::Reactivate { user } | Step::Remove { user } | Step::Cancel { user } => {
                match pick(&self.users, *user) {
                    Some((u, _)) => match s {
                        Step::Deactivate { .. } => a.deactivate_member(&self.owner(), self.account, u).await,
                        Step::Reactivate { .. } => a.reactivate_member(&self.owner(), self.account, u).await,
                        Step::Remove { .. } => a.remove_member(&self.owner(), self.account, u).await,
                        _ => a.cancel_membership(u, self.account).await,
                    },
                    None => Ok(()),
                }
            }
            Step::LogIn { user } => match pick(&self.users, *user) {
                Some((_, to)) => a.log_in(&email(&to), PASSWORD).await.map(|_| ()),
                None => Ok(()),
            },
            Step::SetAccountActive { active } => {
                a.set_account_active(&RequestContext::cli(), self.account, *active).await
            }
            Step::Erase { person } => a.erase(&email(&format!("person{person}@example.com"))).await.map(|_| ()),
        };
        if let Err(e) = r {
            assert!(
                matches!(
                    e,
                    admit_api::Error::Domain(_) | admit_api::Error::NotFound(_) | admit_api::Error::InvalidCredentials
                ),
                "step {s:?} failed with a non-rule error: {e}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, max_shrink_iters: 20, ..ProptestConfig::default() })]

    #[test]
    fn replay_equals_the_inline_read_models(steps in prop::collection::vec(step(), 30..70)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            for (url, admit) in admits().await {
                let (account, owner) = account_with_owner(&admit, "PROP-1", 8).await;
                let mut settings = admit.account_snapshot(account).await.unwrap().settings;
                settings.allowed_redirect_urls.insert(REDIRECT.to_string());
                admit.change_settings(&as_user(owner), account, settings).await.unwrap();
                let mut run = Run { admit, account, owner, invitations: vec![], users: vec![] };
                for s in &steps {
                    run.apply(s).await;
                }
                assert_replay_matches(&run.admit, &url).await;
                assert_read_models_match_the_domain(&run.admit, &url).await;
                assert!(run.admit.db.verify().await.unwrap().is_ok(), "{url}");
            }
        });
    }
}

/// The read models say what the domain's own fold of the log says: every
/// invitation's status and grant, every member's status and grant.
async fn assert_read_models_match_the_domain(admit: &Admit, url: &str) {
    use admit_projections::as_of::{accounts_as_of, Moment};
    let views = accounts_as_of(&admit.db, Moment::Position(i64::MAX)).await.unwrap();
    let mut from_domain: Vec<(String, String, String)> = Vec::new();
    let mut members_from_domain: Vec<(String, String, String)> = Vec::new();
    for v in &views {
        for i in &v.invitations {
            from_domain.push((
                i.invitation_id.to_string(),
                i.status.to_string(),
                serde_json::to_string(&i.access).unwrap(),
            ));
        }
        for m in &v.members {
            members_from_domain.push((
                m.user_id.to_string(),
                m.status.to_string(),
                serde_json::to_string(&m.access).unwrap(),
            ));
        }
    }
    from_domain.sort();
    members_from_domain.sort();
    let (mut inv_rows, mut member_rows) = read_model_rows(admit).await;
    inv_rows.sort();
    member_rows.sort();
    assert_eq!(inv_rows, from_domain, "{url}: invitations read model disagrees with the domain");
    assert_eq!(member_rows, members_from_domain, "{url}: members read model disagrees with the domain");
}

async fn read_model_rows(admit: &Admit) -> (Vec<(String, String, String)>, Vec<(String, String, String)>) {
    let inv_sql = "SELECT invitation_id, status, access FROM invitations";
    let mem_sql = "SELECT user_id, status, access FROM members";
    match &admit.db {
        admit_ledger::Database::Postgres(p) => {
            let a: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(inv_sql).fetch_all(p).await.unwrap();
            let b: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(mem_sql).fetch_all(p).await.unwrap();
            (
                a.into_iter().map(|(i, s, x)| (i.to_string(), s, x)).collect(),
                b.into_iter().map(|(i, s, x)| (i.to_string(), s, x)).collect(),
            )
        }
        admit_ledger::Database::Sqlite { reader, .. } => {
            let a: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(inv_sql).fetch_all(reader).await.unwrap();
            let b: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(mem_sql).fetch_all(reader).await.unwrap();
            (
                a.into_iter().map(|(i, s, x)| (i.to_string(), s, x)).collect(),
                b.into_iter().map(|(i, s, x)| (i.to_string(), s, x)).collect(),
            )
        }
    }
}

#[tokio::test]
async fn read_models_of_an_older_shape_are_rebuilt_on_start() {
    for (url, admit) in admits().await {
        let (account, owner) = account_with_owner(&admit, "U-1", 10).await;
        admit.invite(&as_user(owner), account, invite("old@example.com", &["viewer"])).await.unwrap();
        // Make the live tables look like an older release's: a column
        // missing and another description recorded.
        admit_ledger::on_db_write!(&admit.db, p => {
            sqlx::query("ALTER TABLE invitations DROP COLUMN reminded_at").execute(p).await.map(|_| ()).unwrap();
            sqlx::query("UPDATE read_model_schema SET description = 'older'").execute(p).await.map(|_| ()).unwrap();
        });
        let restarted = admit_on(&url).await;
        let reminded: Vec<Option<String>> = admit_ledger::on_db!(&restarted.db, p => sqlx::query_scalar(
            "SELECT CAST(reminded_at AS TEXT) FROM invitations",
        )
        .fetch_all(p)
        .await
        .unwrap());
        assert_eq!(reminded.len(), 2, "{url}: the owner's and the new invitation, rebuilt from the log");
        assert_replay_matches(&restarted, &url).await;
        // A second start with the same description rebuilds nothing.
        restarted.prepare().await.unwrap();
    }
}

/// The mailer's batch of outcomes (`record_deliveries`, two statements of
/// projection on PostgreSQL) leaves each invitation's row as the facts one
/// by one (and a replay of the log) leave it: a run ending in `failed`
/// fails, a run of `processed` and `delivered` ends delivered but keeps an
/// earlier open, and every fact is a delivery row.
#[tokio::test]
async fn a_batch_of_delivery_records_projects_as_one_by_one() {
    use DeliveryState::*;
    for (url, admit) in admits().await {
        let (account, owner) = account_with_owner(&admit, "DLV-1", 10).await;
        let mut ids = Vec::new();
        for who in ["sent", "failed", "opened", "alone"] {
            let issued =
                admit.invite(&as_user(owner), account, invite(&format!("{who}@example.com"), &[])).await.unwrap();
            ids.push(issued.invitation_id);
        }
        let [sent, failed, opened, alone] = [ids[0], ids[1], ids[2], ids[3]];
        admit.record_delivery(opened, Opened, None).await.unwrap();
        let facts = vec![
            (sent, Processed, None),
            (sent, Delivered, Some("250 ok".to_string())),
            (failed, Processed, None),
            (failed, Failed, Some("550 no such user".to_string())),
            (opened, Processed, None),
            (opened, Delivered, Some("250 ok".to_string())),
            (alone, Failed, Some("421 busy".to_string())),
        ];
        let recorded = admit
            .record_deliveries(|_tx| {
                let facts = facts.clone();
                Box::pin(async move { Ok(facts) })
            })
            .await
            .unwrap();
        assert_eq!(recorded, 7, "{url}");
        let rows: Vec<(uuid::Uuid, Option<String>, i64)> = admit_ledger::on_db!(&admit.db, p => sqlx::query_as(
            "SELECT i.invitation_id, i.delivery_state, (SELECT COUNT(*) FROM invitation_deliveries d WHERE d.invitation_id = i.invitation_id) \
             FROM invitations i",
        )
        .fetch_all(p)
        .await
        .unwrap());
        let state = |id: InvitationId| rows.iter().find(|r| r.0 == id.0).map(|r| (r.1.clone(), r.2)).unwrap();
        assert_eq!(state(sent), (Some("delivered".into()), 2), "{url}");
        assert_eq!(state(failed), (Some("failed".into()), 2), "{url}");
        assert_eq!(state(opened), (Some("opened".into()), 3), "{url}: the open is kept");
        assert_eq!(state(alone), (Some("failed".into()), 1), "{url}");
        assert_replay_matches(&admit, &url).await;
        assert!(admit.db.verify().await.unwrap().is_ok(), "{url}");
    }
}

/// `admit replay` swaps the rebuilt tables in with the indexes of a fresh
/// database, under the same names: on PostgreSQL they are built on the
/// rebuild's tables before the swap, several at once, and renamed with
/// the tables (primary keys included); on SQLite the swap builds them.
/// Checked after two replays in a row, so that the second finds the first
/// one's names in place.
#[tokio::test]
async fn a_replay_leaves_the_indexes_of_a_fresh_database() {
    for (url, admit) in admits().await {
        let fresh = index_definitions(&admit).await;
        assert!(fresh.iter().any(|(_, name, _)| name == "invitations_ix0"), "{url}: {fresh:?}");
        let (account, owner) = account_with_owner(&admit, "IDX-1", 10).await;
        admit.invite(&as_user(owner), account, invite("indexed@example.com", &["viewer"])).await.unwrap();
        for round in 1..=2 {
            admit_projections::rebuild::replay(&admit.db, &admit.secrets.lookup).await.unwrap();
            assert_eq!(index_definitions(&admit).await, fresh, "{url}: the indexes after replay {round}");
        }
        assert_replay_matches(&admit, &url).await;
    }
}

/// Every index of the database: (table, name, definition), sorted.
async fn index_definitions(admit: &Admit) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = match &admit.db {
        admit_ledger::Database::Postgres(pool) => sqlx::query_as(
            "SELECT tablename::text, indexname::text, indexdef FROM pg_indexes WHERE schemaname = current_schema()",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        admit_ledger::Database::Sqlite { reader, .. } => {
            sqlx::query_as("SELECT tbl_name, name, COALESCE(sql, '') FROM sqlite_master WHERE type = 'index'")
                .fetch_all(reader)
                .await
                .unwrap()
        }
    };
    out.sort();
    out
}

/// A replay that fails (here on an event it cannot decode) changes no read
/// model, leaves none of its own tables behind (they hold copies of
/// personal data that erasure does not scrub), and on SQLite gives the
/// writer connection its own settings back: the rebuild's large page
/// cache, sorting thread and rare WAL checkpoints would otherwise stay with
/// the service's writes.
#[tokio::test]
async fn a_failed_replay_leaves_the_database_as_it_was() {
    for (url, admit) in admits().await {
        let (account, owner) = account_with_owner(&admit, "FAIL-1", 10).await;
        admit.invite(&as_user(owner), account, invite("kept@example.com", &[])).await.unwrap();
        let before = writer_settings(&admit.db).await;
        let live = admit_projections::rebuild::dump(&admit.db, "").await.unwrap();
        // The log gains an event no release wrote: appended past the
        // ledger, a copy of the last one with a payload of no event's shape.
        let (new_id, tables) = match admit.db.backend() {
            admit_ledger::Backend::Sqlite => ("randomblob(16)", "SELECT name FROM sqlite_master WHERE type = 'table'"),
            admit_ledger::Backend::Postgres => (
                "gen_random_uuid()",
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
            ),
        };
        let corrupt = format!(
            "INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version, payload, metadata, recorded_at, hash) \
             SELECT {new_id}, stream_id, stream_version + 1, event_type, schema_version, '{{\"no\": \"such event\"}}', metadata, recorded_at, hash \
             FROM events ORDER BY position DESC LIMIT 1"
        );
        admit_ledger::on_db_write!(&admit.db, p => sqlx::query(&corrupt).execute(p).await.map(|_| ()).unwrap());
        let failed = admit_projections::rebuild::replay(&admit.db, &admit.secrets.lookup).await;
        assert!(failed.is_err(), "{url}: a replay of an undecodable event fails, not {failed:?}");
        assert_eq!(writer_settings(&admit.db).await, before, "{url}: the writer's settings after a failed replay");
        let names: Vec<String> =
            admit_ledger::on_db!(&admit.db, p => sqlx::query_scalar(tables).fetch_all(p).await.unwrap());
        let left: Vec<&String> =
            names.iter().filter(|n| n.starts_with(admit_projections::rebuild::REBUILD_PREFIX)).collect();
        assert!(left.is_empty(), "{url}: tables a failed replay left: {left:?}");
        let after = admit_projections::rebuild::dump(&admit.db, "").await.unwrap();
        assert_eq!(after, live, "{url}: the live read models after a failed replay");
    }
}

/// The settings of SQLite's writer connection that a rebuild changes
/// (nothing on PostgreSQL).
async fn writer_settings(db: &admit_ledger::Database) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    if let admit_ledger::Database::Sqlite { writer, .. } = db {
        for pragma in ["cache_size", "threads", "wal_autocheckpoint"] {
            let value: i64 = sqlx::query_scalar(&format!("PRAGMA {pragma}")).fetch_one(writer).await.unwrap();
            out.push((pragma, value));
        }
    }
    out
}
