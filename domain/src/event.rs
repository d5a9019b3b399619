//! Every event of the domain, with its stream, stored type name and schema
//! version, and the upcasting of old payload versions on read.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::account::AccountEvent;
use crate::ids::{AccountId, InvitationId, PersonId, UserId};
use crate::invitation::InvitationEvent;
use crate::user::UserEvent;
use crate::DomainError;

/// Any event, tagged with the aggregate it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An account's event.
    Account(AccountId, AccountEvent),
    /// An invitation's event.
    Invitation(InvitationId, InvitationEvent),
    /// A user's event.
    User(UserId, UserEvent),
}

/// Every event type name, documented one by one in `docs/events.md` (a test
/// checks that the document covers each).
pub const EVENT_TYPES: &[&str] = &[
    "AccountOpened",
    "AccountSettingsChanged",
    "AccountDeactivated",
    "AccountReactivated",
    "ApiKeyCreated",
    "ApiKeyRevoked",
    "RoleDefined",
    "RoleChanged",
    "RoleDeleted",
    "MemberJoined",
    "MemberAccessChanged",
    "MemberDeactivated",
    "MemberReactivated",
    "MemberRemoved",
    "MembershipCancelled",
    "InvitationRenewalRequested",
    "InvitationSent",
    "InvitationUpdated",
    "InvitationResent",
    "InvitationDeliveryRecorded",
    "InvitationReminded",
    "InvitationAccepted",
    "InvitationDeclined",
    "InvitationExpired",
    "InvitationRevoked",
    "UserRegistered",
    "UserLoggedIn",
    "UserPasswordChanged",
    "UserDeactivated",
];

/// The name of the payload field that carries personal data; the store
/// seals it with the person's key.
pub const PERSONAL_FIELD: &str = "personal";

/// The schema version every event type is written at today. Bump a type's
/// version when its payload changes and teach [`upcast`] the old one.
pub fn current_schema_version(event_type: &str) -> i32 {
    let _ = event_type;
    1
}

impl Event {
    /// The stream the event is appended to.
    pub fn stream(&self) -> String {
        match self {
            Event::Account(id, _) => id.stream(),
            Event::Invitation(id, _) => id.stream(),
            Event::User(id, _) => id.stream(),
        }
    }

    /// The account event inside, if it is one (for folding a stream).
    pub fn as_account(&self) -> Option<&AccountEvent> {
        match self {
            Event::Account(_, e) => Some(e),
            _ => None,
        }
    }

    /// The invitation event inside, if it is one.
    pub fn as_invitation(&self) -> Option<&InvitationEvent> {
        match self {
            Event::Invitation(_, e) => Some(e),
            _ => None,
        }
    }

    /// The user event inside, if it is one.
    pub fn as_user(&self) -> Option<&UserEvent> {
        match self {
            Event::User(_, e) => Some(e),
            _ => None,
        }
    }

    /// The stored type name.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::Account(_, e) => e.event_type(),
            Event::Invitation(_, e) => e.event_type(),
            Event::User(_, e) => e.event_type(),
        }
    }

    /// The person whose data the payload carries, if any.
    pub fn person(&self) -> Option<PersonId> {
        match self {
            Event::Invitation(_, InvitationEvent::InvitationSent { person_id, .. })
            | Event::User(_, UserEvent::UserRegistered { person_id, .. }) => Some(*person_id),
            _ => None,
        }
    }

    /// The payload as JSON (without the type tag).
    pub fn payload(&self) -> Value {
        fn data<T: Serialize>(e: &T) -> Value {
            match serde_json::to_value(e) {
                Ok(Value::Object(mut m)) => m.remove("data").unwrap_or(Value::Null),
                _ => Value::Null,
            }
        }
        match self {
            Event::Account(_, e) => data(e),
            Event::Invitation(_, e) => data(e),
            Event::User(_, e) => data(e),
        }
    }

    /// Rebuilds an event from its stream, type, schema version and payload
    /// (old versions are upcast first).
    pub fn decode(stream: &str, event_type: &str, schema_version: i32, payload: Value) -> Result<Event, DomainError> {
        let payload = upcast(event_type, schema_version, payload)?;
        let tagged = serde_json::json!({ "type": event_type, "data": payload });
        let bad = |e: serde_json::Error| {
            DomainError::invalid("payload", "invalid_event", format!("{event_type} in {stream}: {e}"))
        };
        let (kind, id) = stream
            .split_once('-')
            .ok_or_else(|| DomainError::invalid("stream", "invalid_event", format!("unknown stream {stream}")))?;
        let id = uuid::Uuid::parse_str(id)
            .map_err(|_| DomainError::invalid("stream", "invalid_event", format!("unknown stream {stream}")))?;
        Ok(match kind {
            "account" => Event::Account(AccountId(id), deserialize(tagged).map_err(bad)?),
            "invitation" => Event::Invitation(InvitationId(id), deserialize(tagged).map_err(bad)?),
            "user" => Event::User(UserId(id), deserialize(tagged).map_err(bad)?),
            _ => return Err(DomainError::invalid("stream", "invalid_event", format!("unknown stream {stream}"))),
        })
    }
}

fn deserialize<T: for<'de> Deserialize<'de>>(v: Value) -> Result<T, serde_json::Error> {
    serde_json::from_value(v)
}

/// Brings a stored payload of an older schema version to the current one.
/// Events are never edited once released: a changed type gets a new
/// version, and this function maps every old version forward on read.
pub fn upcast(event_type: &str, schema_version: i32, payload: Value) -> Result<Value, DomainError> {
    let current = current_schema_version(event_type);
    if schema_version == current {
        return Ok(payload);
    }
    Err(DomainError::invalid(
        "schema_version",
        "unknown_schema_version",
        format!("{event_type} has no schema version {schema_version} (current: {current})"),
    ))
}
