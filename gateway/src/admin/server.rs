//! The admin HTTP server.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::net::TcpListener;

use super::metrics::Metrics;
use crate::rules::reload::Reloader;

/// What the routes share.
#[derive(Debug, Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    reloader: Option<Arc<Reloader>>,
}

/// Binds `listen` and serves the admin routes until `shutdown` resolves.
///
/// `POST /reload` re-reads the rules from the configuration file through `reloader` (404 when
/// there is none, as in the demo).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    reloader: Option<Arc<Reloader>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .route("/reload", post(reload))
        .with_state(AdminState { metrics, reloader });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn reload(State(state): State<AdminState>) -> impl IntoResponse {
    let Some(reloader) = state.reloader else {
        return (
            StatusCode::NOT_FOUND,
            "no configuration file to reload rules from\n".to_owned(),
        );
    };
    match reloader.reload().await {
        Ok(summary) => (StatusCode::OK, format!("{summary}\n")),
        Err(problems) => (StatusCode::UNPROCESSABLE_ENTITY, format!("{problems}\n")),
    }
}

async fn readyz(State(AdminState { metrics, .. }): State<AdminState>) -> impl IntoResponse {
    let mut reasons = Vec::new();
    if !metrics.journal().writable() {
        reasons.push("journal is not writable".to_owned());
    }
    for uplink in metrics.uplinks() {
        if !uplink.connected() {
            reasons.push(format!("uplink is not connected: {}", uplink.name()));
        } else if uplink.stalled() {
            reasons.push(format!(
                "uplink is stalled: {} (nothing confirmed within its ack_timeout; reconnecting)",
                uplink.name()
            ));
        }
    }
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", reasons.join("; ")),
        )
    }
}

async fn render_metrics(State(AdminState { metrics, .. }): State<AdminState>) -> impl IntoResponse {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(now_ms),
    )
}
