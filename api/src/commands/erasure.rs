//! Erasing a person: crypto-shredding their key and scrubbing read models.

use admit_domain::account::Account;
use admit_domain::ids::{AccountId, InvitationId, PersonId, UserId};
use admit_domain::invitation::RevokeReason;
use admit_domain::user;
use admit_domain::values::EmailAddress;
use admit_ledger::on_tx;
use uuid::Uuid;

use super::{in_transaction, user_events, Admit, RequestContext, Unit, ATTEMPTS, USER_EMAIL};
use crate::Error;

impl Admit {
    /// Erases the person with `email`: revokes their pending invitations,
    /// deactivates their user, destroys their key (their sealed email and
    /// name in the log become unreadable for good) and scrubs every read
    /// model. The log's bytes do not change, so `verify` still passes.
    /// Returns the erased person, or None when nobody had that email.
    pub async fn erase(&self, email: &EmailAddress) -> Result<Option<PersonId>, Error> {
        let ctx = RequestContext::system();
        let email_hash = self.secrets.lookup.email_hash(email.as_str());
        in_transaction!(self, |tx| {
            async {
            let now = self.now();
            let Some((person, _)) = tx.person_by_email(&email_hash).await? else { return Ok(None) };
            let pending: Vec<(Uuid, Uuid)> = on_tx!(&mut tx, c => sqlx::query_as(
                "SELECT account_id, invitation_id FROM invitations WHERE person_id = $1 AND status = 'pending' ORDER BY invitation_id",
            )
            .bind(person)
            .fetch_all(&mut *c)
            .await?);
            let users: Vec<(Uuid,)> = on_tx!(&mut tx, c => sqlx::query_as(
                "SELECT user_id FROM users WHERE person_id = $1",
            )
            .bind(person)
            .fetch_all(&mut *c)
            .await?);

            let mut unit = Unit::default();
            let mut accounts: Vec<(AccountId, Account)> = Vec::new();
            for (account_id, invitation_id) in pending {
                let account_id = AccountId(account_id);
                if !accounts.iter().any(|(id, _)| *id == account_id) {
                    let (account, _) = self.account(&mut tx, account_id).await?;
                    accounts.push((account_id, account));
                }
                let account = &accounts.iter().find(|(id, _)| *id == account_id).expect("loaded above").1;
                self.revoke_in(&mut tx, &mut unit, account, &ctx, InvitationId(invitation_id), RevokeReason::PersonErased)
                    .await?;
            }
            for (user_id,) in users {
                let user_id = UserId(user_id);
                let (u, version) = self.user(&mut tx, user_id).await?;
                unit.push(version, user_events(user_id, user::deactivate(&u)?));
                tx.release(USER_EMAIL, &user_id.to_string()).await?;
            }
            self.write(&mut tx, &ctx, unit, now).await?;
            tx.erase_person(&email_hash).await?;
            self.projector.scrub_person(&mut tx, person).await?;
            Ok(Some(PersonId(person)))
        }
        .await
        })
    }
}
