//! A history of concurrent HTTP operations and the checker that holds it
//! against the ledger's invariants afterwards.
//!
//! Every operation is recorded when it is invoked and when it completes
//! (ok with its answer, or failed with status and code). After the run the
//! checker reads the final state (invitations, members, the events of each
//! invitation's stream) and reports every violation it finds:
//! - no answer is a 5xx or lost (a transport error);
//! - unique email: at most one invitation per email is created, and
//!   `already_invited` is only answered when one was;
//! - seat limit: pending invitations plus members never exceed the seats,
//!   and `seat_limit_reached` is only answered when the seats are taken;
//! - daily quota: no inviter gets more than the quota, and
//!   `daily_quota_exceeded` is only answered to one who reached it;
//! - single-use token: at most one accept of an invitation succeeds and
//!   exactly that many `InvitationAccepted` events exist;
//! - accept vs revoke, accept vs expire: an invitation ends in one of them,
//!   never two, and every success corresponds to the one that happened;
//! - concurrent PATCH of one invitation: each successful PATCH is one
//!   `InvitationUpdated`, and the final invitation is exactly the request
//!   of the last one (roles and deadline from the same request, no mix).
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// What a client did.
#[derive(Debug, Clone)]
pub enum Kind {
    /// Invite `email` (as the inviter named by `by`).
    Invite { by: String, email: String },
    /// Accept the invitation `invitation` as a new user.
    Accept { invitation: String },
    /// Revoke the invitation.
    Revoke { invitation: String },
    /// PATCH the invitation with request number `request` (roles and
    /// lifetime in hours that identify it).
    Patch { invitation: String, request: usize, roles: Vec<String>, hours: i64 },
}

/// How an operation ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// 2xx, with the JSON answer.
    Ok(Value),
    /// 4xx or 5xx with its problem code.
    Failed { status: u16, code: String },
    /// No HTTP answer at all.
    Lost(String),
}

/// One operation of the history.
#[derive(Debug, Clone)]
pub struct Op {
    /// Which client ran it.
    pub client: usize,
    /// What it did.
    pub kind: Kind,
    /// When it was invoked (wall clock, comparable with recorded times).
    pub invoked: DateTime<Utc>,
    /// When its answer arrived.
    pub completed: DateTime<Utc>,
    /// How it ended.
    pub outcome: Outcome,
}

impl Op {
    fn ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }

    fn code(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Failed { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The final state the checker compares the history with.
#[derive(Debug, Default)]
pub struct FinalState {
    /// Every invitation of the account, by id (the API's view).
    pub invitations: BTreeMap<String, Value>,
    /// Active members' emails at the end.
    pub member_emails: BTreeSet<String>,
    /// Seats held before the run (members and pending invitations).
    pub held_before: usize,
    /// Every event of each invitation's stream, in order.
    pub events: BTreeMap<String, Vec<Value>>,
}

/// The limits the account ran under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The account's seats.
    pub seats: usize,
    /// Invitations per inviter per day.
    pub daily_quota: usize,
}

/// The codes each kind of operation may fail with; anything else is a bug.
fn allowed_codes(kind: &Kind) -> &'static [&'static str] {
    match kind {
        Kind::Invite { .. } => &["already_invited", "seat_limit_reached", "daily_quota_exceeded", "already_member"],
        Kind::Accept { .. } => &["invitation_used", "invitation_revoked", "invitation_expired", "email_taken"],
        Kind::Revoke { .. } => {
            &["invitation_not_pending", "invitation_used", "invitation_expired", "invitation_revoked"]
        }
        Kind::Patch { .. } => &[],
    }
}

fn normalised(email: &str) -> String {
    email.trim().to_lowercase()
}

fn events_of<'a>(state: &'a FinalState, invitation: &str) -> impl Iterator<Item = &'a Value> {
    state.events.get(invitation).into_iter().flatten()
}

fn count(state: &FinalState, invitation: &str, event_type: &str) -> usize {
    events_of(state, invitation).filter(|e| e["type"] == event_type).count()
}

/// Every violation of the invariants in `history` given `state`; empty
/// when the run was correct.
pub fn check(history: &[Op], state: &FinalState, limits: Limits) -> Vec<String> {
    let mut violations = Vec::new();
    answers_are_sane(history, &mut violations);
    invitations_are_unique_and_within_limits(history, state, limits, &mut violations);
    links_end_one_way(history, state, &mut violations);
    patches_are_whole(history, state, &mut violations);
    violations
}

fn answers_are_sane(history: &[Op], out: &mut Vec<String>) {
    for op in history {
        match &op.outcome {
            Outcome::Lost(e) => out.push(format!("client {}: {:?} got no answer: {e}", op.client, op.kind)),
            Outcome::Failed { status, code } if *status >= 500 || !allowed_codes(&op.kind).contains(&code.as_str()) => {
                out.push(format!("client {}: {:?} failed with {status} {code}", op.client, op.kind))
            }
            _ => {}
        }
    }
}

fn invitations_are_unique_and_within_limits(history: &[Op], state: &FinalState, limits: Limits, out: &mut Vec<String>) {
    let invites: Vec<&Op> = history.iter().filter(|o| matches!(o.kind, Kind::Invite { .. })).collect();
    let mut per_email: BTreeMap<String, Vec<&Op>> = BTreeMap::new();
    let mut per_inviter: BTreeMap<String, usize> = BTreeMap::new();
    for op in &invites {
        let Kind::Invite { by, email } = &op.kind else { unreachable!() };
        per_email.entry(normalised(email)).or_default().push(op);
        if op.ok() {
            *per_inviter.entry(by.clone()).or_default() += 1;
        }
    }
    for (email, ops) in &per_email {
        let ok = ops.iter().filter(|o| o.ok()).count();
        if ok > 1 {
            out.push(format!("unique email: {ok} invitations created for {email}"));
        }
        if ok == 0 && ops.iter().any(|o| o.code() == Some("already_invited")) {
            out.push(format!("unique email: {email} refused as already invited, but no invitation was created"));
        }
    }
    let created = invites.iter().filter(|o| o.ok()).count();
    let held = created + state.held_before;
    if held > limits.seats {
        out.push(format!("seat limit: {held} seats held of {}", limits.seats));
    }
    if held < limits.seats && invites.iter().any(|o| o.code() == Some("seat_limit_reached")) {
        out.push(format!("seat limit: refused with {held} of {} seats held", limits.seats));
    }
    for (by, ok) in &per_inviter {
        if *ok > limits.daily_quota {
            out.push(format!("daily quota: {by} created {ok} of a quota of {}", limits.daily_quota));
        }
    }
    for op in &invites {
        let Kind::Invite { by, .. } = &op.kind else { unreachable!() };
        let got = per_inviter.get(by).copied().unwrap_or(0);
        if op.code() == Some("daily_quota_exceeded") && got < limits.daily_quota {
            out.push(format!("daily quota: {by} refused after only {got} of {}", limits.daily_quota));
        }
    }
    // Nothing lost, nothing extra: each created invitation is in the list, pending.
    for op in invites.iter().filter(|o| o.ok()) {
        let Outcome::Ok(answer) = &op.outcome else { unreachable!() };
        let id = answer["id"].as_str().unwrap_or_default();
        match state.invitations.get(id) {
            Some(inv) if inv["status"] == "pending" => {}
            other => out.push(format!("created invitation {id} is {:?} at the end", other.map(|i| &i["status"]))),
        }
    }
}

fn links_end_one_way(history: &[Op], state: &FinalState, out: &mut Vec<String>) {
    let mut per_invitation: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        if let Kind::Accept { invitation } | Kind::Revoke { invitation } = &op.kind {
            per_invitation.entry(invitation.as_str()).or_default().push(op);
        }
    }
    for (id, ops) in per_invitation {
        let accepted_ok = ops.iter().filter(|o| o.ok() && matches!(o.kind, Kind::Accept { .. })).count();
        let revoked_ok = ops.iter().filter(|o| o.ok() && matches!(o.kind, Kind::Revoke { .. })).count();
        let (accepted, revoked, expired) = (
            count(state, id, "InvitationAccepted"),
            count(state, id, "InvitationRevoked"),
            count(state, id, "InvitationExpired"),
        );
        if accepted_ok > 1 {
            out.push(format!("single use: {accepted_ok} accepts of {id} succeeded"));
        }
        if accepted != accepted_ok || revoked != revoked_ok {
            out.push(format!(
                "{id}: {accepted_ok} accepts and {revoked_ok} revokes succeeded, but the stream holds {accepted} accepted and {revoked} revoked"
            ));
        }
        if accepted + revoked + expired > 1 {
            out.push(format!(
                "{id} ended more than one way: {accepted} accepted, {revoked} revoked, {expired} expired"
            ));
        }
        let status = state.invitations.get(id).map(|i| i["status"].as_str().unwrap_or_default().to_string());
        let expected = match (accepted, revoked, expired) {
            (1, 0, 0) => "accepted",
            (0, 1, 0) => "revoked",
            (0, 0, 1) => "expired",
            _ => "pending",
        };
        // A link past its deadline that the worker has not expired yet reads
        // as expired in the list too; only a closed status must match exactly.
        if status.as_deref() != Some(expected) && !(expected == "pending" && status.as_deref() == Some("expired")) {
            out.push(format!("{id}: status {status:?} but the stream says {expected}"));
        }
        if accepted == 1 {
            let inv = &state.invitations[id];
            let email = inv["email"].as_str().map(normalised).unwrap_or_default();
            if !state.member_emails.contains(&email) {
                out.push(format!("{id} accepted but {email} is no member"));
            }
            let at =
                events_of(state, id).find(|e| e["type"] == "InvitationAccepted").and_then(|e| time(&e["recorded_at"]));
            let deadline = deadline_at(state, id);
            if let (Some(at), Some(deadline)) = (at, deadline) {
                if at > deadline {
                    out.push(format!("{id} accepted at {at}, after its deadline {deadline}"));
                }
            }
        }
        for op in &ops {
            let consistent = match op.code() {
                Some("invitation_used") => accepted == 1,
                Some("invitation_revoked") => revoked == 1,
                Some("invitation_expired") => expired == 1 || deadline_at(state, id).is_some_and(|d| d <= op.completed),
                Some("invitation_not_pending") => accepted + expired + revoked == 1,
                _ => true,
            };
            if !consistent {
                out.push(format!("{id}: {:?} refused with {:?}, which the stream contradicts", op.kind, op.code()));
            }
        }
    }
}

fn deadline_at(state: &FinalState, id: &str) -> Option<DateTime<Utc>> {
    let mut deadline = None;
    for e in events_of(state, id) {
        if let Some(at) = time(&e["data"]["expires_at"]) {
            deadline = Some(at);
        }
    }
    deadline
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc))
}

fn patches_are_whole(history: &[Op], state: &FinalState, out: &mut Vec<String>) {
    let mut per_invitation: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        if let Kind::Patch { invitation, .. } = &op.kind {
            per_invitation.entry(invitation.as_str()).or_default().push(op);
        }
    }
    for (id, ops) in per_invitation {
        let ok = ops.iter().filter(|o| o.ok()).count();
        let updates: Vec<&Value> = events_of(state, id).filter(|e| e["type"] == "InvitationUpdated").collect();
        if updates.len() != ok {
            out.push(format!("PATCH {id}: {ok} succeeded but {} InvitationUpdated events", updates.len()));
        }
        let Some(last) = updates.last() else { continue };
        let (Some(recorded), Some(deadline)) = (time(&last["recorded_at"]), time(&last["data"]["expires_at"])) else {
            out.push(format!("PATCH {id}: the last update has no times: {last}"));
            continue;
        };
        let hours = ((deadline - recorded).num_seconds() as f64 / 3600.0).round() as i64;
        let roles: Vec<String> = last["data"]["access"]["roles"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let matching = ops
            .iter()
            .any(|o| matches!(&o.kind, Kind::Patch { roles: r, hours: h, .. } if *h == hours && *r == roles) && o.ok());
        if !matching {
            out.push(format!("PATCH {id}: the last update ({roles:?}, {hours} h) is no single successful request"));
        }
        // The read models keep microseconds; events keep what the clock gave.
        let inv = &state.invitations[id];
        let same_deadline =
            time(&inv["expires_at"]).is_some_and(|t| (t - deadline).num_microseconds().is_some_and(|d| d.abs() < 1));
        if !same_deadline || inv["access"]["roles"] != last["data"]["access"]["roles"] {
            out.push(format!("PATCH {id}: the read model {inv} differs from the last update {last}"));
        }
    }
}

/// The checker itself: histories with a planted violation are reported.
#[cfg(test)]
mod catches {
    use super::*;
    use serde_json::json;

    fn op(kind: Kind, outcome: Outcome) -> Op {
        Op { client: 0, kind, invoked: Utc::now(), completed: Utc::now(), outcome }
    }

    fn invite(email: &str, id: &str) -> Op {
        op(Kind::Invite { by: "admin".into(), email: email.into() }, Outcome::Ok(json!({ "id": id })))
    }

    fn pending(ids: &[&str]) -> FinalState {
        let mut state = FinalState::default();
        for id in ids {
            state.invitations.insert(id.to_string(), json!({ "id": id, "status": "pending" }));
        }
        state
    }

    const LIMITS: Limits = Limits { seats: 10, daily_quota: 2 };

    #[test]
    fn two_invitations_of_one_email_in_two_spellings() {
        let history = [invite("a@example.com", "1"), invite("A@Example.com ", "2")];
        let v = check(&history, &pending(&["1", "2"]), LIMITS);
        assert!(v.iter().any(|v| v.starts_with("unique email")), "{v:?}");
    }

    #[test]
    fn a_refusal_for_a_full_account_that_was_not_full() {
        let refused = op(
            Kind::Invite { by: "admin".into(), email: "b@example.com".into() },
            Outcome::Failed { status: 409, code: "seat_limit_reached".into() },
        );
        let v = check(&[invite("a@example.com", "1"), refused], &pending(&["1"]), LIMITS);
        assert!(v.iter().any(|v| v.starts_with("seat limit")), "{v:?}");
    }

    #[test]
    fn more_than_the_quota_and_a_lost_invitation() {
        let history = [invite("a@example.com", "1"), invite("b@example.com", "2"), invite("c@example.com", "3")];
        let v = check(&history, &pending(&["1", "2"]), LIMITS);
        assert!(v.iter().any(|v| v.starts_with("daily quota")), "{v:?}");
        assert!(v.iter().any(|v| v.contains("created invitation 3")), "{v:?}");
    }

    #[test]
    fn an_accept_and_a_revoke_that_both_won_and_a_500() {
        let id = "9".to_string();
        let history = [
            op(Kind::Accept { invitation: id.clone() }, Outcome::Ok(json!({}))),
            op(Kind::Revoke { invitation: id.clone() }, Outcome::Ok(json!({}))),
            op(Kind::Accept { invitation: id.clone() }, Outcome::Failed { status: 500, code: "internal".into() }),
        ];
        let mut state = FinalState::default();
        state.invitations.insert(id.clone(), json!({ "status": "accepted", "email": "x@example.com" }));
        state.events.insert(id, vec![json!({ "type": "InvitationAccepted" })]);
        let v = check(&history, &state, LIMITS);
        assert!(v.iter().any(|v| v.contains("1 accepts and 1 revokes succeeded")), "{v:?}");
        assert!(v.iter().any(|v| v.contains("failed with 500")), "{v:?}");
        assert!(v.iter().any(|v| v.contains("is no member")), "{v:?}");
    }

    #[test]
    fn a_patch_whose_result_mixes_two_requests() {
        let id = "7".to_string();
        let patch = |request: usize, role: &str, hours: i64| {
            op(Kind::Patch { invitation: id.clone(), request, roles: vec![role.into()], hours }, Outcome::Ok(json!({})))
        };
        let history = [patch(0, "viewer", 1), patch(1, "editor", 2)];
        let mut state = FinalState::default();
        let updated = |role: &str, deadline: &str| json!({ "type": "InvitationUpdated", "recorded_at": "2026-01-01T00:00:00Z", "data": { "expires_at": deadline, "access": { "roles": [role] } } });
        // The last update has request 1's roles with request 0's lifetime.
        state.events.insert(
            id.clone(),
            vec![updated("viewer", "2026-01-01T01:00:00Z"), updated("editor", "2026-01-01T01:00:00Z")],
        );
        state
            .invitations
            .insert(id, json!({ "expires_at": "2026-01-01T01:00:00Z", "access": { "roles": ["editor"] } }));
        let v = check(&history, &state, LIMITS);
        assert!(v.iter().any(|v| v.contains("no single successful request")), "{v:?}");
    }
}
