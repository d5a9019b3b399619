//! The folded state of recently used accounts, kept between requests.
//!
//! Every account route authorises the caller against the account's state,
//! and every invitation checks seats, roles and the quota against it.
//! Folding the account's whole stream for each request made the cost of a
//! request grow with the account's history (each member who joined is an
//! event). Instead each process keeps the state it last folded, with the
//! stream version it was folded at, and reads only the events appended
//! since: usually none, so authorising costs one small query.
//!
//! The state is never trusted without asking the log: every use reads the
//! events after the kept version (or, inside a command, compares the
//! version of the locked stream head), so a state that another process
//! moved on is caught up before it is used. Authorisation and the domain's
//! checks therefore see exactly what a fold of the whole stream would give.
//! Account events carry no personal data, so erasing a person never changes
//! a kept state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use admit_domain::account::Account;
use admit_domain::ids::AccountId;
use admit_ledger::log::EventRow;
use admit_ledger::{on_db, on_tx, RecordedEvent, Tx};
use admit_projections::Codec;

use crate::Error;

/// How many accounts one process keeps; past that the oldest half is
/// dropped (and folded again when next used).
const KEPT: usize = 4096;

/// Folded accounts by id, each with the stream version it stands at.
/// Shared by every clone of an [`crate::Admit`].
#[derive(Debug, Clone, Default)]
pub struct AccountStates {
    kept: Arc<Mutex<Kept>>,
}

#[derive(Debug, Default)]
struct Kept {
    /// Counts uses, to drop the least recently used accounts first.
    tick: u64,
    /// Per account: its version, its state, and the tick it was last used at.
    accounts: HashMap<AccountId, (i64, Arc<Account>, u64)>,
}

impl AccountStates {
    fn get(&self, id: AccountId) -> Option<(i64, Arc<Account>)> {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.tick += 1;
        let tick = kept.tick;
        let (version, account, used) = kept.accounts.get_mut(&id)?;
        *used = tick;
        Some((*version, account.clone()))
    }

    fn keep(&self, id: AccountId, version: i64, account: Arc<Account>) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.accounts.get(&id).is_some_and(|(v, _, _)| *v >= version) {
            return;
        }
        if kept.accounts.len() >= KEPT && !kept.accounts.contains_key(&id) {
            let mut used: Vec<u64> = kept.accounts.values().map(|(_, _, u)| *u).collect();
            used.sort_unstable();
            let cut = used[used.len() / 2];
            kept.accounts.retain(|_, (_, _, u)| *u > cut);
        }
        kept.tick += 1;
        let tick = kept.tick;
        kept.accounts.insert(id, (version, account, tick));
    }

    /// The state last folded for `id`, without asking the log: it may be
    /// behind what another process appended since.
    pub(crate) fn kept(&self, id: AccountId) -> Option<Arc<Account>> {
        self.get(id).map(|(_, account)| account)
    }

    /// The account as it stands in the committed log, read outside any
    /// transaction with one statement (the events after the kept version).
    pub(crate) async fn current(&self, db: &admit_ledger::Database, id: AccountId) -> Result<Arc<Account>, Error> {
        let known = self.get(id);
        let after = known.as_ref().map_or(0, |(v, _)| *v);
        let sql = events_after_sql(db.backend());
        let rows: Vec<EventRow> =
            on_db!(db, p => sqlx::query_as(&sql).bind(id.stream()).bind(after).fetch_all(p).await?);
        let events = rows.into_iter().map(RecordedEvent::try_from).collect::<Result<Vec<_>, _>>()?;
        if events.is_empty() {
            return known.map(|(_, a)| a).ok_or(Error::NotFound("account"));
        }
        let envelopes = Codec::decode_all(db, &events).await?;
        let (version, account) = fold_on(known, after, &envelopes)?;
        self.keep(id, version, account.clone());
        Ok(account)
    }

    /// The account at `version`, the version of its stream head that the
    /// caller's transaction has just read (and locked). Reads only the
    /// events after the kept version, inside `tx`; keeps the result only
    /// while `tx` has appended nothing, so a kept state is always one of
    /// committed events.
    pub(crate) async fn at(&self, tx: &mut Tx, id: AccountId, version: i64) -> Result<Arc<Account>, Error> {
        let known = self.get(id).filter(|(v, _)| *v <= version);
        if let Some((v, account)) = &known {
            if *v == version {
                return Ok(account.clone());
            }
        }
        let after = known.as_ref().map_or(0, |(v, _)| *v);
        let sql = events_after_sql(tx.backend());
        let rows: Vec<EventRow> =
            on_tx!(tx, c => sqlx::query_as(&sql).bind(id.stream()).bind(after).fetch_all(&mut *c).await?);
        let events = rows.into_iter().map(RecordedEvent::try_from).collect::<Result<Vec<_>, _>>()?;
        let envelopes = Codec::decode_all_in(tx, &events).await?;
        let (folded_to, account) = fold_on(known, after, &envelopes)?;
        if tx.appended() == 0 && folded_to == version {
            self.keep(id, folded_to, account.clone());
        }
        Ok(account)
    }
}

fn events_after_sql(backend: admit_ledger::Backend) -> String {
    format!(
        "SELECT {} FROM events WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version",
        admit_ledger::log::event_columns(backend)
    )
}

/// Folds `events` (those after version `after`) onto the known state.
fn fold_on(
    known: Option<(i64, Arc<Account>)>,
    after: i64,
    events: &[admit_projections::Envelope],
) -> Result<(i64, Arc<Account>), Error> {
    let mut version = after;
    let mut state = known.map(|(_, a)| (*a).clone());
    for e in events {
        if e.stream_version != version + 1 {
            return Err(Error::Internal(format!(
                "account stream skips from version {version} to {}",
                e.stream_version
            )));
        }
        version = e.stream_version;
        if let Some(event) = e.event.as_account() {
            state = Account::evolve(state, event);
        }
    }
    state.map(|a| (version, Arc::new(a))).ok_or(Error::NotFound("account"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(seats: u32) -> Arc<Account> {
        use admit_domain::account::AccountSettings;
        use admit_domain::values::{AccountName, CustomerNumber};
        Arc::new(Account {
            id: AccountId(uuid::Uuid::now_v7()),
            name: AccountName::parse("Acme").expect("a name"),
            customer_number: CustomerNumber::parse("C-1").expect("a number"),
            settings: AccountSettings::with_seats(seats),
            roles: Default::default(),
            members: Default::default(),
            active: true,
        })
    }

    #[test]
    fn a_kept_state_is_replaced_only_by_a_later_version() {
        let states = AccountStates::default();
        let id = AccountId(uuid::Uuid::now_v7());
        states.keep(id, 3, account(3));
        states.keep(id, 2, account(2));
        let (v, a) = states.get(id).expect("kept");
        assert_eq!((v, a.settings.seat_limit), (3, 3));
        states.keep(id, 4, account(4));
        let (v, a) = states.get(id).expect("kept");
        assert_eq!((v, a.settings.seat_limit), (4, 4));
    }

    #[test]
    fn past_the_limit_the_least_recently_used_accounts_are_dropped() {
        let states = AccountStates::default();
        let busy = AccountId(uuid::Uuid::now_v7());
        let idle = AccountId(uuid::Uuid::now_v7());
        states.keep(idle, 1, account(1));
        states.keep(busy, 1, account(1));
        for _ in 0..KEPT {
            states.keep(AccountId(uuid::Uuid::now_v7()), 1, account(1));
            assert!(states.get(busy).is_some(), "an account in use stays");
        }
        let kept = states.kept.lock().unwrap().accounts.len();
        assert!(kept <= KEPT, "{kept} kept");
        assert!(states.get(idle).is_none(), "the account nobody used was dropped");
    }

    #[test]
    fn a_fold_that_skips_a_version_is_refused() {
        let known = Some((2, account(5)));
        let event = admit_projections::Envelope {
            event_id: uuid::Uuid::now_v7(),
            stream_version: 4,
            recorded_at: chrono::Utc::now(),
            actor: None,
            event: admit_domain::Event::Account(
                AccountId(uuid::Uuid::now_v7()),
                admit_domain::account::AccountEvent::AccountDeactivated {},
            ),
        };
        assert!(matches!(fold_on(known, 2, &[event]), Err(Error::Internal(_))));
    }
}
