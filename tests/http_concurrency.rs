//! The invariants under concurrency, through HTTP (issue 7, item 4): 100
//! clients hammer one server on PostgreSQL with invitations that compete for
//! emails, seats and quota, accepts racing each other, revokes and link
//! deadlines, and PATCHes of one invitation. Every operation is recorded and
//! the history is checked afterwards by `checker`.

mod checker;
mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use checker::{check, FinalState, Kind, Limits, Op, Outcome};
use chrono::Utc;
use common::*;
use serde_json::{json, Value};

/// Clients running at once.
const CLIENTS: usize = 100;

/// One unit of work: which account's history it belongs to, who sends it,
/// and when at the earliest.
struct Task {
    account: usize,
    bearer: Option<String>,
    kind: Kind,
    not_before: Option<tokio::time::Instant>,
}

/// Sends what `task` says and records the outcome.
async fn perform(app: &TestApp, account: &str, tokens: &BTreeMap<String, String>, client: usize, task: &Task) -> Op {
    let invoked = Utc::now();
    let (method, path, bearer, body) = match &task.kind {
        Kind::Invite { email, .. } => (
            "POST",
            format!("/v1/accounts/{account}/invitations"),
            task.bearer.as_deref(),
            Some(json!({ "email": email, "roles": ["viewer"] })),
        ),
        Kind::Accept { invitation } => (
            "POST",
            "/v1/invitations/accept".to_string(),
            None,
            Some(json!({ "token": tokens[invitation], "name": format!("Racer {client}"), "password": PASSWORD })),
        ),
        Kind::Revoke { invitation } => {
            ("DELETE", format!("/v1/accounts/{account}/invitations/{invitation}"), task.bearer.as_deref(), None)
        }
        Kind::Patch { invitation, roles, hours, .. } => (
            "PATCH",
            format!("/v1/accounts/{account}/invitations/{invitation}"),
            task.bearer.as_deref(),
            Some(json!({ "roles": roles, "expires_in_hours": hours })),
        ),
    };
    let outcome = send(app, method, &path, bearer, body).await;
    Op { client, kind: task.kind.clone(), invoked, completed: Utc::now(), outcome }
}

async fn send(app: &TestApp, method: &str, path: &str, bearer: Option<&str>, body: Option<Value>) -> Outcome {
    let mut req =
        app.http.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{}{path}", app.base));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    match req.timeout(Duration::from_secs(60)).send().await {
        Err(e) => Outcome::Lost(e.to_string()),
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if status < 300 {
                Outcome::Ok(body)
            } else {
                Outcome::Failed { status, code: body["code"].as_str().unwrap_or("(no code)").to_string() }
            }
        }
    }
}

/// Every page of a list route.
async fn all_pages(app: &TestApp, path: &str, bearer: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit=100&cursor={c}"),
            None => format!("{path}{sep}limit=100"),
        };
        let page = app.get(&url, Some(bearer)).await;
        assert_eq!(page.status, 200, "{url}: {page:?}");
        items.extend(page.body["items"].as_array().unwrap().iter().cloned());
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return items,
        }
    }
}

/// The account's invitations, active members and the events of the
/// invitations named in `history`.
async fn final_state(app: &TestApp, account: &str, owner: &str, history: &[Op], held_before: usize) -> FinalState {
    let mut state = FinalState { held_before, ..FinalState::default() };
    for inv in all_pages(app, &format!("/v1/accounts/{account}/invitations"), owner).await {
        state.invitations.insert(inv["id"].as_str().unwrap().to_string(), inv);
    }
    for m in all_pages(app, &format!("/v1/accounts/{account}/members?status=active"), owner).await {
        state.member_emails.insert(m["email"].as_str().unwrap_or_default().to_lowercase());
    }
    let named: BTreeSet<String> = history
        .iter()
        .filter_map(|op| match &op.kind {
            Kind::Accept { invitation } | Kind::Revoke { invitation } | Kind::Patch { invitation, .. } => {
                Some(invitation.clone())
            }
            Kind::Invite { .. } => None,
        })
        .collect();
    for id in named {
        let events = all_pages(app, &format!("/v1/accounts/{account}/events?stream=invitation-{id}"), owner).await;
        state.events.insert(id, events);
    }
    state
}

/// When the two accepts of the `nth` of the 15 three-second links are sent,
/// in milliseconds after the link was created. The first five are sent only
/// after the deadline, so they end expired however fast the server is; the
/// next five straddle the deadline (2.8 to 3.25 s), a race with the expiry
/// worker either side may win; the last five, created just before the
/// clients start, are accepted at once and once more at 2.5 s, so they end
/// accepted unless the server needs three seconds for one accept. Every
/// accept is measured from the client's clock after the link's creation
/// answered, which is later than the server's, so "after the deadline" holds.
fn deadline_accepts(nth: usize) -> &'static [u64] {
    const LATE: [[u64; 2]; 5] = [[3300, 3600], [3350, 3650], [3400, 3700], [3450, 3750], [3500, 3800]];
    const AROUND: [[u64; 2]; 5] = [[2800, 2850], [2900, 2950], [3000, 3050], [3100, 3150], [3200, 3250]];
    const EARLY: [u64; 2] = [0, 2500];
    match nth {
        0..5 => &LATE[nth],
        5..10 => &AROUND[nth - 5],
        _ => &EARLY,
    }
}

/// Opens an account through the operator with `seats`; returns its id and
/// the owner's session.
async fn account(app: &TestApp, number: &str, seats: u32) -> (String, String) {
    let (account, link) = app.open_account(number, &format!("owner@{number}.example.com"), seats).await;
    let (_, owner) = app.accept_new(&link, "Olga Owner").await;
    (account, owner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_clients_keep_every_invariant() {
    let app = spawn_app(&admit_ledger::testing::fresh_postgres_url().await).await;
    let stop = tokio::sync::watch::channel(false);
    let expiry = admit_workers::expiry::Expiry::new(
        app.admit.clone(),
        admit_workers::expiry::ExpiryConfig { tick: Duration::from_millis(25), reminders: None },
    );
    let expiry_stop = stop.1.clone();
    let expiry = tokio::spawn(async move { expiry.run(expiry_stop).await });

    // Account 0: 40 seats, 3 held before (owner, admin, the PATCH target);
    // 100 invitations by two inviters to 70 emails in several spellings.
    let (a0, owner0) = account(&app, "CC-0", 40).await;
    let (_, admin_link) = app.invite(&owner0, &a0, "admin@cc-0.example.com", &["admin"]).await;
    let (_, admin0) = app.accept_new(&admin_link, "Adam Admin").await;
    let (target, _) = app.invite(&owner0, &a0, "patched@cc-0.example.com", &["viewer"]).await;
    let mut tasks = Vec::new();
    for i in 0..100usize {
        let n = (i * 3) % 70;
        let email =
            if i % 3 == 0 { format!("Person{n}@CC-0.Example.com") } else { format!("person{n}@cc-0.example.com") };
        let (by, bearer) = if i % 2 == 0 { ("owner", &owner0) } else { ("admin", &admin0) };
        tasks.push(Task {
            account: 0,
            bearer: Some(bearer.clone()),
            kind: Kind::Invite { by: by.into(), email },
            not_before: None,
        });
    }
    // ... and 100 PATCHes of one pending invitation, each with its own
    // lifetime so the final state names the request it came from.
    let roles = ["viewer", "editor", "auditor"];
    for request in 0..100usize {
        let kind = Kind::Patch {
            invitation: target.clone(),
            request,
            roles: vec![roles[request % roles.len()].to_string()],
            hours: 1 + request as i64,
        };
        tasks.push(Task { account: 0, bearer: Some(owner0.clone()), kind, not_before: None });
    }

    // Account 1: enough seats; an admin sends 80 invitations against a
    // quota of 50, the owner 10 more; then links that race: four accepts
    // and a revoke on each of 15, two accepts each on 15 three-second links
    // (before, around and after the deadline: `deadline_accepts`).
    let (a1, owner1) = account(&app, "CC-1", 1000).await;
    let (_, admin_link) = app.invite(&owner1, &a1, "admin@cc-1.example.com", &["admin"]).await;
    let (_, admin1) = app.accept_new(&admin_link, "Ada Admin").await;
    for i in 0..90usize {
        let (by, bearer) = if i < 80 { ("admin", &admin1) } else { ("owner", &owner1) };
        let kind = Kind::Invite { by: by.into(), email: format!("quota{i}@cc-1.example.com") };
        tasks.push(Task { account: 1, bearer: Some(bearer.clone()), kind, not_before: None });
    }
    let mut tokens = BTreeMap::new();
    let start = tokio::time::Instant::now();
    for i in 0..30usize {
        let body = if i < 15 {
            json!({ "email": format!("race{i}@cc-1.example.com"), "roles": ["viewer"] })
        } else {
            json!({ "email": format!("deadline{i}@cc-1.example.com"), "roles": ["viewer"], "expires_in_seconds": 3 })
        };
        let created = app.post(&format!("/v1/accounts/{a1}/invitations"), Some(&owner1), body).await;
        assert_eq!(created.status, 201, "{created:?}");
        let id = created.body["id"].as_str().unwrap().to_string();
        tokens.insert(id.clone(), token_of(&created.body["accept_url"]));
        let created_at = tokio::time::Instant::now();
        let accepts: &[u64] = if i < 15 { &[0; 4] } else { deadline_accepts(i - 15) };
        for &offset in accepts {
            let not_before = (i >= 15).then(|| created_at + Duration::from_millis(offset));
            tasks.push(Task { account: 1, bearer: None, kind: Kind::Accept { invitation: id.clone() }, not_before });
        }
        if i < 15 {
            tasks.push(Task {
                account: 1,
                bearer: Some(owner1.clone()),
                kind: Kind::Revoke { invitation: id },
                not_before: None,
            });
        }
    }
    let held_before = [3usize, 2 + 30];

    // Interleave the work (timed accepts first, so they start on time),
    // then let 100 clients take from one queue.
    let mut order: Vec<usize> = (0..tasks.len()).collect();
    order.sort_by_key(|i| (tasks[*i].not_before.is_none(), (i * 7919) % tasks.len()));
    let queue: VecDeque<Task> = {
        let mut slots: Vec<Option<Task>> = tasks.into_iter().map(Some).collect();
        order.iter().map(|i| slots[*i].take().unwrap()).collect()
    };
    let queue = Arc::new(Mutex::new(queue));
    let history: Arc<Mutex<Vec<(usize, Op)>>> = Arc::default();
    let tokens = Arc::new(tokens);
    let accounts = Arc::new([a0.clone(), a1.clone()]);
    let app = Arc::new(app);
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (queue, history, tokens, accounts, app) =
            (queue.clone(), history.clone(), tokens.clone(), accounts.clone(), app.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let Some(task) = queue.lock().unwrap().pop_front() else { break };
                if let Some(at) = task.not_before {
                    tokio::time::sleep_until(at).await;
                }
                let op = perform(&app, &accounts[task.account], &tokens, client, &task).await;
                history.lock().unwrap().push((task.account, op));
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let ran_for = start.elapsed();
    // Links whose deadline passed without an accept are expired by the
    // worker: wait (bounded) until each of the 15 is accepted or expired.
    let settle_by = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let listed = app.get(&format!("/v1/accounts/{a1}/invitations?q=deadline"), Some(&owner1)).await;
        let accepted = listed.body["items"].as_array().unwrap().iter().filter(|i| i["status"] == "accepted").count();
        let expired =
            app.get(&format!("/v1/accounts/{a1}/events?type=InvitationExpired&limit=100"), Some(&owner1)).await;
        if accepted + expired.body["items"].as_array().map_or(0, |a| a.len()) == 15 {
            break;
        }
        assert!(tokio::time::Instant::now() < settle_by, "the expiry worker did not settle the deadline links");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.0.send(true).unwrap();
    expiry.await.unwrap().unwrap();

    let history = std::mem::take(&mut *history.lock().unwrap());
    let limits = [Limits { seats: 40, daily_quota: 50 }, Limits { seats: 1000, daily_quota: 50 }];
    let mut report = Vec::new();
    for (n, (account, owner)) in [(&a0, &owner0), (&a1, &owner1)].into_iter().enumerate() {
        let ops: Vec<Op> = history.iter().filter(|(a, _)| *a == n).map(|(_, op)| op.clone()).collect();
        let state = final_state(&app, account, owner, &ops, held_before[n]).await;
        let ok = ops.iter().filter(|o| matches!(o.outcome, Outcome::Ok(_))).count();
        report.push(format!("account {n}: {} operations, {ok} ok", ops.len()));
        for v in check(&ops, &state, limits[n]) {
            report.push(format!("VIOLATION account {n}: {v}"));
        }
        // The checker must have had something to check: every contended
        // resource was contended.
        let refused = |code: &str| {
            ops.iter().filter(|o| matches!(&o.outcome, Outcome::Failed { code: c, .. } if c == code)).count()
        };
        match n {
            0 => {
                assert!(refused("already_invited") > 0, "no duplicate email was refused: {report:?}");
                assert!(refused("seat_limit_reached") > 0, "the seats never ran out: {report:?}");
            }
            _ => {
                let ended = |status: &str| {
                    state
                        .invitations
                        .values()
                        .filter(|i| {
                            i["email"].as_str().is_some_and(|e| e.starts_with("deadline")) && i["status"] == status
                        })
                        .count()
                };
                report.push(format!("deadline links: {} accepted, {} expired", ended("accepted"), ended("expired")));
                // The five links accepted only after their deadline must have
                // expired; at least one link accepted at once must have joined.
                assert!(
                    ended("accepted") > 0 && ended("expired") >= 5,
                    "accept and expiry did not both win a race: {report:?}"
                );
                assert!(refused("daily_quota_exceeded") > 0, "the quota never bit: {report:?}");
                assert!(
                    refused("invitation_used") + refused("invitation_revoked") > 0,
                    "no accept lost a race: {report:?}"
                );
            }
        }
    }
    eprintln!("{} operations in {ran_for:?}\n{}", history.len(), report.join("\n"));
    assert!(!report.iter().any(|l| l.starts_with("VIOLATION")), "{}", report.join("\n"));
}
