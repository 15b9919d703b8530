//! The HTTP side: the dashboard and the JSON API over the store, behind a token.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the dashboard (a 401 with the login form when not logged in) |
//! | `GET /login`, `POST /login` (form: `name`, `token`), `POST /logout` | the browser's session |
//! | `GET /static/{app.js,style.css}` | the dashboard's script and style (no data, no token) |
//! | `GET /healthz` | 200 while the process serves (no token needed) |
//! | `GET /metrics` | the service's counters, Prometheus text |
//! | `GET /api/alerts?state=firing&severity=critical&gateway=gw&limit=100` | alerts, firing first |
//! | `POST /api/alerts/{id}/ack` with `{"by": "ana"}` | acknowledges an alert (404 if unknown) |
//! | `GET /api/devices`, `GET /api/gateways` | devices with their latest readings; gateways with their status |
//! | `GET /api/devices/{gateway}/{device}/history?limit=120` | a device's recent readings, oldest first |
//! | `GET /api/stream` | server-sent events: `alert`, `event`, `status`, `ack`, `resync` (see [`crate::live`]) |
//!
//! Every route but `/healthz`, `/login` and `/static` needs the token from programs, as
//! `Authorization: Bearer {token}`, or a session from a browser: logging in with the token
//! mints one ([`crate::session`]) and sets its id, never the token, in an `HttpOnly`,
//! `SameSite=Strict` cookie (strict same-site also keeps other sites from posting an
//! acknowledgement with it), `Secure` when the dashboard is served over HTTPS. Logging out
//! revokes it. Without either: 401. Failed logins are throttled per client address (429).
//!
//! Every response carries a Content Security Policy that allows only this origin's script and
//! style, `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff` and
//! `Referrer-Policy: no-referrer`.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Form, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{AppendHeaders, Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;

use crate::consumer::{ConsumerStats, now_ms};
use crate::live::Change;
use crate::message::AlertState;
use crate::notify::NotifyStats;
use crate::session::{SESSION_LIFETIME, Sessions, Throttle};
use crate::store::{Alert, AlertFilter, Store};

/// What the routes share.
#[derive(Debug)]
pub struct Api<S> {
    /// The store.
    pub store: Arc<S>,
    /// The consumer's counters.
    pub stats: Arc<ConsumerStats>,
    /// The notifier's counters.
    pub notify_stats: Arc<NotifyStats>,
    /// Where changes are announced (acknowledgements are sent here too).
    pub changes: broadcast::Sender<Change>,
    /// The token every route but `/healthz`, `/login` and `/static` asks for.
    pub token: String,
    /// Dashboards connected now.
    pub watchers: AtomicU64,
    /// The browsers logged in.
    pub sessions: Sessions,
    /// Failed logins per client address.
    pub throttle: Throttle,
    /// Session cookies are `Secure` whatever the request (`--public-url https://…`).
    pub secure_cookies: bool,
    /// Logins refused for a wrong token.
    pub logins_refused: AtomicU64,
    /// Logins refused unheard because their address failed too often.
    pub logins_throttled: AtomicU64,
}

impl<S> Api<S> {
    /// The shared state for `store`, with fresh counters unless given.
    pub fn new(
        store: Arc<S>,
        stats: Arc<ConsumerStats>,
        notify_stats: Arc<NotifyStats>,
        changes: broadcast::Sender<Change>,
        token: String,
    ) -> Self {
        Self {
            store,
            stats,
            notify_stats,
            changes,
            token,
            watchers: AtomicU64::new(0),
            sessions: Sessions::default(),
            throttle: Throttle::default(),
            secure_cookies: false,
            logins_refused: AtomicU64::new(0),
            logins_throttled: AtomicU64::new(0),
        }
    }

    /// Session cookies `Secure` on every response (the dashboard is reached over HTTPS, through
    /// a proxy that terminates TLS), not only on requests that say they came over HTTPS.
    pub fn with_secure_cookies(mut self, secure: bool) -> Self {
        self.secure_cookies = secure;
        self
    }
}

/// The cookie that carries a browser's session id.
const SESSION_COOKIE: &str = "edge_alerts_session";
/// The cookie with the name the user logged in as (read by the page, for acknowledgements).
const USER_COOKIE: &str = "edge_alerts_user";
/// How long a browser stays logged in.
const SESSION_SECONDS: u64 = SESSION_LIFETIME.as_secs();
/// What the dashboard may load and do: its own script, style and API, nothing inline, no frame.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const LOGIN_HTML: &str = include_str!("dashboard/login.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// The router.
pub fn app<S: Store>(api: Arc<Api<S>>) -> Router {
    let protected = Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics::<S>))
        .route("/api/alerts", get(alerts::<S>))
        .route("/api/alerts/:id/ack", post(acknowledge::<S>))
        .route("/api/devices", get(devices::<S>))
        .route("/api/devices/:gateway/:device/history", get(history::<S>))
        .route("/api/gateways", get(gateways::<S>))
        .route("/api/stream", get(stream::<S>))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&api),
            authorize::<S>,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/login", get(login_page).post(login::<S>))
        .route("/logout", post(logout::<S>))
        .route(
            "/static/app.js",
            get(|| async { asset("text/javascript", APP_JS) }),
        )
        .route(
            "/static/style.css",
            get(|| async { asset("text/css", STYLE_CSS) }),
        )
        .merge(protected)
        .layer(middleware::map_response(security_headers))
        .with_state(api)
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, header::HeaderValue::from_static(value));
    }
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The session id in a request's cookie, if any.
fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(name, value)| (name == SESSION_COOKIE).then_some(value))
}

/// Whether a request carries the token as its bearer header, or a live session's cookie.
fn authorized<S>(api: &Api<S>, headers: &HeaderMap) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if let Some(bearer) = bearer {
        return constant_time_eq(bearer.as_bytes(), api.token.as_bytes());
    }
    session_id(headers).is_some_and(|id| api.sessions.get(id, Instant::now()).is_some())
}

async fn authorize<S: Store>(
    State(api): State<Arc<Api<S>>>,
    request: Request,
    next: Next,
) -> Response {
    if authorized(&api, request.headers()) {
        return next.run(request).await;
    }
    if request.uri().path() == "/" {
        // A browser asking for the page gets the login form (still a 401).
        return login_form(StatusCode::UNAUTHORIZED, None);
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a valid bearer token is needed\n",
    )
        .into_response()
}

async fn dashboard() -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Html(INDEX_HTML)).into_response()
}

fn login_form(status: StatusCode, error: Option<&str>) -> Response {
    let error = error.map_or_else(String::new, escape_html);
    (status, Html(LOGIN_HTML.replace("<!--error-->", &error))).into_response()
}

async fn login_page() -> Response {
    login_form(StatusCode::OK, None)
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
struct Login {
    name: String,
    token: String,
}

/// Whether cookies set in answer to a request with `headers` must be `Secure`: always with
/// `--public-url https://…`, else when a proxy says the request came over HTTPS.
fn secure<S>(api: &Api<S>, headers: &HeaderMap) -> &'static str {
    let forwarded_https = headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
    if api.secure_cookies || forwarded_https {
        "; Secure"
    } else {
        ""
    }
}

async fn login<S: Store>(
    State(api): State<Arc<Api<S>>>,
    peer: Option<ConnectInfo<SocketAddr>>,
    headers: HeaderMap,
    form: Option<Form<Login>>,
) -> Response {
    let address = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |peer| peer.0.ip());
    let now = Instant::now();
    if let Some(wait) = api.throttle.wait(address, now) {
        api.logins_throttled.fetch_add(1, Ordering::Relaxed);
        let seconds = wait.as_secs().max(1);
        let mut response = login_form(
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!(
                "Too many failed logins: try again in {seconds} s."
            )),
        );
        if let Ok(value) = header::HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let Some(Form(Login { name, token })) = form else {
        return login_form(
            StatusCode::BAD_REQUEST,
            Some("Enter your name and the token."),
        );
    };
    let name = name.trim();
    if name.is_empty() {
        return login_form(StatusCode::BAD_REQUEST, Some("Enter your name."));
    }
    if !constant_time_eq(token.trim().as_bytes(), api.token.as_bytes()) {
        api.throttle.failed(address, now);
        api.logins_refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%address, "a login with a wrong token");
        return login_form(StatusCode::UNAUTHORIZED, Some("That token is not valid."));
    }
    api.throttle.succeeded(address);
    let id = api.sessions.mint(name, now);
    let secure = secure(&api, &headers);
    let session = format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}{secure}"
    );
    let user = format!(
        "{USER_COOKIE}={}; Path=/; SameSite=Strict; Max-Age={SESSION_SECONDS}{secure}",
        percent_encode(name)
    );
    (
        AppendHeaders([(header::SET_COOKIE, session), (header::SET_COOKIE, user)]),
        Redirect::to("/"),
    )
        .into_response()
}

/// Ends the browser's session on the server, and clears its cookies.
async fn logout<S: Store>(State(api): State<Arc<Api<S>>>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        api.sessions.revoke(id);
    }
    let secure = secure(&api, &headers);
    (
        AppendHeaders([
            (
                header::SET_COOKIE,
                format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
            ),
            (
                header::SET_COOKIE,
                format!("{USER_COOKIE}=; Path=/; SameSite=Strict; Max-Age=0{secure}"),
            ),
        ]),
        Redirect::to("/login"),
    )
        .into_response()
}

/// Everything but unreserved characters, percent-encoded (a cookie value must not hold `;`,
/// spaces or non-ASCII).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Server-sent events: every change, as it is stored. A connection that falls behind gets
/// `resync` (fetch everything again) instead of a silent gap.
async fn stream<S: Store>(State(api): State<Arc<Api<S>>>) -> Response {
    struct Watching<S> {
        api: Arc<Api<S>>,
        changes: broadcast::Receiver<Change>,
    }
    impl<S> Drop for Watching<S> {
        fn drop(&mut self) {
            self.api.watchers.fetch_sub(1, Ordering::Relaxed);
        }
    }
    api.watchers.fetch_add(1, Ordering::Relaxed);
    let watching = Watching {
        changes: api.changes.subscribe(),
        api,
    };
    let events = futures_util::stream::unfold(watching, |mut watching| async move {
        let event = match watching.changes.recv().await {
            Ok(change) => {
                let (name, data) = change.event();
                SseEvent::default().event(name).data(data)
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                SseEvent::default().event("resync").data("{}")
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, Infallible>(event), watching))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Query parameters of `GET /api/alerts`.
#[derive(Debug, Default, Deserialize)]
struct AlertQuery {
    state: Option<String>,
    severity: Option<String>,
    gateway: Option<String>,
    limit: Option<String>,
}

/// A `limit` parameter: absent, or a whole number from 1.
fn parse_limit(limit: Option<&str>) -> Result<Option<u32>, String> {
    match limit {
        None | Some("") => Ok(None),
        Some(text) => match text.parse::<u32>() {
            Ok(limit) if limit > 0 => Ok(Some(limit)),
            _ => Err(format!(
                "`limit` must be a whole number from 1, not `{text}`"
            )),
        },
    }
}

async fn alerts<S: Store>(
    State(api): State<Arc<Api<S>>>,
    Query(query): Query<AlertQuery>,
) -> Response {
    let state = match query.state.as_deref() {
        None | Some("") => None,
        Some("firing") => Some(AlertState::Firing),
        Some("resolved") => Some(AlertState::Resolved),
        Some(other) => {
            return bad_request(format!(
                "unknown state `{other}`: expected firing or resolved"
            ));
        }
    };
    let limit = match parse_limit(query.limit.as_deref()) {
        Ok(limit) => limit,
        Err(message) => return bad_request(message),
    };
    let filter = AlertFilter {
        state,
        severity: query.severity.filter(|severity| !severity.is_empty()),
        gateway: query.gateway.filter(|gateway| !gateway.is_empty()),
        limit,
    };
    json_list(api.store.alerts(&filter).await, alert_json)
}

/// Body of `POST /api/alerts/{id}/ack`.
#[derive(Debug, Deserialize)]
struct Acknowledgement {
    by: String,
}

async fn acknowledge<S: Store>(
    State(api): State<Arc<Api<S>>>,
    Path(id): Path<String>,
    body: Result<Json<Acknowledgement>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(Acknowledgement { by })) = body else {
        return bad_request("expected a JSON body like {\"by\": \"name\"}".to_owned());
    };
    if by.trim().is_empty() {
        return bad_request("`by` must name who acknowledges".to_owned());
    }
    let by = by.trim().to_owned();
    match api.store.acknowledge(&id, &by, now_ms()).await {
        Ok(Some(stored)) => {
            // Only a new acknowledgement is news; a second one is answered with the first.
            if stored.new {
                let _ = api.changes.send(Change::Acknowledged {
                    id: id.clone(),
                    by: stored.by.clone(),
                    at: stored.at,
                });
            }
            Json(json!({
                "id": id,
                "acknowledged_by": stored.by,
                "acknowledged_at": stored.at,
                "already": !stored.new,
            }))
            .into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, format!("no alert `{id}`\n")).into_response(),
        Err(error) => unavailable(&error),
    }
}

async fn devices<S: Store>(State(api): State<Arc<Api<S>>>) -> Response {
    json_list(api.store.devices().await, |device| {
        json!({
            "gateway": device.gateway,
            "device": device.device,
            "last_seen": device.last_seen,
            "readings": device.readings,
        })
    })
}

/// The rows as a JSON array, each rendered by `row`; 503 if the store failed.
fn json_list<T>(
    rows: Result<Vec<T>, crate::store::StoreError>,
    row: impl Fn(&T) -> serde_json::Value,
) -> Response {
    match rows {
        Ok(rows) => Json(rows.iter().map(row).collect::<Vec<_>>()).into_response(),
        Err(error) => unavailable(&error),
    }
}

/// Query parameters of the history route.
#[derive(Debug, Default, Deserialize)]
struct HistoryQuery {
    limit: Option<String>,
}

async fn history<S: Store>(
    State(api): State<Arc<Api<S>>>,
    Path((gateway, device)): Path<(String, String)>,
    Query(query): Query<HistoryQuery>,
) -> Response {
    let limit = match parse_limit(query.limit.as_deref()) {
        Ok(limit) => limit.unwrap_or(120).min(10_000),
        Err(message) => return bad_request(message),
    };
    json_list(
        api.store.history(&gateway, &device, limit).await,
        |reading| json!({ "at": reading.at, "readings": reading.readings }),
    )
}

async fn gateways<S: Store>(State(api): State<Arc<Api<S>>>) -> Response {
    json_list(api.store.gateways().await, |gateway| {
        json!({
            "gateway": gateway.gateway,
            "status": if gateway.online { "online" } else { "offline" },
            "since": gateway.since,
        })
    })
}

async fn metrics<S: Store>(State(api): State<Arc<Api<S>>>) -> Response {
    let stats = &api.stats;
    let notify = &api.notify_stats;
    let mut out = String::new();
    for (name, help, value) in [
        (
            "edge_alerts_notifications_sent_total",
            "Webhook notifications delivered.",
            &notify.sent,
        ),
        (
            "edge_alerts_notifications_retried_total",
            "Webhook attempts that failed and will be retried.",
            &notify.retried,
        ),
        (
            "edge_alerts_notifications_dropped_total",
            "Webhook notifications given up on (attempts exhausted, route gone).",
            &notify.dropped,
        ),
        (
            "edge_alerts_messages_applied_total",
            "Messages stored for the first time.",
            &stats.applied,
        ),
        (
            "edge_alerts_messages_duplicate_total",
            "Redeliveries and repeats that changed nothing.",
            &stats.duplicates,
        ),
        (
            "edge_alerts_messages_refused_total",
            "Messages not understood (skipped).",
            &stats.refused,
        ),
        (
            "edge_alerts_store_errors_total",
            "Failed attempts to store a message, retried (lost connection, busy or full disk).",
            &stats.store_errors,
        ),
        (
            "edge_alerts_store_rejected_total",
            "Messages the store refuses for their data (also in refused), skipped.",
            &stats.store_rejected,
        ),
        (
            "edge_alerts_logins_refused_total",
            "Dashboard logins refused for a wrong token.",
            &api.logins_refused,
        ),
        (
            "edge_alerts_logins_throttled_total",
            "Dashboard logins refused unheard: their address failed too often.",
            &api.logins_throttled,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            value.load(Ordering::Relaxed)
        ));
    }
    out.push_str(&format!(
        "# HELP edge_alerts_dashboards Dashboards connected to the live stream.\n\
         # TYPE edge_alerts_dashboards gauge\nedge_alerts_dashboards {}\n",
        api.watchers.load(Ordering::Relaxed)
    ));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

fn alert_json(alert: &Alert) -> serde_json::Value {
    json!({
        "id": alert.id,
        "gateway": alert.gateway,
        "rule": alert.rule,
        "device": alert.device,
        "severity": alert.severity,
        "state": alert.state.as_str(),
        "fired_at": alert.fired_at,
        "value": alert.value,
        "event": alert.event,
        "resolved_at": alert.resolved_at,
        "resolved_value": alert.resolved_value,
        "labels": alert.labels,
        "acknowledged_by": alert.acknowledged.as_ref().map(|(by, _)| by),
        "acknowledged_at": alert.acknowledged.as_ref().map(|(_, at)| at),
    })
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

fn unavailable(error: &crate::store::StoreError) -> Response {
    tracing::error!(%error, "store failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the store is unavailable\n",
    )
        .into_response()
}

/// Compares secrets in time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::message::interpret;
    use crate::store::sqlite::SqliteStore;

    async fn api() -> (tempfile::TempDir, Router) {
        let (dir, app, _) = api_with_changes().await;
        (dir, app)
    }

    async fn api_with_changes() -> (tempfile::TempDir, Router, broadcast::Sender<Change>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("a.db")).unwrap());
        for (topic, payload) in [
            (
                "edge/gw/alerts",
                r#"{"id":"gw:alert:1","gateway":"gw","rule":"hot","device":"d1","state":"firing","severity":"critical","at":10,"value":36.0,"event":"d1:1:1","labels":{}}"#,
            ),
            (
                "edge/gw/alerts",
                r#"{"id":"gw:alert:2","gateway":"gw","rule":"cold","device":"d2","state":"firing","severity":"warning","at":20,"value":2.0,"event":"d2:1:1","labels":{}}"#,
            ),
            (
                "edge/gw/alerts",
                r#"{"id":"gw:alert:2","gateway":"gw","rule":"cold","device":"d2","state":"resolved","severity":"warning","at":30,"value":8.0,"event":null,"labels":{}}"#,
            ),
            (
                "edge/gw/devices/d1/events",
                r#"{"id":"d1:1:1","gateway":"gw","device":"d1","boot":1,"seq":1,"received_at":10,"readings":{"temp_c":36.0}}"#,
            ),
            ("edge/gw/status", "online"),
        ] {
            let message = interpret("edge", topic, payload.as_bytes()).unwrap();
            store.apply(&message, 5, &[]).await.unwrap();
        }
        let (changes, _) = broadcast::channel(16);
        let api = Arc::new(Api::new(
            store,
            Arc::default(),
            Arc::default(),
            changes.clone(),
            "s3cret".into(),
        ));
        (dir, app(api), changes)
    }

    async fn call(
        app: &Router,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, String) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if !body.is_empty() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn without_the_token_only_healthz_answers() {
        let (_dir, app) = api().await;
        assert_eq!(
            call(&app, "GET", "/healthz", None, "").await.0,
            StatusCode::OK
        );
        for uri in ["/api/alerts", "/api/devices", "/api/gateways", "/metrics"] {
            assert_eq!(
                call(&app, "GET", uri, None, "").await.0,
                StatusCode::UNAUTHORIZED,
                "{uri}"
            );
            assert_eq!(
                call(&app, "GET", uri, Some("wrong"), "").await.0,
                StatusCode::UNAUTHORIZED,
                "{uri}"
            );
        }
        assert_eq!(
            call(
                &app,
                "POST",
                "/api/alerts/gw:alert:1/ack",
                None,
                r#"{"by":"x"}"#
            )
            .await
            .0,
            StatusCode::UNAUTHORIZED
        );
    }

    #[tokio::test]
    async fn alerts_are_listed_filtered_and_acknowledged() {
        let (_dir, app) = api().await;
        let (status, body) = call(&app, "GET", "/api/alerts", Some("s3cret"), "").await;
        assert_eq!(status, StatusCode::OK);
        let alerts: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        let ids: Vec<&str> = alerts
            .iter()
            .map(|alert| alert["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["gw:alert:1", "gw:alert:2"], "firing first");
        assert_eq!(alerts[1]["resolved_value"], 8.0);

        let (_, body) = call(&app, "GET", "/api/alerts?state=firing", Some("s3cret"), "").await;
        assert_eq!(
            serde_json::from_str::<Vec<serde_json::Value>>(&body)
                .unwrap()
                .len(),
            1
        );
        let (_, body) = call(
            &app,
            "GET",
            "/api/alerts?severity=warning",
            Some("s3cret"),
            "",
        )
        .await;
        assert_eq!(
            serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap()[0]["id"],
            "gw:alert:2"
        );
        let (_, body) = call(&app, "GET", "/api/alerts?gateway=other", Some("s3cret"), "").await;
        assert_eq!(body.trim(), "[]");
        assert_eq!(
            call(
                &app,
                "GET",
                "/api/alerts?state=sleeping",
                Some("s3cret"),
                ""
            )
            .await
            .0,
            StatusCode::BAD_REQUEST
        );

        let (status, _) = call(
            &app,
            "POST",
            "/api/alerts/gw:alert:1/ack",
            Some("s3cret"),
            r#"{"by":"ana"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (_, body) = call(&app, "GET", "/api/alerts?state=firing", Some("s3cret"), "").await;
        assert!(body.contains(r#""acknowledged_by":"ana""#), "{body}");
        // A second acknowledgement is answered with the first, which stays.
        let (status, body) = call(
            &app,
            "POST",
            "/api/alerts/gw:alert:1/ack",
            Some("s3cret"),
            r#"{"by":"ben"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains(r#""acknowledged_by":"ana""#) && body.contains(r#""already":true"#),
            "{body}"
        );
        assert_eq!(
            call(
                &app,
                "POST",
                "/api/alerts/gw:alert:9/ack",
                Some("s3cret"),
                r#"{"by":"ana"}"#
            )
            .await
            .0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(
                &app,
                "POST",
                "/api/alerts/gw:alert:1/ack",
                Some("s3cret"),
                "not json"
            )
            .await
            .0,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn devices_gateways_and_metrics() {
        let (_dir, app) = api().await;
        let (_, body) = call(&app, "GET", "/api/devices", Some("s3cret"), "").await;
        assert!(body.contains(r#""temp_c":36.0"#), "{body}");
        let (_, body) = call(&app, "GET", "/api/gateways", Some("s3cret"), "").await;
        assert!(body.contains(r#""status":"online""#), "{body}");
        let (status, body) = call(&app, "GET", "/metrics", Some("s3cret"), "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("edge_alerts_messages_applied_total 0"),
            "{body}"
        );
    }

    async fn send(app: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    fn login_request(name: &str, token: &str) -> Request<Body> {
        Request::builder()
            .method("POST")
            .uri("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("name={name}&token={token}")))
            .unwrap()
    }

    /// The next whole server-sent event from `body`.
    async fn next_event(body: &mut axum::body::BodyDataStream) -> String {
        use futures_util::StreamExt;
        let mut seen = String::new();
        while !seen.contains("\n\n") {
            let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        seen
    }

    #[tokio::test]
    async fn a_browser_logs_in_and_its_cookie_opens_the_dashboard() {
        let (_dir, app) = api().await;
        // Not logged in: the page is a 401 carrying the login form; the assets are public.
        let (status, _, body) = send(&app, Request::get("/").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("id=\"login-token\""), "{body}");
        for asset in ["/static/app.js", "/static/style.css"] {
            let (status, _, body) =
                send(&app, Request::get(asset).body(Body::empty()).unwrap()).await;
            assert_eq!(status, StatusCode::OK, "{asset}");
            assert!(!body.is_empty());
        }

        // A wrong token: 401, the form again with the reason, and no cookie.
        let (status, headers, body) = send(&app, login_request("ana", "guess")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("That token is not valid."), "{body}");
        assert!(headers.get(header::SET_COOKIE).is_none());

        // The right one: a redirect to the page with an HttpOnly, same-site session cookie
        // that holds a random session id, not the token.
        let (status, headers, _) = send(&app, login_request("Ana+Mar%C3%ADa", "s3cret")).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let cookies: Vec<&str> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|value| value.to_str().unwrap())
            .collect();
        let session = cookies
            .iter()
            .find(|cookie| cookie.starts_with("edge_alerts_session="))
            .unwrap();
        assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"));
        assert!(!session.contains("Secure"), "plain HTTP: {session}");
        assert!(
            cookies.iter().all(|cookie| !cookie.contains("s3cret")),
            "{cookies:?}"
        );
        let id = session
            .split(';')
            .next()
            .unwrap()
            .trim_start_matches("edge_alerts_session=");
        assert!(
            id.len() == 64 && id.bytes().all(|byte| byte.is_ascii_hexdigit()),
            "{id}"
        );
        assert!(
            cookies.contains(
                &"edge_alerts_user=Ana%20Mar%C3%ADa; Path=/; SameSite=Strict; Max-Age=604800"
            ),
            "{cookies:?}"
        );
        let cookie = session.split(';').next().unwrap();
        for uri in ["/", "/api/alerts", "/api/devices/gw/d1/history"] {
            let (status, _, _) = send(
                &app,
                Request::get(uri)
                    .header(header::COOKIE, format!("theme=dark; {cookie}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{uri}");
        }
        // A forged cookie is no session, nor is the token put in the cookie.
        for forged in ["edge_alerts_session=00ff", "edge_alerts_session=s3cret"] {
            let (status, _, _) = send(
                &app,
                Request::get("/api/alerts")
                    .header(header::COOKIE, forged)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{forged}");
        }

        // Logging out clears both cookies and revokes the session: the same cookie, kept by
        // someone who copied it, opens nothing.
        let (status, headers, _) = send(
            &app,
            Request::post("/logout")
                .header(header::COOKIE, cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert!(
            headers
                .get_all(header::SET_COOKIE)
                .iter()
                .all(|value| value.to_str().unwrap().contains("Max-Age=0"))
        );
        let (status, _, _) = send(
            &app,
            Request::get("/api/alerts")
                .header(header::COOKIE, cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "a revoked session");
    }

    #[tokio::test]
    async fn failed_logins_are_throttled_and_counted() {
        let (_dir, app) = api().await;
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(send(&app, login_request("eve", "guess")).await.0);
        }
        let allowed = crate::session::FAILURES_ALLOWED as usize;
        assert!(
            statuses[..allowed]
                .iter()
                .all(|status| *status == StatusCode::UNAUTHORIZED),
            "{statuses:?}"
        );
        assert!(
            statuses[allowed..]
                .iter()
                .all(|status| *status == StatusCode::TOO_MANY_REQUESTS),
            "{statuses:?}"
        );
        // Throttled, even the right token is not heard.
        let (status, headers, body) = send(&app, login_request("eve", "s3cret")).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(headers.get(header::RETRY_AFTER).is_some());
        assert!(headers.get(header::SET_COOKIE).is_none());
        assert!(body.contains("Too many failed logins"), "{body}");
        let (_, metrics) = call(&app, "GET", "/metrics", Some("s3cret"), "").await;
        assert!(
            metrics.contains("edge_alerts_logins_refused_total 5")
                && metrics.contains("edge_alerts_logins_throttled_total 16"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn session_cookies_are_secure_over_https() {
        let (_dir, app) = api().await;
        let mut request = login_request("ana", "s3cret");
        request
            .headers_mut()
            .insert("x-forwarded-proto", "https".parse().unwrap());
        let (_, headers, _) = send(&app, request).await;
        assert!(
            headers
                .get_all(header::SET_COOKIE)
                .iter()
                .all(|value| value.to_str().unwrap().ends_with("; Secure")),
            "{headers:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("a.db")).unwrap());
        let (changes, _) = broadcast::channel(1);
        let public = super::app(Arc::new(
            Api::new(
                store,
                Arc::default(),
                Arc::default(),
                changes,
                "s3cret".into(),
            )
            .with_secure_cookies(true),
        ));
        let (_, headers, _) = send(&public, login_request("ana", "s3cret")).await;
        let cookies: Vec<_> = headers.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies.len(), 2);
        assert!(
            cookies
                .iter()
                .all(|value| value.to_str().unwrap().ends_with("; Secure")),
            "{cookies:?}"
        );
    }

    #[tokio::test]
    async fn every_response_carries_the_security_headers() {
        let (_dir, app) = api().await;
        for (uri, token) in [
            ("/", None),
            ("/", Some("s3cret")),
            ("/login", None),
            ("/static/app.js", None),
            ("/api/alerts", Some("s3cret")),
            ("/api/alerts", None),
            ("/healthz", None),
        ] {
            let mut request = Request::get(uri);
            if let Some(token) = token {
                request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let (_, headers, _) = send(&app, request.body(Body::empty()).unwrap()).await;
            let csp = headers
                .get(header::CONTENT_SECURITY_POLICY)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            assert!(
                csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
                "{uri}: {csp}"
            );
            assert_eq!(
                headers.get(header::X_FRAME_OPTIONS).unwrap(),
                "DENY",
                "{uri}"
            );
            assert_eq!(
                headers.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(),
                "nosniff",
                "{uri}"
            );
        }
    }

    #[tokio::test]
    async fn history_returns_a_devices_readings_oldest_first() {
        let (_dir, app) = api().await;
        let (status, body) = call(
            &app,
            "GET",
            "/api/devices/gw/d1/history?limit=5",
            Some("s3cret"),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, r#"[{"at":10,"readings":{"temp_c":36.0}}]"#);
        let (status, _) = call(
            &app,
            "GET",
            "/api/devices/gw/d1/history?limit=lots",
            Some("s3cret"),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (_, body) = call(&app, "GET", "/api/alerts?limit=1", Some("s3cret"), "").await;
        assert_eq!(
            serde_json::from_str::<Vec<serde_json::Value>>(&body)
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn the_stream_carries_changes_and_acknowledgements() {
        let (_dir, app, changes) = api_with_changes().await;
        let response = app
            .clone()
            .oneshot(
                Request::get("/api/stream")
                    .header(header::AUTHORIZATION, "Bearer s3cret")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        let mut body = response.into_body().into_data_stream();
        let message = interpret(
            "edge",
            "edge/gw/alerts",
            br#"{"id":"gw:alert:5","gateway":"gw","rule":"hot","device":"d1","state":"firing","severity":"critical","at":50,"value":39.0,"event":"d1:1:9","labels":{}}"#,
        )
        .unwrap();
        changes.send(Change::Stored { message, at: 51 }).unwrap();
        let event = next_event(&mut body).await;
        assert!(event.starts_with("event: alert\ndata: {"), "{event}");
        assert!(event.contains(r#""id":"gw:alert:5""#), "{event}");

        // An acknowledgement through the API reaches the stream too.
        let (status, _) = call(
            &app,
            "POST",
            "/api/alerts/gw:alert:1/ack",
            Some("s3cret"),
            r#"{"by":"ana"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let event = next_event(&mut body).await;
        assert!(event.starts_with("event: ack\n"), "{event}");
        assert!(event.contains(r#""by":"ana""#), "{event}");

        // A repeated acknowledgement is no news: the next event is the next change.
        call(
            &app,
            "POST",
            "/api/alerts/gw:alert:1/ack",
            Some("s3cret"),
            r#"{"by":"ben"}"#,
        )
        .await;
        changes
            .send(Change::Acknowledged {
                id: "marker".into(),
                by: "test".into(),
                at: 1,
            })
            .unwrap();
        let event = next_event(&mut body).await;
        assert!(event.contains(r#""id":"marker""#), "{event}");

        // A watcher that falls behind is told to fetch everything again.
        for n in 0..40 {
            changes
                .send(Change::Acknowledged {
                    id: format!("x{n}"),
                    by: "flood".into(),
                    at: n,
                })
                .unwrap();
        }
        let event = next_event(&mut body).await;
        assert!(event.starts_with("event: resync\n"), "{event}");
    }
}
