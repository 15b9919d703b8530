//! The HTTP API: JSON endpoints over the store, behind a bearer token.
//!
//! | route | what |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves (no token needed) |
//! | `GET /metrics` | the consumer's counters, Prometheus text |
//! | `GET /api/alerts?state=firing&severity=critical&gateway=gw` | alerts, firing first |
//! | `POST /api/alerts/{id}/ack` with `{"by": "ana"}` | acknowledges an alert (404 if unknown) |
//! | `GET /api/devices`, `GET /api/gateways` | devices with their latest readings; gateways with their status |
//!
//! Every route but `/healthz` needs `Authorization: Bearer {token}`; without it: 401.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::consumer::{ConsumerStats, now_ms};
use crate::message::AlertState;
use crate::store::{Alert, AlertFilter, Store};

/// What the routes share.
#[derive(Debug)]
pub struct Api<S> {
    /// The store.
    pub store: Arc<S>,
    /// The consumer's counters.
    pub stats: Arc<ConsumerStats>,
    /// The bearer token every route but `/healthz` asks for.
    pub token: String,
}

/// The router.
pub fn app<S: Store>(api: Arc<Api<S>>) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics::<S>))
        .route("/api/alerts", get(alerts::<S>))
        .route("/api/alerts/:id/ack", post(acknowledge::<S>))
        .route("/api/devices", get(devices::<S>))
        .route("/api/gateways", get(gateways::<S>))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&api),
            authorize::<S>,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(protected)
        .with_state(api)
}

async fn authorize<S: Store>(
    State(api): State<Arc<Api<S>>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), api.token.as_bytes()) => {
            next.run(request).await
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a valid bearer token is needed\n",
        )
            .into_response(),
    }
}

/// Query parameters of `GET /api/alerts`.
#[derive(Debug, Default, Deserialize)]
struct AlertQuery {
    state: Option<String>,
    severity: Option<String>,
    gateway: Option<String>,
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
    let filter = AlertFilter {
        state,
        severity: query.severity.filter(|severity| !severity.is_empty()),
        gateway: query.gateway.filter(|gateway| !gateway.is_empty()),
    };
    match api.store.alerts(&filter).await {
        Ok(alerts) => Json(alerts.iter().map(alert_json).collect::<Vec<_>>()).into_response(),
        Err(error) => unavailable(&error),
    }
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
    match api.store.acknowledge(&id, &by, now_ms()).await {
        Ok(true) => Json(json!({ "id": id, "acknowledged_by": by })).into_response(),
        Ok(false) => (StatusCode::NOT_FOUND, format!("no alert `{id}`\n")).into_response(),
        Err(error) => unavailable(&error),
    }
}

async fn devices<S: Store>(State(api): State<Arc<Api<S>>>) -> Response {
    match api.store.devices().await {
        Ok(devices) => Json(
            devices
                .iter()
                .map(|device| {
                    json!({
                        "gateway": device.gateway,
                        "device": device.device,
                        "last_seen": device.last_seen,
                        "readings": device.readings,
                    })
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(error) => unavailable(&error),
    }
}

async fn gateways<S: Store>(State(api): State<Arc<Api<S>>>) -> Response {
    match api.store.gateways().await {
        Ok(gateways) => Json(
            gateways
                .iter()
                .map(|gateway| {
                    json!({
                        "gateway": gateway.gateway,
                        "status": if gateway.online { "online" } else { "offline" },
                        "since": gateway.since,
                    })
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(error) => unavailable(&error),
    }
}

async fn metrics<S: Store>(State(api): State<Arc<Api<S>>>) -> Response {
    let stats = &api.stats;
    let mut out = String::new();
    for (name, help, value) in [
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
            "Messages the store failed to take (redelivered later).",
            &stats.store_errors,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            value.load(Ordering::Relaxed)
        ));
    }
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
            store.apply(&message, 5).await.unwrap();
        }
        let api = Arc::new(Api {
            store,
            stats: Arc::default(),
            token: "s3cret".into(),
        });
        (dir, app(api))
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
}
