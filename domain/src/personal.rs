//! Personal data that can be erased although the log is immutable.

use serde::{Deserialize, Serialize};

use crate::values::{EmailAddress, PersonName};

/// A person's email and name as carried by an event. In the stored payload
/// this is sealed with the person's key; after erasure it reads as `Erased`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Personal {
    /// Readable personal data.
    Known {
        /// Normalised email address.
        email: EmailAddress,
        /// Name, when given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<PersonName>,
    },
    /// The person was erased; their data is gone for good.
    Erased,
}

impl Personal {
    /// The email, unless erased.
    pub fn email(&self) -> Option<&EmailAddress> {
        match self {
            Personal::Known { email, .. } => Some(email),
            Personal::Erased => None,
        }
    }

    /// The name, unless erased or never given.
    pub fn name(&self) -> Option<&PersonName> {
        match self {
            Personal::Known { name, .. } => name.as_ref(),
            Personal::Erased => None,
        }
    }
}
