//! Email messages and the transport that carries them: SMTP (lettre) when
//! configured, otherwise `.eml` files in a local folder (embedded mode).

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::{Result, WorkerError};

/// Where mail goes.
#[derive(Clone)]
pub enum Transport {
    /// An SMTP server, and how long one attempt (connect, every command, the
    /// message and the server's answer to it) may take.
    Smtp(AsyncSmtpTransport<Tokio1Executor>, std::time::Duration),
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
    pub fn smtp(url: &str, timeout: std::time::Duration) -> Result<Transport> {
        let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| WorkerError::MailConfig(format!("SMTP URL: {e}")))?;
        Ok(Transport::Smtp(builder.timeout(Some(timeout)).build(), timeout))
    }

    /// `.eml` files in `dir` (created when missing).
    pub fn folder(dir: &std::path::Path) -> Result<Transport> {
        std::fs::create_dir_all(dir).map_err(|e| WorkerError::MailConfig(format!("{}: {e}", dir.display())))?;
        Ok(Transport::Folder(AsyncFileTransport::new(dir), dir.to_path_buf()))
    }

    /// Sends one message; the server's (or folder's) answer on success.
    /// Each attempt opens its own connection (lettre's pool is off), so an
    /// attempt cut by the timeout leaves no half-used connection behind.
    pub async fn send(&self, message: Message) -> std::result::Result<String, SendFailure> {
        match self {
            Transport::Smtp(t, timeout) => match tokio::time::timeout(*timeout, t.send(message)).await {
                Ok(Ok(r)) => Ok(format!("{} {}", r.code(), r.message().collect::<Vec<_>>().join(" "))),
                Ok(Err(e)) => Err(SendFailure { reason: e.to_string(), permanent: e.is_permanent() }),
                Err(_) => Err(SendFailure::transient(format!("no answer from the SMTP server within {timeout:?}"))),
            },
            Transport::Folder(t, dir) => t
                .send(message)
                .await
                .map(|id| format!("written to {}/{id}.eml", dir.display()))
                .map_err(|e| SendFailure::transient(e.to_string())),
        }
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
