//! Email messages and the transport that carries them: SMTP (lettre's
//! connection, pooled here) when configured, otherwise `.eml` files in a
//! local folder (embedded mode).

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};

use crate::{Result, WorkerError};

/// Where mail goes.
#[derive(Clone)]
pub enum Transport {
    /// An SMTP server (with its free connections), and how long one attempt
    /// (connect, every command, the message and the server's answer to it)
    /// may take.
    Smtp(Arc<SmtpPool>, Duration),
    /// A folder of `.eml` files.
    Folder(AsyncFileTransport<Tokio1Executor>, std::path::PathBuf),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Smtp(_, timeout) => write!(f, "Transport::Smtp(timeout {timeout:?})"),
            Transport::Folder(_, p) => write!(f, "Transport::Folder({})", p.display()),
        }
    }
}

impl Transport {
    /// SMTP from a URL such as `smtp://user:pass@host:587?tls=required`
    /// (STARTTLS), `smtps://host:465` (TLS) or `smtp://127.0.0.1:2525`
    /// (plain, for local servers), with a per-attempt timeout: a server
    /// that stalls anywhere in the conversation (after DATA, typically)
    /// costs at most `timeout` before the attempt counts as failed.
    pub fn smtp(url: &str, timeout: Duration) -> Result<Transport> {
        let server = SmtpServer::parse(url, timeout)?;
        Ok(Transport::Smtp(Arc::new(SmtpPool { server, idle: Mutex::new(Vec::new()) }), timeout))
    }

    /// `.eml` files in `dir` (created when missing).
    pub fn folder(dir: &std::path::Path) -> Result<Transport> {
        std::fs::create_dir_all(dir).map_err(|e| WorkerError::MailConfig(format!("{}: {e}", dir.display())))?;
        Ok(Transport::Folder(AsyncFileTransport::new(dir), dir.to_path_buf()))
    }

    /// Sends one message; the server's (or folder's) answer on success.
    /// `fresh` asks for a new SMTP connection (retries do, so an attempt
    /// after a failure starts clean); otherwise a free one is reused when
    /// it was freed a moment ago or still answers NOOP. A connection goes
    /// back to the pool only after its message was accepted; after any error, or an attempt cut by the
    /// timeout, it is closed, so no half-used connection carries the next
    /// email.
    pub async fn send(&self, message: Message, fresh: bool) -> std::result::Result<String, SendFailure> {
        match self {
            Transport::Smtp(pool, timeout) => {
                let attempt = pool.send(&message, fresh);
                match tokio::time::timeout(*timeout, attempt).await {
                    Ok(Ok(answer)) => Ok(answer),
                    Ok(Err(e)) => Err(SendFailure { reason: e.to_string(), permanent: e.is_permanent() }),
                    Err(_) => Err(SendFailure::transient(format!("no answer from the SMTP server within {timeout:?}"))),
                }
            }
            Transport::Folder(t, dir) => t
                .send(message)
                .await
                .map(|id| format!("written to {}/{id}.eml", dir.display()))
                .map_err(|e| SendFailure::transient(e.to_string())),
        }
    }
}

/// An SMTP server and its connections that are free for the next email.
///
/// Opening a connection per email (TCP, greeting, EHLO, with TLS a
/// handshake, QUIT) cost more than the email itself. A connection goes back
/// to the pool only after an email went through it cleanly (the server
/// answered 2xx to the message); one that saw any error, or whose attempt
/// was cut by the timeout, is dropped with the attempt that used it, so a
/// connection left mid-conversation never carries the next email (which is
/// why lettre's own pool is not used: it takes back a connection whose
/// attempt was cancelled). A free connection idle for more than
/// [`CHECK_WHEN_IDLE_FOR`] is checked with NOOP before it is used again; it
/// is closed after [`IDLE_FOR_AT_MOST`] unused, and after
/// [`EMAILS_PER_CONNECTION`] emails.
pub struct SmtpPool {
    server: SmtpServer,
    idle: Mutex<Vec<Parked>>,
}

/// Free connections kept per server (beyond this, connections are closed
/// after their email).
pub const IDLE_CONNECTIONS: usize = 64;
/// A free connection unused this long is closed rather than reused (SMTP
/// servers drop idle clients after a few minutes; RFC 5321 suggests 5).
pub const IDLE_FOR_AT_MOST: Duration = Duration::from_secs(60);
/// A free connection unused for less than this is reused without the NOOP
/// check: under load connections are freed and taken again within
/// milliseconds, and the check was one of the five round trips per email.
/// Should the server have closed it anyway, the attempt fails like any
/// dropped connection and is retried on a new one.
pub const CHECK_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);
/// Emails one connection carries before it is closed (some servers refuse
/// more per connection).
pub const EMAILS_PER_CONNECTION: u32 = 100;

/// Where and how to connect, as the SMTP URL says.
struct SmtpServer {
    host: String,
    port: u16,
    tls: Tls,
    credentials: Option<Credentials>,
    hello: ClientId,
    timeout: Duration,
}

/// A free connection, since when, and how many emails it carried.
struct Parked {
    conn: AsyncSmtpConnection,
    since: Instant,
    sent: u32,
}

impl SmtpPool {
    /// One attempt: a free connection (unless `fresh`) or a new one, the
    /// message, and the connection back to the pool when it went through.
    /// Cancelling this future (the timeout) drops the connection with it.
    async fn send(
        &self,
        message: &Message,
        fresh: bool,
    ) -> std::result::Result<String, lettre::transport::smtp::Error> {
        let (mut conn, sent) = match if fresh { None } else { self.reusable().await } {
            Some(reused) => reused,
            None => (self.server.connect().await?, 0),
        };
        let response = conn.send(message.envelope(), &message.formatted()).await?;
        self.park(conn, sent + 1);
        Ok(format!("{} {}", response.code(), response.message().collect::<Vec<_>>().join(" ")))
    }

    /// The most recently freed connection, checked with NOOP when it was
    /// idle for a while, if any.
    async fn reusable(&self) -> Option<(AsyncSmtpConnection, u32)> {
        loop {
            let parked = self.idle.lock().expect("pool lock").pop()?;
            if parked.since.elapsed() > IDLE_FOR_AT_MOST {
                // The rest are older still.
                self.idle.lock().expect("pool lock").clear();
                return None;
            }
            let mut conn = parked.conn;
            // Freed a moment ago by an accepted email: still open (servers
            // drop idle clients after minutes), so no NOOP round trip.
            if parked.since.elapsed() < CHECK_WHEN_IDLE_FOR || conn.test_connected().await {
                return Some((conn, parked.sent));
            }
        }
    }

    fn park(&self, conn: AsyncSmtpConnection, sent: u32) {
        if sent >= EMAILS_PER_CONNECTION || conn.has_broken() {
            return;
        }
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(Parked { conn, since: Instant::now(), sent });
        }
    }
}

impl SmtpServer {
    /// Reads an SMTP URL the way lettre's `from_url` does: `smtp://` plain
    /// (port 25), `?tls=required` or `?tls=opportunistic` STARTTLS (587),
    /// `smtps://` TLS (465); user and password percent-decoded; a path
    /// names the EHLO domain.
    fn parse(url: &str, timeout: Duration) -> Result<SmtpServer> {
        let bad = |e: &dyn std::fmt::Display| WorkerError::MailConfig(format!("SMTP URL: {e}"));
        let parsed = url::Url::parse(url).map_err(|e| bad(&e))?;
        let host = parsed.host_str().ok_or_else(|| bad(&"no host"))?.to_string();
        let tls_query = parsed.query_pairs().find(|(k, _)| k == "tls").map(|(_, v)| v.to_string());
        let parameters = || TlsParameters::new(host.clone()).map_err(|e| bad(&e));
        let (port, tls) = match (parsed.scheme(), tls_query.as_deref()) {
            ("smtp", None) => (25, Tls::None),
            ("smtp", Some("required")) => (587, Tls::Required(parameters()?)),
            ("smtp", Some("opportunistic")) => (587, Tls::Opportunistic(parameters()?)),
            ("smtps", _) => (465, Tls::Wrapper(parameters()?)),
            (scheme, tls) => return Err(bad(&format!("unknown scheme `{scheme}` or tls `{tls:?}`"))),
        };
        let decode =
            |s: &str| percent_encoding::percent_decode_str(s).decode_utf8().map(Cow::into_owned).map_err(|e| bad(&e));
        let credentials = match parsed.password() {
            Some(password) => Some(Credentials::new(decode(parsed.username())?, decode(password)?)),
            None => None,
        };
        let hello = match parsed.path().trim_matches('/') {
            "" => ClientId::default(),
            name => ClientId::Domain(name.to_string()),
        };
        Ok(SmtpServer { port: parsed.port().unwrap_or(port), host, tls, credentials, hello, timeout })
    }

    /// A new connection: greeting, EHLO, TLS as configured, AUTH.
    async fn connect(&self) -> std::result::Result<AsyncSmtpConnection, lettre::transport::smtp::Error> {
        let wrapper = match &self.tls {
            Tls::Wrapper(p) => Some(p.clone()),
            _ => None,
        };
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.timeout),
            &self.hello,
            wrapper,
            None,
        )
        .await?;
        match &self.tls {
            Tls::Opportunistic(p) if conn.can_starttls() => conn.starttls(p.clone(), &self.hello).await?,
            Tls::Required(p) => conn.starttls(p.clone(), &self.hello).await?,
            _ => {}
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        Ok(conn)
    }
}
/// Why one sending attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    /// The server's answer or what went wrong, for the `failed` delivery state.
    pub reason: String,
    /// The server refused for good (an SMTP 5xx answer): retrying cannot
    /// help, so the email fails at once. Everything else (4xx answers, a
    /// dropped connection, a timeout) is retried.
    pub permanent: bool,
}

impl SendFailure {
    /// A failure worth retrying.
    pub fn transient(reason: String) -> SendFailure {
        SendFailure { reason, permanent: false }
    }
}

/// Sender and reply-to of every message.
#[derive(Debug, Clone)]
pub struct Sender {
    /// `From:`.
    pub from: Mailbox,
    /// `Reply-To:`, when set.
    pub reply_to: Option<Mailbox>,
}

impl Sender {
    /// Parses `"Name <address>"` forms.
    pub fn parse(from: &str, reply_to: Option<&str>) -> Result<Sender> {
        let from = from.parse().map_err(|e| WorkerError::MailConfig(format!("sender `{from}`: {e}")))?;
        let reply_to = reply_to
            .map(|r| r.parse().map_err(|e| WorkerError::MailConfig(format!("reply-to `{r}`: {e}"))))
            .transpose()?;
        Ok(Sender { from, reply_to })
    }
}

/// The words of one email, plain text and HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body.
    pub html: String,
}

/// Escapes text for HTML.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// Builds the message. `message_id` is derived from the triggering event,
/// so a resend of the same email carries the same Message-ID and receivers
/// can drop the duplicate.
pub fn message(sender: &Sender, to: &str, letter: &Letter, message_id: &str) -> std::result::Result<Message, String> {
    let to: Mailbox = to.parse().map_err(|e| format!("recipient: {e}"))?;
    let mut b = Message::builder()
        .from(sender.from.clone())
        .to(to)
        .subject(&letter.subject)
        .message_id(Some(message_id.to_string()));
    if let Some(r) = &sender.reply_to {
        b = b.reply_to(r.clone());
    }
    b.multipart(
        MultiPart::alternative()
            .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(letter.text.clone()))
            .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(letter.html.clone())),
    )
    .map_err(|e| e.to_string())
}
