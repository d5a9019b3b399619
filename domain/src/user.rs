//! The user aggregate: someone who can sign in. Stream `user-{id}`.

use serde::{Deserialize, Serialize};

use crate::ids::{PersonId, UserId};
use crate::personal::Personal;
use crate::values::{EmailAddress, PersonName};
use crate::DomainError;

/// An argon2id password hash in PHC string form. Parsing refuses anything
/// else, so a clear password can never be stored by mistake.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Accepts only `$argon2id$...` PHC strings.
    pub fn parse(phc: &str) -> Result<PasswordHash, DomainError> {
        if phc.starts_with("$argon2id$") && phc.matches('$').count() >= 5 {
            Ok(PasswordHash(phc.to_string()))
        } else {
            Err(DomainError::invalid("password_hash", "invalid_password_hash", "not an argon2id hash"))
        }
    }

    /// The PHC string, for verification.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

impl TryFrom<String> for PasswordHash {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, DomainError> {
        PasswordHash::parse(&s)
    }
}

impl From<PasswordHash> for String {
    fn from(h: PasswordHash) -> String {
        h.0
    }
}

/// Facts about a user, in past tense.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum UserEvent {
    /// Someone registered (when accepting their first invitation).
    UserRegistered {
        /// Their id.
        user_id: UserId,
        /// Their person (key holder of `personal`).
        person_id: PersonId,
        /// Email and name (sealed when stored).
        personal: Personal,
        /// argon2id hash of their password.
        password_hash: PasswordHash,
    },
    /// They signed in.
    UserLoggedIn {},
    /// They chose a new password.
    UserPasswordChanged {
        /// argon2id hash of the new password.
        password_hash: PasswordHash,
    },
    /// They may no longer sign in.
    UserDeactivated {},
}

impl UserEvent {
    /// The stored type name.
    pub fn event_type(&self) -> &'static str {
        match self {
            UserEvent::UserRegistered { .. } => "UserRegistered",
            UserEvent::UserLoggedIn { .. } => "UserLoggedIn",
            UserEvent::UserPasswordChanged { .. } => "UserPasswordChanged",
            UserEvent::UserDeactivated { .. } => "UserDeactivated",
        }
    }
}

/// The user as folded from their events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Their id.
    pub id: UserId,
    /// Their person.
    pub person_id: PersonId,
    /// Email and name, or erased.
    pub personal: Personal,
    /// Current password hash.
    pub password_hash: PasswordHash,
    /// False once deactivated.
    pub active: bool,
}

impl User {
    /// Folds one event into the state.
    pub fn evolve(state: Option<User>, event: &UserEvent) -> Option<User> {
        if let UserEvent::UserRegistered { user_id, person_id, personal, password_hash } = event {
            return Some(User {
                id: *user_id,
                person_id: *person_id,
                personal: personal.clone(),
                password_hash: password_hash.clone(),
                active: true,
            });
        }
        let mut u = state?;
        match event {
            UserEvent::UserRegistered { .. } | UserEvent::UserLoggedIn {} => {}
            UserEvent::UserPasswordChanged { password_hash } => u.password_hash = password_hash.clone(),
            UserEvent::UserDeactivated {} => u.active = false,
        }
        Some(u)
    }

    /// Folds a whole stream.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a UserEvent>) -> Option<User> {
        events.into_iter().fold(None, User::evolve)
    }
}

/// Decides registering a user. `email_taken` comes from the email
/// reservation: one user per email, whatever its letter case.
pub fn register(
    user_id: UserId,
    person_id: PersonId,
    email: EmailAddress,
    name: PersonName,
    password_hash: PasswordHash,
    email_taken: bool,
) -> Result<Vec<UserEvent>, DomainError> {
    if email_taken {
        return Err(DomainError::refused("email_taken", "a user with this email already exists; sign in instead"));
    }
    Ok(vec![UserEvent::UserRegistered {
        user_id,
        person_id,
        personal: Personal::Known { email, name: Some(name) },
        password_hash,
    }])
}

/// Decides recording a sign-in (the password was checked by the caller).
pub fn log_in(user: &User) -> Result<Vec<UserEvent>, DomainError> {
    if !user.active {
        return Err(DomainError::refused("invalid_credentials", "email or password is wrong"));
    }
    Ok(vec![UserEvent::UserLoggedIn {}])
}

/// Decides a password change (the new password passed the policy).
pub fn change_password(user: &User, password_hash: PasswordHash) -> Result<Vec<UserEvent>, DomainError> {
    if !user.active {
        return Err(DomainError::refused("user_deactivated", "this user is deactivated"));
    }
    Ok(vec![UserEvent::UserPasswordChanged { password_hash }])
}

/// Decides deactivating a user.
pub fn deactivate(user: &User) -> Result<Vec<UserEvent>, DomainError> {
    if !user.active {
        return Ok(vec![]);
    }
    Ok(vec![UserEvent::UserDeactivated {}])
}
