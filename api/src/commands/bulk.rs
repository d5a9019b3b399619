//! Bulk invitations: many rows in one transaction, each decided on its own.
//!
//! Rows are checked in file order as if every earlier acceptable row had
//! been invited: a row repeating an earlier row's email is
//! `duplicate_in_file`; rows see the seats and quota the earlier rows used;
//! and a row refused only by the daily quota still counts against the seats
//! for the rows after it. So a file that exceeds both limits shows which
//! rows the quota alone blocks (`daily_quota_exceeded`) and which would not
//! fit even with more quota (`seat_limit_reached`).

use std::collections::HashMap;

use admit_domain::ids::AccountId;
use admit_domain::DomainError;

use super::{Admit, InviteRequest, IssuedInvitation, RequestContext};
use crate::Error;

/// How a bulk request is carried out.
#[derive(Debug, Clone, Copy, Default)]
pub struct BulkOptions {
    /// Check every row, write nothing.
    pub dry_run: bool,
    /// Write nothing unless every row succeeds.
    pub all_or_nothing: bool,
}

/// What a bulk request did: one result per row, in order, and whether the
/// successful rows were written.
#[derive(Debug)]
pub struct BulkOutcome {
    /// Per row: the invitation issued (or that would be, on a dry run), or
    /// why the row was refused.
    pub rows: Vec<Result<IssuedInvitation, Error>>,
    /// Whether anything was committed.
    pub written: bool,
}

impl BulkOutcome {
    /// Rows refused.
    pub fn failed(&self) -> usize {
        self.rows.iter().filter(|r| r.is_err()).count()
    }
}

impl Admit {
    /// Invites many people in one transaction (see the module docs for how
    /// rows are judged). Rows already refused while parsing stay refused.
    /// Only database trouble fails the whole request.
    pub async fn invite_many(
        &self,
        ctx: &RequestContext,
        account: AccountId,
        rows: Vec<Result<InviteRequest, Error>>,
        options: BulkOptions,
    ) -> Result<BulkOutcome, Error> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut results = Vec::with_capacity(rows.len());
        let mut first_row_of: HashMap<String, usize> = HashMap::new();
        let mut held_by_quota_refusals = 0u32;
        for (i, row) in rows.into_iter().enumerate() {
            let req = match row {
                Ok(req) => req,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            if let Some(first) = first_row_of.get(req.email.as_str()) {
                results.push(Err(DomainError::refused(
                    "duplicate_in_file",
                    format!("row {first} already invites this email"),
                )
                .into()));
                continue;
            }
            first_row_of.insert(req.email.as_str().to_string(), i + 1);
            let outcome = self.invite_counting(&mut tx, ctx, account, &req, now, held_by_quota_refusals).await;
            match outcome {
                Err(e @ (Error::Ledger(_) | Error::Projection(_) | Error::Database(_) | Error::Internal(_))) => {
                    let _ = tx.rollback().await;
                    return Err(e);
                }
                Err(e) if e.code() == "daily_quota_exceeded" => {
                    held_by_quota_refusals += 1;
                    results.push(Err(e));
                }
                other => results.push(other),
            }
        }
        let any_failed = results.iter().any(Result::is_err);
        let written = !(options.dry_run || (options.all_or_nothing && any_failed));
        if written {
            let appended = tx.appended();
            tx.commit().await?;
            crate::http::telemetry::record_events_appended(appended);
        } else {
            tx.rollback().await?;
        }
        Ok(BulkOutcome { rows: results, written })
    }
}
