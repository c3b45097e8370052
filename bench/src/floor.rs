//! The floor of `GET /orders/{id}`: the least an HTTP server over the same database can do for
//! that request. hyper and tokio-postgres only, no framework, no pool, no decoding: PostgreSQL
//! builds the JSON (`row_to_json`) and the server copies the text into the response. order-api's
//! throughput, CPU per request and tail are measured against it (bench/run.sh, api phase).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use hyper::service::{make_service_fn, service_fn};
use hyper::{header, Body, Method, Request, Response, Server, StatusCode};
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

use crate::ceiling::PgUuid;

const SELECT: &str = "SELECT row_to_json(o)::text FROM orders o WHERE id = $1";

/// `connections` clients shared by every request, one picked round-robin per request: a
/// tokio-postgres `Client` pipelines the queries of concurrent callers on its one connection,
/// so no request waits for a connection to come free.
struct Floor {
    clients: Vec<(Client, Statement)>,
    next: AtomicUsize,
}

pub async fn serve(url: &str, listen: SocketAddr, connections: usize) -> anyhow::Result<()> {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .context("cannot connect to the benchmark database")?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("order-bench floor: connection error: {e}");
            }
        });
        let statement = client
            .prepare(SELECT)
            .await
            .context("preparing the floor's SELECT")?;
        clients.push((client, statement));
    }
    let floor = Arc::new(Floor {
        clients,
        next: AtomicUsize::new(0),
    });
    let make = make_service_fn(move |_| {
        let floor = Arc::clone(&floor);
        async move {
            Ok::<_, Infallible>(service_fn(move |req| {
                let floor = Arc::clone(&floor);
                async move { Ok::<_, Infallible>(floor.answer(&req).await) }
            }))
        }
    });
    eprintln!("order-bench floor: listening on {listen}");
    Server::try_bind(&listen)
        .with_context(|| format!("cannot listen on {listen}"))?
        .serve(make)
        .await
        .context("the floor server failed")
}

impl Floor {
    async fn answer(&self, req: &Request<Body>) -> Response<Body> {
        let Some(id) = req.uri().path().strip_prefix("/orders/") else {
            return plain(StatusCode::NOT_FOUND, "not found");
        };
        if req.method() != Method::GET {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET");
        }
        let Ok(id) = Uuid::parse_str(id) else {
            return plain(StatusCode::BAD_REQUEST, "the order id is not a UUID");
        };
        let (client, statement) =
            &self.clients[self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len()];
        match client.query_opt(statement, &[&PgUuid(id)]).await {
            Ok(Some(row)) => match row.try_get::<_, String>(0) {
                Ok(json) => Response::builder()
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(json))
                    .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "response")),
                Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            },
            Ok(None) => plain(StatusCode::NOT_FOUND, "no such order"),
            Err(e) => plain(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
    }
}

fn plain(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(message.to_owned()));
    *response.status_mut() = status;
    response
}
