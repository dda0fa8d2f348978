//! The plain HTTP side: `/healthz` and `/metrics` (Prometheus text).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::engine::Engine;
use crate::ha::{Leadership, Role};

#[derive(Clone)]
struct Served {
    engine: Arc<Engine>,
    leadership: Arc<Leadership>,
}

pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    leadership: Arc<Leadership>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(Served { engine, leadership });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// `ok` while the controller can do its job. With several controllers it
/// says which role it has; a controller that cannot tell whether it leads
/// (etcd unreachable or without quorum) answers 503 with the reason, as it
/// does nothing until etcd answers again.
async fn healthz(State(served): State<Served>) -> impl IntoResponse {
    if !served.leadership.is_elected() {
        return (StatusCode::OK, "ok\n".to_owned());
    }
    match served.leadership.role() {
        Role::Leader => (StatusCode::OK, "ok: leader\n".to_owned()),
        Role::Follower { leader } => (
            StatusCode::OK,
            format!(
                "ok: follower; the leader is at {}\n",
                leader.as_deref().unwrap_or("(unknown)")
            ),
        ),
        Role::Starting => (
            StatusCode::OK,
            "ok: starting; no leader known yet\n".to_owned(),
        ),
        Role::Stalled(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not acting: {why}\n"),
        ),
    }
}

async fn metrics(State(served): State<Served>) -> impl IntoResponse {
    let engine = &served.engine;
    let mut text = engine.fleet.render_metrics();
    text.push_str(&engine.render_cert_metrics());
    text.push_str(&format!(
        "# HELP ebb_leader Whether this controller leads (always 1 with the SQLite store).\n\
         # TYPE ebb_leader gauge\nebb_leader {}\n",
        u8::from(served.leadership.is_leader())
    ));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}
