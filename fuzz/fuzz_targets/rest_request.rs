//! REST query-string, path and body parsing: any request line and JSON body must be answered
//! with an ordinary status (never a panic, never a 500). The server is the real route tree
//! (`order_api::routes::routes`) with authentication off and a pool that points at a closed
//! port, so a request that passes validation ends in a quick 503 instead of a query.
//!
//! Input layout: byte 0 picks the route and method, then `path-part \n query \n body`.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use order_api::auth::Auth;
use order_api::{AppState, Limits};
use order_store::DbArgs;

const ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/orders", ""),
    ("GET", "/orders/number/", ""),
    ("GET", "/orders/store/", ""),
    ("GET", "/orders/customer/", ""),
    ("GET", "/orders/", ""),
    ("PATCH", "/orders/", "/status"),
    ("PATCH", "/orders/", "/fulfillment"),
    ("POST", "/orders/", "/cancel"),
    ("POST", "/orders/", "/notes"),
    ("POST", "/graphql", ""),
];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn state() -> &'static AppState {
    static STATE: OnceLock<AppState> = OnceLock::new();
    STATE.get_or_init(|| {
        let _guard = runtime().enter();
        let mut db = DbArgs::for_url("postgres://fuzz:fuzz@127.0.0.1:1/fuzz");
        db.db_connect_timeout_ms = 1;
        db.db_pool_size = 2;
        let pool = order_store::db::build_pool(&db, "order-fuzz");
        AppState::new(
            pool,
            Auth::Disabled,
            Limits {
                max_body_bytes: 65_536,
                pool_max: 2,
                db_op_timeout: Duration::from_millis(1),
            },
        )
    })
}

type Handler = Box<
    dyn Fn(warp::test::RequestBuilder) -> warp::http::Response<warp::hyper::body::Bytes>
        + Send
        + Sync,
>;

/// The route tree, built once (building it takes milliseconds; answering takes microseconds).
fn handler() -> &'static Handler {
    static HANDLER: OnceLock<Handler> = OnceLock::new();
    HANDLER.get_or_init(|| {
        let filter = order_api::routes::routes(state());
        Box::new(move |request| runtime().block_on(request.reply(&filter)))
    })
}

/// Keeps what a client can put in a request target (RFC 3986 unreserved, sub-delims, `:@/?%`)
/// and percent-encodes every other byte, so the harness never builds an invalid URI.
fn target_safe(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (method, prefix, suffix) = ROUTES[pick as usize % ROUTES.len()];
    let mut parts = rest.splitn(3, |&b| b == b'\n');
    let segment = target_safe(parts.next().unwrap_or_default());
    let query = target_safe(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default().to_vec();
    let mut path = if prefix.ends_with('/') {
        format!(
            "{prefix}{}{suffix}",
            segment.replace('/', "%2F").replace('?', "%3F")
        )
    } else {
        prefix.to_owned()
    };
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query);
    }
    let response = handler()(
        warp::test::request()
            .method(method)
            .path(&path)
            .header("content-type", "application/json")
            .body(body),
    );
    let status = response.status().as_u16();
    assert!(
        status != 500,
        "{method} {path} answered 500: {:?}",
        String::from_utf8_lossy(response.body())
    );
});
