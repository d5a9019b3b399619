//! A scriptable SMTP server that injects faults: each message (to the
//! scripted recipient) gets the next behaviour of the script, then `Accept`
//! for good; every message is recorded with its connection's times and the
//! full message the client sent (a connection that carried several gives
//! one record each; one that carried none, one empty record).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the server does with one connection, once the message is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers `250` to the message: delivered.
    Accept,
    /// Reads the whole message, then never answers (until the client hangs up).
    StallAfterData,
    /// Reads the whole message, then closes the connection without a word.
    DropAfterData,
    /// Answers the message with this reply line, e.g. `451 4.3.0 busy` or
    /// `550 5.1.1 no such user`.
    Reply(String),
}

/// One message the server took (or a connection that carried none): when
/// its connection opened and closed, what the server did, what it received.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The behaviour this connection followed at the end of DATA (None
    /// when it did not get that far).
    pub behaviour: Option<Behaviour>,
    /// When the connection was accepted.
    pub connected: Instant,
    /// When the last line of the message (the lone `.`) arrived.
    pub data_done: Option<Instant>,
    /// When the client closed the connection (or the server did).
    pub closed: Option<Instant>,
    /// The message as sent (dot-stuffing undone), when it got that far.
    pub message: Option<String>,
    /// Whether the server answered the message with a 2xx.
    pub accepted: bool,
}

impl Attempt {
    /// The `Message-ID:` header of the message, if any.
    pub fn message_id(&self) -> Option<String> {
        let m = self.message.as_ref()?;
        let line = m.lines().find(|l| l.to_ascii_lowercase().starts_with("message-id:"))?;
        Some(line["message-id:".len()..].trim().to_string())
    }

    /// The `To:` header of the message, if any.
    pub fn to(&self) -> Option<String> {
        let m = self.message.as_ref()?;
        let line = m.lines().find(|l| l.to_ascii_lowercase().starts_with("to:"))?;
        Some(line["to:".len()..].trim().to_string())
    }
}

/// The fault-injecting SMTP server on a loopback port.
pub struct FaultySmtp {
    /// The port it listens on.
    pub port: u16,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    task: tokio::task::JoinHandle<()>,
}

/// The behaviours still to play, for messages whose recipient contains `to`.
struct Script {
    to: String,
    next: Mutex<VecDeque<Behaviour>>,
}

impl Script {
    /// The behaviour for a message to `rcpt`: the script's next one for
    /// the scripted recipient, `Accept` otherwise or once it ran out.
    fn pick(&self, rcpt: &str) -> Behaviour {
        if !rcpt.contains(&self.to) {
            return Behaviour::Accept;
        }
        self.next.lock().unwrap().pop_front().unwrap_or(Behaviour::Accept)
    }
}

impl FaultySmtp {
    /// Starts a server whose n-th message to a recipient containing `to`
    /// gets `script[n]`, and `Accept` after the script ran out (every
    /// other message is accepted).
    pub async fn start(to: &str, script: Vec<Behaviour>) -> FaultySmtp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let attempts: Arc<Mutex<Vec<Attempt>>> = Arc::default();
        let script = Arc::new(Script { to: to.to_string(), next: Mutex::new(script.into()) });
        let task = tokio::spawn({
            let attempts = attempts.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let slot = {
                        let mut all = attempts.lock().unwrap();
                        all.push(Attempt {
                            behaviour: None,
                            connected: Instant::now(),
                            data_done: None,
                            closed: None,
                            message: None,
                            accepted: false,
                        });
                        all.len() - 1
                    };
                    tokio::spawn(serve(stream, script.clone(), attempts.clone(), slot));
                }
            }
        });
        FaultySmtp { port, attempts, task }
    }

    /// `smtp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message so far (and every connection that carried none), in
    /// the order they came.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap().clone()
    }

    /// The messages that came whole to a recipient containing `to`.
    pub fn messages_to(&self, to: &str) -> Vec<Attempt> {
        self.attempts().into_iter().filter(|a| a.to().is_some_and(|t| t.contains(to))).collect()
    }
}

impl Drop for FaultySmtp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Speaks SMTP on one connection, following `behaviour` at the end of DATA.
async fn serve(stream: TcpStream, script: Arc<Script>, attempts: Arc<Mutex<Vec<Attempt>>>, first: usize) {
    // This connection's records: one per message (the first made at accept).
    let mut slots = vec![first];
    let note = |slot: usize, f: &dyn Fn(&mut Attempt)| f(&mut attempts.lock().unwrap()[slot]);
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let _ = write.write_all(b"220 faulty.test ESMTP ready\r\n").await;
    let mut line = String::new();
    let mut rcpt = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
            break;
        }
        if line.to_ascii_uppercase().starts_with("RCPT") {
            rcpt.push_str(&line);
        }
        let verb = line.trim_end().split(' ').next().unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-faulty.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 OK\r\n",
            "QUIT" => {
                let _ = write.write_all(b"221 bye\r\n").await;
                break;
            }
            "DATA" => {
                let _ = write.write_all(b"354 go ahead\r\n").await;
                let Some(message) = read_message(&mut lines).await else { break };
                let behaviour = script.pick(&rcpt);
                rcpt.clear();
                let mut slot = *slots.last().expect("the first record");
                if attempts.lock().unwrap()[slot].message.is_some() {
                    // A further message on the same connection: a record of its own.
                    let mut all = attempts.lock().unwrap();
                    let connected = all[slot].connected;
                    all.push(Attempt {
                        behaviour: None,
                        connected,
                        data_done: None,
                        closed: None,
                        message: None,
                        accepted: false,
                    });
                    slot = all.len() - 1;
                    slots.push(slot);
                }
                note(slot, &|a| {
                    a.data_done = Some(Instant::now());
                    a.message = Some(message.clone());
                    a.behaviour = Some(behaviour.clone());
                });
                match &behaviour {
                    Behaviour::Accept => {
                        note(slot, &|a| a.accepted = true);
                        let _ = write.write_all(b"250 2.0.0 queued as faulty\r\n").await;
                        continue;
                    }
                    Behaviour::StallAfterData => {
                        // Say nothing; wait for the client to give up.
                        let mut rest = Vec::new();
                        let _ = tokio::io::AsyncReadExt::read_to_end(&mut lines, &mut rest).await;
                        break;
                    }
                    Behaviour::DropAfterData => break,
                    Behaviour::Reply(text) => {
                        note(slot, &|a| a.accepted = text.starts_with('2'));
                        let _ = write.write_all(format!("{text}\r\n").as_bytes()).await;
                        continue;
                    }
                }
            }
            _ => b"500 5.5.2 unknown command\r\n",
        };
        if write.write_all(reply).await.is_err() {
            break;
        }
    }
    let closed = Instant::now();
    for slot in slots {
        note(slot, &|a| a.closed = Some(closed));
    }
}

/// Reads DATA up to the lone `.`, undoing dot-stuffing; None if the client
/// hung up first.
async fn read_message(lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<String> {
    let mut message = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if line == ".\r\n" || line == ".\n" {
            return Some(message);
        }
        message.push_str(line.strip_prefix('.').unwrap_or(&line));
    }
}

/// The pauses between attempts: from one connection's end to the next one's start.
pub fn pauses(attempts: &[Attempt]) -> Vec<Duration> {
    attempts.windows(2).map(|w| w[1].connected - w[0].closed.expect("the earlier connection ended")).collect()
}
