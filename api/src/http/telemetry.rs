//! Request ids, structured request logs and Prometheus metrics for
//! `admit serve`.
//!
//! Operators need three things from a running server (DESIGN.md: "Prometheus
//! metrics, structured logs"): a way to follow one request from the load
//! balancer through the logs into the events it appended (the request id),
//! one log line per request, and a `/metrics` endpoint. The exposition text
//! is written by hand so the crate needs no metrics dependency; the registry
//! is small and fixed.
//!
//! Labels only ever carry bounded values: the *route template* (never the
//! raw path, so ids in URLs cannot blow up label cardinality and tokens in
//! paths never reach logs or metrics), a normalised method and the status.
//!
//! Wire it up with `Router::layer` so that [`axum::extract::MatchedPath`] is
//! already known when [`track`] runs:
//!
//! ```ignore
//! Router::new()
//!     .route("/metrics", get(telemetry::metrics))
//!     .layer(axum::middleware::from_fn(telemetry::track))
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

/// The header that carries the request id in and out.
const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest incoming request id we accept; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 64;

/// The route label of requests no route matched (404s, the fallback).
const UNMATCHED: &str = "unmatched";

/// Upper bounds of the request duration histogram, in seconds, with their
/// exposition spelling (`+Inf` is implicit: it is the count).
const BUCKETS: [(f64, &str); 12] = [
    (0.001, "0.001"),
    (0.0025, "0.0025"),
    (0.005, "0.005"),
    (0.01, "0.01"),
    (0.025, "0.025"),
    (0.05, "0.05"),
    (0.1, "0.1"),
    (0.25, "0.25"),
    (0.5, "0.5"),
    (1.0, "1"),
    (2.5, "2.5"),
    (5.0, "5"),
];

/// The request id of the current request, inserted into the request's
/// extensions by [`track`].
///
/// It exists so handlers can copy it into the metadata of the events they
/// append (DESIGN.md: every event records its request id), which links a log
/// line, a response header and a ledger entry together.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Middleware that gives each request an id, a tracing span, a completion
/// log line and its metrics.
///
/// It exists so every handler gets all of that without doing anything. Use
/// it as `axum::middleware::from_fn(telemetry::track)` applied with
/// `Router::layer` (not around the router), so the matched route template
/// is known.
///
/// - The incoming `x-request-id` is kept if it is 1 to 64 characters of
///   `[A-Za-z0-9._-]`; otherwise (absent, too long, anything else) a UUID v7
///   is generated, so a client cannot inject arbitrary text into logs.
/// - The id is inserted as [`RequestId`] into the request extensions, the
///   request header is overwritten with it, and it is returned in the
///   `x-request-id` response header.
/// - The request runs inside `info_span!("request", request_id, method,
///   route)`, where `route` is the matched template or `"unmatched"`.
/// - One `info!` line with the status and latency in milliseconds is logged
///   when the response is ready.
/// - `admit_http_requests_total` and `admit_http_request_duration_seconds`
///   are updated (one lock).
pub async fn track(mut req: Request, next: Next) -> Response {
    let started = Instant::now();

    let id = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid_request_id(v))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let id_header = HeaderValue::from_str(&id).ok();
    if let Some(value) = &id_header {
        req.headers_mut().insert(REQUEST_ID_HEADER, value.clone());
    }
    req.extensions_mut().insert(RequestId(id.clone()));

    let method = method_label(req.method());
    let route: String = req.extensions().get::<MatchedPath>().map_or(UNMATCHED, MatchedPath::as_str).to_owned();

    let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route);
    let mut response = next.run(req).instrument(span.clone()).await;

    if let Some(value) = id_header {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }

    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(status, latency_ms = elapsed.as_secs_f64() * 1000.0, "request completed");
    });
    observe_request(method, &route, status, elapsed.as_secs_f64());

    response
}

/// Counts events appended to the ledger (`admit_events_appended_total`).
///
/// It exists so operators can see write throughput of the ledger itself,
/// independent of HTTP traffic (commands also arrive from the CLI and the
/// workers). Call it after the appending transaction commits.
pub fn record_events_appended(n: u64) {
    EVENTS_APPENDED.fetch_add(n, Ordering::Relaxed);
}

/// Sets the `admit_projection_lag_seconds` gauge.
///
/// It exists so an alert can fire when read models fall behind the log.
/// Inline projections update in the same transaction as the append, so the
/// gauge stays 0 unless a worker that runs an asynchronous projector reports
/// otherwise.
pub fn set_projection_lag(seconds: f64) {
    PROJECTION_LAG_BITS.store(seconds.to_bits(), Ordering::Relaxed);
}

/// The whole registry in the Prometheus text exposition format 0.0.4.
///
/// It exists for the `/metrics` handler (and for tests). Families are in a
/// fixed order and series are sorted by label set, so the output is
/// deterministic; label values are escaped per the format (backslash, double
/// quote, newline).
pub fn render() -> String {
    let mut out = String::with_capacity(4096);
    {
        let http = HTTP.lock().unwrap_or_else(PoisonError::into_inner);

        family_header(
            &mut out,
            "admit_http_requests_total",
            "HTTP requests handled, by method, matched route template and status.",
            "counter",
        );
        for (method, routes) in &http.by_method {
            for (route, series) in routes {
                for (status, count) in &series.by_status {
                    out.push_str("admit_http_requests_total{method=\"");
                    escape_label_value(&mut out, method);
                    out.push_str("\",route=\"");
                    escape_label_value(&mut out, route);
                    let _ = writeln!(out, "\",status=\"{status}\"}} {count}");
                }
            }
        }

        family_header(
            &mut out,
            "admit_http_request_duration_seconds",
            "Time from receiving an HTTP request to its response being ready, by method and matched route template.",
            "histogram",
        );
        for (method, routes) in &http.by_method {
            for (route, series) in routes {
                let mut labels = String::new();
                labels.push_str("method=\"");
                escape_label_value(&mut labels, method);
                labels.push_str("\",route=\"");
                escape_label_value(&mut labels, route);
                labels.push('"');

                let mut cumulative = 0u64;
                for ((_, le), n) in BUCKETS.iter().zip(series.buckets) {
                    cumulative += n;
                    let _ = writeln!(
                        out,
                        "admit_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(
                    out,
                    "admit_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    series.count
                );
                let _ = writeln!(out, "admit_http_request_duration_seconds_sum{{{labels}}} {}", fmt_float(series.sum));
                let _ = writeln!(out, "admit_http_request_duration_seconds_count{{{labels}}} {}", series.count);
            }
        }
    }

    family_header(&mut out, "admit_events_appended_total", "Events appended to the ledger by this process.", "counter");
    let _ = writeln!(out, "admit_events_appended_total {}", EVENTS_APPENDED.load(Ordering::Relaxed));

    family_header(
        &mut out,
        "admit_projection_lag_seconds",
        "How far the slowest projection is behind the event log (0 for inline projections).",
        "gauge",
    );
    let lag = f64::from_bits(PROJECTION_LAG_BITS.load(Ordering::Relaxed));
    let _ = writeln!(out, "admit_projection_lag_seconds {}", fmt_float(lag));

    out
}

/// Handler for `GET /metrics`.
///
/// It exists so Prometheus can scrape `admit serve`: it returns [`render`]
/// with the content type of the text format 0.0.4.
pub async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render())
}

// ---------------------------------------------------------------------------
// The registry.

/// HTTP series, keyed method → route so lookups borrow `&str` (no allocation
/// on the hot path once a series exists) and iteration is sorted by label set.
struct HttpMetrics {
    by_method: BTreeMap<String, BTreeMap<String, RouteSeries>>,
}

/// The counter and histogram series of one (method, route).
struct RouteSeries {
    by_status: BTreeMap<u16, u64>,
    /// Per-bucket (not cumulative) observation counts; cumulated on render.
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl RouteSeries {
    fn new() -> Self {
        RouteSeries { by_status: BTreeMap::new(), buckets: [0; BUCKETS.len()], sum: 0.0, count: 0 }
    }
}

static HTTP: Mutex<HttpMetrics> = Mutex::new(HttpMetrics { by_method: BTreeMap::new() });
static EVENTS_APPENDED: AtomicU64 = AtomicU64::new(0);
/// `f64` bits of the projection lag; 0 is `0.0_f64.to_bits()`.
static PROJECTION_LAG_BITS: AtomicU64 = AtomicU64::new(0);

/// Records one finished request under a single lock.
fn observe_request(method: &str, route: &str, status: u16, seconds: f64) {
    let mut http = HTTP.lock().unwrap_or_else(PoisonError::into_inner);
    let routes = match http.by_method.get_mut(method) {
        Some(routes) => routes,
        None => http.by_method.entry(method.to_owned()).or_default(),
    };
    let series = match routes.get_mut(route) {
        Some(series) => series,
        None => routes.entry(route.to_owned()).or_insert_with(RouteSeries::new),
    };
    *series.by_status.entry(status).or_insert(0) += 1;
    if let Some(i) = BUCKETS.iter().position(|(le, _)| seconds <= *le) {
        series.buckets[i] += 1;
    }
    series.sum += seconds;
    series.count += 1;
}

// ---------------------------------------------------------------------------
// Helpers.

/// Whether an incoming request id is safe to keep: 1..=64 characters of
/// `[A-Za-z0-9._-]`.
fn is_valid_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The method label: standard methods by name, anything else as `OTHER`, so
/// clients cannot create unbounded series with invented methods.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// Writes the `# HELP` and `# TYPE` lines of a metric family.
fn family_header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = write!(out, "# HELP {name} ");
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    let _ = writeln!(out, "\n# TYPE {name} {kind}");
}

/// Appends a label value escaped per the text format: `\` → `\\`,
/// `"` → `\"`, newline → `\n`.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Formats a sample value the way Prometheus parses it (`+Inf`, `-Inf`,
/// `NaN`; Rust would print `inf`).
fn fmt_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::sync::{Arc, Mutex as StdMutex};

    use axum::routing::get;
    use axum::Router;

    use super::*;

    /// A started test server; the task ends with the test's runtime.
    async fn serve(router: Router) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    }

    /// A parsed HTTP/1.1 response.
    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
    }

    /// Sends one raw HTTP/1.1 request with `Connection: close` (blocking I/O
    /// on the blocking pool, so no tokio io feature is needed).
    async fn call(addr: std::net::SocketAddr, method: &str, path: &str, extra_headers: &[(&str, &str)]) -> Reply {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (name, value) in extra_headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let raw = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).unwrap();
            String::from_utf8(raw).unwrap()
        })
        .await
        .unwrap();

        let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
        let mut lines = head.lines();
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers =
            lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())).collect();
        Reply { status, headers, body: body.to_owned() }
    }

    /// A router whose routes live under `prefix` (unique per test, since the
    /// registry is process-global) with the middleware applied.
    fn app(prefix: &str) -> Router {
        Router::new()
            .route(&format!("{prefix}/items/{{id}}"), get(|| async { "item" }))
            .route(
                &format!("{prefix}/whoami"),
                get(|axum::Extension(RequestId(id)): axum::Extension<RequestId>| async move { id }),
            )
            .route("/metrics", get(metrics))
            .layer(axum::middleware::from_fn(track))
    }

    fn sample(text: &str, series: &str) -> Option<u64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    fn is_uuid_v7(s: &str) -> bool {
        uuid::Uuid::parse_str(s).is_ok_and(|u| u.get_version_num() == 7)
    }

    #[tokio::test]
    async fn generates_echoes_and_replaces_request_ids() {
        let addr = serve(app("/t-ids")).await;

        let reply = call(addr, "GET", "/t-ids/whoami", &[]).await;
        assert_eq!(reply.status, 200);
        let generated = reply.header("x-request-id").expect("a generated id").to_owned();
        assert!(is_uuid_v7(&generated), "{generated}");
        assert_eq!(reply.body, generated, "handlers see the same id in the extensions");

        let reply = call(addr, "GET", "/t-ids/whoami", &[("x-request-id", "lb-1.abc_DEF-9")]).await;
        assert_eq!(reply.header("x-request-id"), Some("lb-1.abc_DEF-9"));
        assert_eq!(reply.body, "lb-1.abc_DEF-9");

        let max = "a".repeat(64);
        let reply = call(addr, "GET", "/t-ids/whoami", &[("x-request-id", &max)]).await;
        assert_eq!(reply.header("x-request-id"), Some(max.as_str()));

        for invalid in ["has space", &"a".repeat(65), "semi;colon", "quote\"d", "ümlaut"] {
            let reply = call(addr, "GET", "/t-ids/whoami", &[("x-request-id", invalid)]).await;
            let id = reply.header("x-request-id").unwrap();
            assert!(is_uuid_v7(id), "{invalid:?} should be replaced, got {id:?}");
            assert_eq!(reply.body, id);
        }

        // Unmatched requests still get an id.
        let reply = call(addr, "GET", "/t-ids/nowhere", &[]).await;
        assert_eq!(reply.status, 404);
        assert!(is_uuid_v7(reply.header("x-request-id").unwrap()));
    }

    #[test]
    fn request_id_validation() {
        assert!(is_valid_request_id("a"));
        assert!(is_valid_request_id(&"Z9._-".repeat(12)));
        assert!(!is_valid_request_id(""));
        assert!(!is_valid_request_id(&"a".repeat(65)));
        assert!(!is_valid_request_id("a b"));
        assert!(!is_valid_request_id("a/b"));
        assert!(!is_valid_request_id("a\u{e9}"));
    }

    #[tokio::test]
    async fn metrics_use_route_templates_and_cumulative_histograms() {
        let addr = serve(app("/t-metrics")).await;
        for id in ["1", "2", "secret-token-123"] {
            assert_eq!(call(addr, "GET", &format!("/t-metrics/items/{id}"), &[]).await.status, 200);
        }
        assert_eq!(call(addr, "POST", "/t-metrics/items/4", &[]).await.status, 405);
        assert_eq!(call(addr, "GET", "/t-metrics/nope/secret-token-456", &[]).await.status, 404);
        assert_eq!(call(addr, "BREW", "/t-metrics/items/5", &[]).await.status, 405);

        let reply = call(addr, "GET", "/metrics", &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
        let text = reply.body;

        assert_eq!(
            sample(&text, r#"admit_http_requests_total{method="GET",route="/t-metrics/items/{id}",status="200"}"#),
            Some(3)
        );
        assert_eq!(
            sample(&text, r#"admit_http_requests_total{method="POST",route="/t-metrics/items/{id}",status="405"}"#),
            Some(1)
        );
        assert_eq!(
            sample(&text, r#"admit_http_requests_total{method="OTHER",route="/t-metrics/items/{id}",status="405"}"#),
            Some(1)
        );
        assert!(!text.contains("/t-metrics/items/1"), "concrete paths never become labels");
        assert!(!text.contains("secret-token"));
        assert!(!text.contains("BREW"));
        // The unmatched one is counted under "unmatched" (other tests add to
        // it too, so only check it is there).
        assert!(text.contains(r#"admit_http_requests_total{method="GET",route="unmatched",status="404"}"#));

        // Histogram: cumulative buckets, +Inf == _count == number of requests.
        let labels = r#"method="GET",route="/t-metrics/items/{id}""#;
        let mut previous = 0;
        for (_, le) in BUCKETS {
            let n = sample(&text, &format!("admit_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}}"))
                .unwrap_or_else(|| panic!("bucket {le} missing"));
            assert!(n >= previous, "buckets must be cumulative");
            previous = n;
        }
        let inf =
            sample(&text, &format!("admit_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}}")).unwrap();
        assert!(inf >= previous);
        assert_eq!(inf, 3);
        assert_eq!(sample(&text, &format!("admit_http_request_duration_seconds_count{{{labels}}}")), Some(3));
        assert!(text.contains(&format!("admit_http_request_duration_seconds_sum{{{labels}}} ")));

        for family in [
            "admit_http_requests_total counter",
            "admit_http_request_duration_seconds histogram",
            "admit_events_appended_total counter",
            "admit_projection_lag_seconds gauge",
        ] {
            assert!(text.contains(&format!("# TYPE {family}\n")), "{family}");
        }
        assert!(text.contains("# HELP admit_http_requests_total "));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_inclusive() {
        let route = "/t-hist/{x}";
        for seconds in [0.0005, 0.001, 0.003, 0.2, 7.0] {
            observe_request("GET", route, 200, seconds);
        }
        let text = render();
        let labels = format!("method=\"GET\",route=\"{route}\"");
        let bucket =
            |le: &str| sample(&text, &format!("admit_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}}"));
        assert_eq!(bucket("0.001"), Some(2), "le is inclusive");
        assert_eq!(bucket("0.0025"), Some(2));
        assert_eq!(bucket("0.005"), Some(3));
        assert_eq!(bucket("0.1"), Some(3));
        assert_eq!(bucket("0.25"), Some(4));
        assert_eq!(bucket("5"), Some(4));
        assert_eq!(bucket("+Inf"), Some(5));
        assert_eq!(sample(&text, &format!("admit_http_request_duration_seconds_count{{{labels}}}")), Some(5));
        let sum_line = format!("admit_http_request_duration_seconds_sum{{{labels}}} ");
        let sum: f64 = text.lines().find_map(|l| l.strip_prefix(&sum_line)).unwrap().parse().unwrap();
        assert!((sum - 7.2045).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn label_values_are_escaped() {
        observe_request("GET", "/t-esc/a\\b\"c\nd", 201, 0.01);
        let text = render();
        assert!(
            text.contains(r#"admit_http_requests_total{method="GET",route="/t-esc/a\\b\"c\nd",status="201"} 1"#),
            "{text}"
        );
        // No raw newline inside a series line.
        assert!(text.lines().all(|l| l.starts_with('#') || l.starts_with("admit_")));

        let mut out = String::new();
        escape_label_value(&mut out, "plain {x} \\ \" \n");
        assert_eq!(out, r#"plain {x} \\ \" \n"#);
    }

    #[test]
    fn series_are_sorted_by_label_set() {
        observe_request("POST", "/t-sort/b", 200, 0.01);
        observe_request("GET", "/t-sort/b", 500, 0.01);
        observe_request("GET", "/t-sort/b", 200, 0.01);
        observe_request("GET", "/t-sort/a", 200, 0.01);
        let ours = |text: &str| -> Vec<String> {
            text.lines().filter(|l| l.contains("/t-sort/")).map(str::to_owned).collect()
        };
        let text = render();
        let order: Vec<String> =
            ours(&text).into_iter().filter(|l| l.starts_with("admit_http_requests_total{")).collect();
        assert_eq!(
            order,
            [
                r#"admit_http_requests_total{method="GET",route="/t-sort/a",status="200"} 1"#,
                r#"admit_http_requests_total{method="GET",route="/t-sort/b",status="200"} 1"#,
                r#"admit_http_requests_total{method="GET",route="/t-sort/b",status="500"} 1"#,
                r#"admit_http_requests_total{method="POST",route="/t-sort/b",status="200"} 1"#,
            ]
        );
        // Deterministic (other tests may add their own series meanwhile).
        assert_eq!(ours(&text), ours(&render()));
    }

    #[test]
    fn events_appended_counter_and_projection_lag() {
        // Other tests do not touch these, but stay delta-based anyway.
        let before = sample(&render(), "admit_events_appended_total").unwrap();
        record_events_appended(3);
        let after = sample(&render(), "admit_events_appended_total").unwrap();
        assert_eq!(after - before, 3);
        if before == 0 {
            assert!(render().contains("\nadmit_events_appended_total 3\n"));
        }

        assert!(render().contains("\nadmit_projection_lag_seconds 0\n"));
        set_projection_lag(1.5);
        assert!(render().contains("\nadmit_projection_lag_seconds 1.5\n"));
        set_projection_lag(f64::INFINITY);
        assert!(render().contains("\nadmit_projection_lag_seconds +Inf\n"));
        set_projection_lag(0.0);
        assert!(render().contains("\nadmit_projection_lag_seconds 0\n"));
    }

    // --- Logs: a minimal subscriber that records span and event fields. ----

    /// Recorded `(field name, value)` pairs.
    type FieldList = Vec<(String, String)>;

    #[derive(Default)]
    struct Capture {
        /// `(span name, fields)`; a span's id is its index + 1.
        spans: StdMutex<Vec<(String, FieldList)>>,
        /// `(id of the entered span, fields)`.
        events: StdMutex<Vec<(Option<u64>, FieldList)>>,
        current: StdMutex<Vec<u64>>,
    }

    struct Fields<'a>(&'a mut FieldList);

    impl tracing::field::Visit for Fields<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.push((field.name().to_owned(), format!("{value:?}")));
        }
    }

    struct CaptureSubscriber(Arc<Capture>);

    impl tracing::Subscriber for CaptureSubscriber {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            let mut fields = Vec::new();
            attrs.record(&mut Fields(&mut fields));
            let mut spans = self.0.spans.lock().unwrap();
            spans.push((attrs.metadata().name().to_owned(), fields));
            tracing::span::Id::from_u64(spans.len() as u64)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut fields = Vec::new();
            event.record(&mut Fields(&mut fields));
            let parent = self.0.current.lock().unwrap().last().copied();
            self.0.events.lock().unwrap().push((parent, fields));
        }
        fn enter(&self, span: &tracing::span::Id) {
            self.0.current.lock().unwrap().push(span.into_u64());
        }
        fn exit(&self, _: &tracing::span::Id) {
            self.0.current.lock().unwrap().pop();
        }
    }

    /// The current-thread runtime of `#[tokio::test]` runs the server on
    /// this thread, so a thread-local subscriber sees its spans and events.
    #[tokio::test]
    async fn logs_one_line_in_a_request_span_without_the_raw_path() {
        let capture = Arc::new(Capture::default());
        let _guard = tracing::subscriber::set_default(CaptureSubscriber(capture.clone()));
        let addr = serve(app("/t-logs")).await;

        // tracing caches per-callsite interest globally; a callsite that
        // another test thread registers while this scoped subscriber is being
        // installed can be cached as "never". Rebuilding the cache and
        // retrying with a fresh id makes the test independent of that race.
        let mut found = None;
        for attempt in 0..5 {
            tracing::callsite::rebuild_interest_cache();
            let id = format!("trace-me-{attempt}");
            let reply = call(addr, "GET", "/t-logs/items/secret-token-789", &[("x-request-id", &id)]).await;
            assert_eq!(reply.status, 200);

            let spans = capture.spans.lock().unwrap().clone();
            let Some((index, span_fields)) = spans.iter().enumerate().find_map(|(index, (name, fields))| {
                let matches = name == "request" && fields.iter().any(|(k, v)| k == "request_id" && *v == id);
                matches.then(|| (index, fields.clone()))
            }) else {
                continue;
            };
            let span_id = index as u64 + 1;
            let completed: Vec<FieldList> = capture
                .events
                .lock()
                .unwrap()
                .iter()
                .filter(|(parent, fields)| {
                    *parent == Some(span_id) && fields.iter().any(|(k, v)| k == "message" && v == "request completed")
                })
                .map(|(_, fields)| fields.clone())
                .collect();
            if !completed.is_empty() {
                found = Some((span_fields, completed));
                break;
            }
        }
        let (span_fields, completed) = found.expect("a request span with its completion line");
        let get = |key: &str| span_fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        assert_eq!(get("method"), Some("GET"));
        assert_eq!(get("route"), Some("/t-logs/items/{id}"));
        assert_eq!(completed.len(), 1, "exactly one completion line: {completed:?}");
        let fields = &completed[0];
        assert!(fields.iter().any(|(k, v)| k == "status" && v == "200"));
        let latency: f64 = fields.iter().find(|(k, _)| k == "latency_ms").unwrap().1.parse().unwrap();
        assert!(latency >= 0.0);

        let everything = format!("{:?}{:?}", capture.spans.lock().unwrap(), capture.events.lock().unwrap());
        assert!(!everything.contains("secret-token"), "paths never reach the logs");
    }
}
