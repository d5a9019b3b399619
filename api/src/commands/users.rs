//! Registering, signing in, and changing passwords.

use admit_domain::ids::{Actor, UserId};
use admit_domain::invitation::Channel;
use admit_domain::user;
use admit_domain::values::{EmailAddress, PersonName};
use admit_domain::DomainError;
use uuid::Uuid;

use super::{in_transaction, user_events, Admit, RequestContext, Unit, ATTEMPTS, USER_EMAIL};
use crate::{passwords, Error};

impl Admit {
    /// Registers a user without an invitation (public sign-up). One user
    /// per email whatever its letter case: the email reservation decides
    /// between concurrent registrations.
    pub async fn register(&self, email: EmailAddress, name: PersonName, password: &str) -> Result<UserId, Error> {
        self.password_policy.check(password, &[email.local_part(), name.as_str()])?;
        let hash = passwords::hash(password.to_string()).await?;
        let user_id = UserId(Uuid::now_v7());
        let ctx = RequestContext::new(Actor::User(user_id), Channel::Session);
        in_transaction!(self, |tx| async {
            let now = self.now();
            let email_hash = self.secrets.lookup.email_hash(email.as_str());
            let taken = self.user_by_email_hash(&mut tx, &email_hash).await?.is_some();
            let (person, key) = tx.person_for_email(&email_hash, now).await?;
            let events = user::register(
                user_id,
                admit_domain::ids::PersonId(person),
                email.clone(),
                name.clone(),
                hash.clone(),
                taken,
            )?;
            if !tx.reserve(USER_EMAIL, "", &email_hash, &user_id.to_string(), None).await? {
                return Err(DomainError::refused(
                    "email_taken",
                    "a user with this email already exists; sign in instead",
                )
                .into());
            }
            let mut unit = Unit::default();
            unit.key(person, key);
            unit.push(0, user_events(user_id, events));
            self.write(&mut tx, &ctx, unit, now).await?;
            Ok(user_id)
        }
        .await)
    }

    /// Checks email and password and records the sign-in. Unknown emails
    /// and wrong passwords fail alike, after the same argon2 work.
    pub async fn log_in(&self, email: &EmailAddress, password: &str) -> Result<UserId, Error> {
        let email_hash = self.secrets.lookup.email_hash(email.as_str());
        let mut tx = self.db.begin().await?;
        let user_id = self.user_by_email_hash(&mut tx, &email_hash).await?;
        let user = match user_id {
            Some(id) => Some(self.user(&mut tx, id).await?.0),
            None => None,
        };
        tx.rollback().await?;
        let hash = user.as_ref().filter(|u| u.active).map(|u| u.password_hash.clone());
        if !passwords::verify(password.to_string(), hash).await {
            return Err(Error::InvalidCredentials);
        }
        let user_id = user.map(|u| u.id).ok_or(Error::InvalidCredentials)?;
        let ctx = RequestContext::new(Actor::User(user_id), Channel::Session);
        in_transaction!(self, |tx| async {
            let now = self.now();
            let (user, version) = self.user(&mut tx, user_id).await?;
            let events = user::log_in(&user).map_err(|_| Error::InvalidCredentials)?;
            let mut unit = Unit::default();
            unit.push(version, user_events(user_id, events));
            self.write(&mut tx, &ctx, unit, now).await?;
            Ok(user_id)
        }
        .await)
    }

    /// Sets a new password after checking the current one.
    pub async fn change_password(&self, user_id: UserId, current: &str, new: &str) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        let (user, _) = self.user(&mut tx, user_id).await?;
        tx.rollback().await?;
        if !passwords::verify(current.to_string(), Some(user.password_hash.clone())).await {
            return Err(Error::InvalidCredentials);
        }
        let inputs: Vec<&str> =
            [user.personal.email().map(|e| e.local_part()), user.personal.name().map(|n| n.as_str())]
                .into_iter()
                .flatten()
                .collect();
        self.password_policy.check(new, &inputs)?;
        let hash = passwords::hash(new.to_string()).await?;
        let ctx = RequestContext::new(Actor::User(user_id), Channel::Session);
        in_transaction!(self, |tx| async {
            let now = self.now();
            let (user, version) = self.user(&mut tx, user_id).await?;
            let events = user::change_password(&user, hash.clone())?;
            let mut unit = Unit::default();
            unit.push(version, user_events(user_id, events));
            self.write(&mut tx, &ctx, unit, now).await
        }
        .await)
    }
}
