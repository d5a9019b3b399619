//! `load`: the HTTP load generator. N concurrent clients against a running
//! `admit serve` doing a realistic mix for a fixed time — invite 60%,
//! list/search 25%, accept 10%, resend/revoke 5% — then prints requests/s,
//! p50/p95/p99/max latency and errors per kind, and the server's idle and
//! peak memory when its pid is given, with where the machine's CPU went
//! during the load (server, generator, the rest) and, on PostgreSQL, the
//! write transactions the database committed per request.
//!
//! `cargo run --release -p admit-bench --bin load -- --url http://127.0.0.1:8080 --operator-token T --clients 32 --seconds 30 --server-pid PID`
//! (`bench/load.sh` starts the server on each backend and runs this).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use admit_bench::{cpu_seconds, peak_rss_mib, rss_mib, Latencies, MachineCpu};
use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};

/// What to load and for how long.
#[derive(Parser, Debug)]
struct Args {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The server's operator token (to open the benchmark's account).
    #[arg(long, env = "ADMIT_OPERATOR_TOKEN")]
    operator_token: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Accounts the clients share out (client n works in account n % accounts).
    #[arg(long, default_value_t = 1)]
    accounts: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// The server's process id, to report its memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Only invitations (for the comparison with the pgbench ceiling).
    #[arg(long)]
    invites_only: bool,
    /// Only list requests: pages of up to 50 pending invitations searched
    /// by an email substring (for the list latency target; use with
    /// --seed-invitations), a third each of three selectivities: one match
    /// (`list-one`), about 1% of the account (`list-some`, a full page) and
    /// every invitation (`list-all`, a full page).
    #[arg(long)]
    list_only: bool,
    /// Before the load, add this many invitations to the account's read
    /// model directly in the database (`--database-url`), so list requests
    /// search a large account without hours of inviting.
    #[arg(long, default_value_t = 0)]
    seed_invitations: u64,
    /// The server's database, for --seed-invitations; on PostgreSQL also
    /// to count its write transactions during the load.
    #[arg(long)]
    database_url: Option<String>,
}

/// Copies the account's one invitation row `n` times with new ids, emails
/// `seed<i>@load.example.com` and creation times one second apart (the
/// i-th copy i seconds before the original), four in five pending.
async fn seed(url: &str, account: &str, n: u64) -> Result<()> {
    let db = admit_ledger::Database::connect(url).await?;
    let account = uuid::Uuid::parse_str(account)?;
    let (id, created_at) = match db.backend() {
        admit_ledger::Backend::Postgres => ("gen_random_uuid()", "t.created_at - i * interval '1 second'"),
        admit_ledger::Backend::Sqlite => {
            ("randomblob(16)", "strftime('%Y-%m-%dT%H:%M:%f', t.created_at, '-' || i || ' seconds') || '+00:00'")
        }
    };
    let email = "'seed' || i || '@load.example.com'";
    let status = "CASE WHEN i % 5 = 0 THEN 'accepted' ELSE 'pending' END";
    let series = match db.backend() {
        admit_ledger::Backend::Postgres => "generate_series(1, $2) AS s(i)".to_string(),
        admit_ledger::Backend::Sqlite => {
            "(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $2) SELECT i FROM s) AS s"
                .to_string()
        }
    };
    let sql = format!(
        "INSERT INTO invitations (invitation_id, account_id, person_id, email, email_hash, name, status, access, roles, invited_by, channel, \
         created_at, expires_at, resend_count, updated_at, version, opens, clicks) \
         SELECT {id}, t.account_id, t.person_id, {email}, 'seed' || i, NULL, {status}, t.access, t.roles, t.invited_by, t.channel, \
         {created_at}, t.expires_at, 0, t.updated_at, 1, 0, 0 \
         FROM {series}, (SELECT * FROM invitations WHERE account_id = $1 LIMIT 1) AS t"
    );
    let started = Instant::now();
    admit_ledger::on_db_write!(&db, p => sqlx::query(&sql).bind(account).bind(n as i64).execute(p).await.map(|_| ())?);
    if db.backend() == admit_ledger::Backend::Postgres {
        admit_ledger::on_db_write!(&db, p => sqlx::query("ANALYZE invitations").execute(p).await.map(|_| ())?);
    }
    println!("seeded {n} invitations in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The kinds of request, in the order the table prints them (a kind no
/// request of the mix had is left out).
const KINDS: [&str; 8] = ["invite", "list", "list-one", "list-some", "list-all", "accept", "resend", "revoke"];

/// One client's results: latencies and errors per kind.
#[derive(Default)]
struct Tally {
    latencies: BTreeMap<&'static str, Vec<Duration>>,
    errors: BTreeMap<&'static str, u64>,
    first_error: Option<String>,
}

/// A small deterministic generator (xorshift), one per client.
struct Dice(u64);

impl Dice {
    fn roll(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

struct Account {
    base: String,
    id: String,
    owner: String,
}

async fn open_account(http: &reqwest::Client, args: &Args, run: &str) -> Result<Account> {
    let base = args.url.trim_end_matches('/').to_string();
    let opened: Value = http
        .post(format!("{base}/v1/accounts"))
        .bearer_auth(&args.operator_token)
        .json(&json!({ "name": format!("Load {run}"), "customer_number": format!("LOAD-{run}"), "owner_email": format!("owner-{run}@load.example.com"), "seats": 100_000_000 }))
        .send()
        .await?
        .error_for_status()
        .context("opening the account (is the operator token right?)")?
        .json()
        .await?;
    let id = opened["account_id"].as_str().context("account_id")?.to_string();
    let token = token_of(&opened["accept_url"])?;
    let accepted: Value = http
        .post(format!("{base}/v1/invitations/accept"))
        .json(&json!({ "token": token, "name": "Load Owner", "password": PASSWORD }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let owner = accepted["session_token"].as_str().context("session_token")?.to_string();
    http.patch(format!("{base}/v1/accounts/{id}"))
        .bearer_auth(&owner)
        .json(&json!({ "daily_invitation_quota": 1_000_000_000u32 }))
        .send()
        .await?
        .error_for_status()?;
    Ok(Account { base, id, owner })
}

const PASSWORD: &str = "violet kettle under seventeen clouds";

fn token_of(url: &Value) -> Result<String> {
    Ok(url.as_str().context("accept_url")?.rsplit_once("/invite/").context("an accept link")?.1.to_string())
}

/// Which requests a client makes.
#[derive(Clone, Copy)]
enum Mix {
    /// invite 60%, list/search 25%, accept 10%, resend/revoke 5%.
    Realistic,
    /// Only invitations.
    Invites,
    /// Only searches of seeded invitations.
    Lists { seeded: u64 },
}

async fn client(n: usize, http: reqwest::Client, account: std::sync::Arc<Account>, until: Instant, mix: Mix) -> Tally {
    let mut tally = Tally::default();
    let mut dice = Dice(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1));
    let mut links: Vec<String> = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let mut sent = 0u64;
    let a = &*account;
    let invitations = format!("{}/v1/accounts/{}/invitations", a.base, a.id);
    while Instant::now() < until {
        let roll = match mix {
            Mix::Realistic => dice.roll() % 100,
            Mix::Invites => 0,
            Mix::Lists { .. } => 60,
        };
        let kind = match roll {
            0..=59 => "invite",
            60..=84 => "list",
            85..=94 if !links.is_empty() => "accept",
            95..=99 if !pending.is_empty() => {
                if dice.roll() % 2 == 0 {
                    "resend"
                } else {
                    "revoke"
                }
            }
            _ => "invite",
        };
        let kind = match (kind, mix) {
            ("list", Mix::Lists { .. }) => ["list-one", "list-some", "list-all"][(dice.roll() % 3) as usize],
            _ => kind,
        };
        let started = Instant::now();
        let request = match kind {
            "invite" => {
                sent += 1;
                http.post(&invitations)
                    .bearer_auth(&a.owner)
                    .json(&json!({ "email": format!("c{n}-{sent}@load.example.com"), "roles": ["viewer"] }))
            }
            "list" | "list-one" | "list-some" | "list-all" => {
                let needle = match (kind, mix) {
                    // seed<i>@ is one invitation's email.
                    ("list-one", Mix::Lists { seeded }) => format!("seed{}@", 1 + dice.roll() % seeded.max(1)),
                    // seed<10..99> is in 1 + 10 + 100 + 1,000 emails of
                    // 100,000 (seed12, seed120.., seed1200.., seed12000..).
                    ("list-some", _) => format!("seed{}", 10 + dice.roll() % 90),
                    ("list-all", _) => "load.example".to_string(),
                    _ => format!("c{n}-{}", dice.roll() % sent.max(1)),
                };
                http.get(format!("{invitations}?status=pending&q={needle}&limit=50")).bearer_auth(&a.owner)
            }
            "accept" => {
                let token = links.pop().expect("a link");
                http.post(format!("{}/v1/invitations/accept", a.base))
                    .json(&json!({ "token": token, "name": format!("Client {n}"), "password": PASSWORD }))
            }
            "resend" => {
                let id = pending[dice.roll() as usize % pending.len()].clone();
                http.post(format!("{invitations}/{id}/resend")).bearer_auth(&a.owner)
            }
            _ => {
                let id = pending.swap_remove(dice.roll() as usize % pending.len());
                http.delete(format!("{invitations}/{id}")).bearer_auth(&a.owner)
            }
        };
        let outcome = request.send().await;
        let elapsed = started.elapsed();
        match outcome {
            Ok(r) if r.status().is_success() => {
                if kind == "invite" {
                    if let Ok(body) = r.json::<Value>().await {
                        if let (Ok(token), Some(id)) = (token_of(&body["accept_url"]), body["id"].as_str()) {
                            // Two in three invitations wait to be accepted, the others
                            // to be resent or revoked.
                            if dice.roll() % 3 == 0 {
                                pending.push(id.to_string());
                            } else if links.len() < 200 {
                                links.push(token);
                            }
                        }
                    }
                } else {
                    let _ = r.bytes().await;
                }
                tally.latencies.entry(kind).or_default().push(elapsed);
            }
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                tally.first_error.get_or_insert(format!("{kind}: {status} {body}"));
                *tally.errors.entry(kind).or_default() += 1;
            }
            Err(e) => {
                tally.first_error.get_or_insert(format!("{kind}: {e}"));
                *tally.errors.entry(kind).or_default() += 1;
            }
        }
    }
    tally
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.clients).build()?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase();
    let idle = args.server_pid.and_then(rss_mib);
    let mut accounts = Vec::new();
    for a in 0..args.accounts.max(1) {
        accounts.push(std::sync::Arc::new(open_account(&http, &args, &format!("{run}-{a}")).await?));
    }
    if args.seed_invitations > 0 {
        let url = args.database_url.as_deref().context("--seed-invitations needs --database-url")?;
        seed(url, &accounts[0].id, args.seed_invitations).await?;
    }
    let mix = match (args.invites_only, args.list_only) {
        (true, _) => Mix::Invites,
        (_, true) => Mix::Lists { seeded: args.seed_invitations },
        _ => Mix::Realistic,
    };
    let database = match args.database_url.as_deref().filter(|u| u.starts_with("postgres")) {
        Some(url) => Some(sqlx::PgPool::connect(url).await?),
        None => None,
    };
    let before = Meters::read(&args, database.as_ref()).await;
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let clients: Vec<_> = (0..args.clients)
        .map(|n| tokio::spawn(client(n, http.clone(), accounts[n % accounts.len()].clone(), until, mix)))
        .collect();
    let mut all = Tally::default();
    for c in clients {
        let t = c.await?;
        for (k, v) in t.latencies {
            all.latencies.entry(k).or_default().extend(v);
        }
        for (k, v) in t.errors {
            *all.errors.entry(k).or_default() += v;
        }
        if all.first_error.is_none() {
            all.first_error = t.first_error;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let after = Meters::read(&args, database.as_ref()).await;
    println!("{} clients, {} account(s), {:.1} s", args.clients, accounts.len(), wall);
    println!(
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "kind", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "ok", "errors"
    );
    let mut total_ok = 0;
    for kind in KINDS {
        if !all.latencies.contains_key(kind) && !all.errors.contains_key(kind) {
            continue;
        }
        let mut samples = all.latencies.remove(kind).unwrap_or_default();
        let l = Latencies::of(&mut samples);
        total_ok += samples.len();
        println!(
            "{:<8} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9} {:>7}",
            kind,
            samples.len() as f64 / wall,
            ms(l.p50),
            ms(l.p95),
            ms(l.p99),
            ms(l.max),
            samples.len(),
            all.errors.get(kind).copied().unwrap_or(0)
        );
    }
    println!("total    {:>9.1} req/s", total_ok as f64 / wall);
    print_meters(&before, &after, wall, total_ok);
    if let Some(pid) = args.server_pid {
        println!(
            "server rss: idle {:.1} MiB, now {:.1} MiB, peak {:.1} MiB",
            idle.unwrap_or(f64::NAN),
            rss_mib(pid).unwrap_or(f64::NAN),
            peak_rss_mib(pid).unwrap_or(f64::NAN)
        );
    }
    if let Some(e) = &all.first_error {
        println!("first error: {e}");
    }
    if total_ok == 0 {
        bail!("no request succeeded");
    }
    Ok(())
}

/// The counters read before and after the load, to say where the machine's
/// CPU went and how many write transactions the database committed.
struct Meters {
    server: Option<f64>,
    generator: Option<f64>,
    machine: Option<MachineCpu>,
    transactions: Option<i64>,
}

impl Meters {
    async fn read(args: &Args, database: Option<&sqlx::PgPool>) -> Meters {
        Meters {
            server: args.server_pid.and_then(cpu_seconds),
            generator: cpu_seconds(std::process::id()),
            machine: MachineCpu::now(),
            transactions: match database {
                Some(db) => assigned_transaction_ids(db).await.ok(),
                None => None,
            },
        }
    }
}

/// The transaction id PostgreSQL assigns next, less one: only a
/// transaction that writes takes one, so the difference over the load is
/// the number of write transactions (each a WAL flush) the whole server
/// committed or aborted, this query's own included.
async fn assigned_transaction_ids(db: &sqlx::PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint").fetch_one(db).await?)
}

/// Prints the server's, the generator's and the rest of the machine's
/// share of the CPU over the `wall` seconds of load, and the database's
/// write transactions per request.
fn print_meters(before: &Meters, after: &Meters, wall: f64, requests: usize) {
    let used = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
    let server = used(after.server, before.server);
    let generator = used(after.generator, before.generator);
    if let (Some(server), Some(generator), Some(a), Some(b)) = (server, generator, after.machine, before.machine) {
        let machine = a.since(b);
        println!(
            "cpu over the load ({} cores): server {:.2} cores ({:.2} ms per request), load generator {:.2}, \
             rest of the machine (database, others) {:.2}; stolen by the host {:.2}",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            server / wall,
            server * 1000.0 / requests.max(1) as f64,
            generator / wall,
            // The counters tick at different moments: never below zero.
            ((machine.busy - server - generator) / wall).max(0.0),
            machine.stolen / wall,
        );
    }
    if let (Some(a), Some(b)) = (after.transactions, before.transactions) {
        let n = a - b - 1;
        println!("database: {n} write transactions, {:.2} per request", n as f64 / requests.max(1) as f64);
    }
}
