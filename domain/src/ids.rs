//! Identifiers of the things Admit keeps. The domain never makes ids (it has
//! no randomness); callers create them (UUID v7) and pass them in.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The id of this thing's event stream.
            pub fn stream(&self) -> String {
                format!(concat!($prefix, "-{}"), self.0)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id!(
    /// An account (a customer of the product, with its customer number).
    AccountId,
    "account"
);
id!(
    /// A registered user, who may be a member of several accounts.
    UserId,
    "user"
);
id!(
    /// One invitation of one email address to one account.
    InvitationId,
    "invitation"
);
id!(
    /// A person whose personal data (email, name) is sealed with their own
    /// key; shared by the invitations and the user of one email address.
    PersonId,
    "person"
);
id!(
    /// A per-account API key used by admins for automation.
    ApiKeyId,
    "api-key"
);

/// Who did something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Actor {
    /// A signed-in user.
    User(UserId),
    /// An account's API key.
    ApiKey(ApiKeyId),
    /// The operator (CLI or operator token), outside any account.
    Operator,
    /// Admit itself (expiry worker, erasure, cascades).
    System,
}

impl Actor {
    /// The user behind the action, if a user did it.
    pub fn user(&self) -> Option<UserId> {
        match self {
            Actor::User(u) => Some(*u),
            _ => None,
        }
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::User(u) => write!(f, "user:{u}"),
            Actor::ApiKey(k) => write!(f, "api_key:{k}"),
            Actor::Operator => f.write_str("operator"),
            Actor::System => f.write_str("system"),
        }
    }
}
