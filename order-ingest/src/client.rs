//! What `REDIS_URL` names: one Redis server or a Redis Cluster, and the connections to either.
//!
//! On a cluster, keys live in hash slots spread over several masters. The connections to it
//! are redis-rs's own cluster client (`cluster_async::ClusterConnection`): it learns which
//! node serves which slot, routes every command by its key, follows `MOVED`/`ASK`
//! redirections, and refreshes the slot map when a node fails and a replica is promoted. No
//! slot routing is written here. What this service adds is the choice of mode
//! (`--redis-mode`), explicit timeouts (the cluster client's default response timeout would
//! cut a blocking read short), and routing by key where a command names none (`CLIENT ID`).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value};

/// `--redis-mode`: how the Redis behind `REDIS_URL` is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RedisMode {
    /// Ask the server at start-up (`INFO cluster`, `cluster_enabled`).
    Auto,
    /// One server (or a managed primary endpoint).
    Standalone,
    /// A Redis Cluster: commands are routed by key to the node serving its slot.
    Cluster,
}

impl RedisMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RedisMode::Auto => "auto",
            RedisMode::Standalone => "standalone",
            RedisMode::Cluster => "cluster",
        }
    }
}

/// The Redis a `REDIS_URL` names: one or more seed nodes, the mode asked for, and (once known)
/// the mode in use. Clones share what was learnt about the server.
#[derive(Clone)]
pub struct RedisClient {
    /// The nodes `REDIS_URL` names, in order (one for a single server).
    seeds: Arc<Vec<redis::Client>>,
    /// The trusted roots for `rediss://`, handed to the cluster client for every node.
    roots: Option<Arc<Vec<u8>>>,
    requested: RedisMode,
    /// `Standalone` or `Cluster`, once known.
    resolved: Arc<OnceLock<RedisMode>>,
    /// The cluster's nodes as its slot map named them last (`CLUSTER SLOTS`), tried after the
    /// seeds when a connection is rebuilt: a seed that died (the master a failover replaced)
    /// must not leave ingest without a way back into the cluster. Shared by every client of
    /// the same `REDIS_URL` in the process ([`learned_nodes`]), so that a connection opened for
    /// the first time after a failover (the health probe's) knows them too.
    learned: Arc<Mutex<Vec<redis::ConnectionInfo>>>,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("seeds", &self.seeds.len())
            .field("requested", &self.requested)
            .field("resolved", &self.resolved.get())
            .finish_non_exhaustive()
    }
}

/// A one-server client is used in [`RedisMode::Auto`]: a cluster node behind it is found out on
/// first use and talked to as a cluster.
impl From<redis::Client> for RedisClient {
    fn from(client: redis::Client) -> Self {
        let addr = client.get_connection_info().addr().clone();
        let roots = matches!(&addr, redis::ConnectionAddr::TcpTls { .. })
            .then(|| crate::tls::roots_pem().ok().map(Arc::new))
            .flatten();
        Self {
            seeds: Arc::new(vec![client]),
            roots,
            requested: RedisMode::Auto,
            resolved: Arc::new(OnceLock::new()),
            learned: learned_nodes(&format!("{addr:?}")),
        }
    }
}

/// What the server says about cluster mode does not match `--redis-mode`, or no seed answered.
#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    #[error("--redis-mode {requested} contradicts the server: {found}")]
    Contradiction {
        requested: &'static str,
        found: &'static str,
    },
    #[error("{0}")]
    Unreachable(String),
}

impl RedisClient {
    /// `url`: one Redis URL, or several comma-separated seed nodes of one cluster.
    pub fn new(url: &str, mode: RedisMode) -> redis::RedisResult<Self> {
        let urls: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(invalid("no Redis URL given"));
        }
        if urls.len() > 1 && mode == RedisMode::Standalone {
            return Err(invalid(
                "several comma-separated Redis URLs name the seed nodes of a cluster, not one server",
            ));
        }
        let seeds = urls
            .iter()
            .map(|u| crate::tls::node_client(u))
            .collect::<redis::RedisResult<Vec<_>>>()?;
        let roots = if urls.iter().any(|u| u.starts_with("rediss://")) {
            Some(Arc::new(crate::tls::roots_pem()?))
        } else {
            None
        };
        let resolved = Arc::new(OnceLock::new());
        if mode != RedisMode::Auto {
            let _ = resolved.set(mode);
        }
        Ok(Self {
            seeds: Arc::new(seeds),
            roots,
            requested: mode,
            resolved,
            learned: learned_nodes(url),
        })
    }

    /// The mode asked for (`auto` until [`RedisClient::check`] or a connection resolved it).
    pub fn requested(&self) -> RedisMode {
        self.requested
    }

    /// `Standalone` or `Cluster` once known; `None` while `auto` has not asked yet.
    pub fn mode(&self) -> Option<RedisMode> {
        self.resolved.get().copied()
    }

    /// Asks the server whether cluster mode is on, and checks that against the mode asked for:
    /// the start-up check. Returns the mode in use.
    pub async fn check(&self, deadline: Duration) -> Result<RedisMode, ModeError> {
        let found = self
            .ask_server(deadline)
            .await
            .map_err(|e| ModeError::Unreachable(e.to_string()))?;
        let contradiction = |found| ModeError::Contradiction {
            requested: self.requested.as_str(),
            found,
        };
        match (self.requested, found) {
            (RedisMode::Standalone, RedisMode::Cluster) => Err(contradiction(
                "it is a cluster node (cluster_enabled:1); use --redis-mode cluster or auto",
            )),
            (RedisMode::Cluster, RedisMode::Standalone) => Err(contradiction(
                "it is not in cluster mode (cluster_enabled:0); use --redis-mode standalone or auto",
            )),
            _ => {
                if found == RedisMode::Standalone && self.seeds.len() > 1 {
                    return Err(ModeError::Unreachable(
                        "several comma-separated Redis URLs name the seed nodes of a cluster, but the server is not in cluster mode".to_owned(),
                    ));
                }
                let _ = self.resolved.set(found);
                Ok(found)
            }
        }
    }

    /// `INFO cluster` on the seeds in turn; the first answer decides.
    async fn ask_server(&self, deadline: Duration) -> redis::RedisResult<RedisMode> {
        let mut last = None;
        for seed in self.seeds.iter() {
            let work = async {
                let mut conn = seed
                    .get_multiplexed_async_connection_with_config(&config(deadline))
                    .await?;
                redis::cmd("INFO")
                    .arg("cluster")
                    .query_async::<String>(&mut conn)
                    .await
            };
            match tokio::time::timeout(deadline, work).await {
                Ok(Ok(info)) => {
                    let cluster = info.lines().any(|l| l.trim() == "cluster_enabled:1");
                    return Ok(if cluster {
                        RedisMode::Cluster
                    } else {
                        RedisMode::Standalone
                    });
                }
                Ok(Err(e)) => last = Some(e),
                Err(_) => {
                    last = Some(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "no answer",
                        format!("within {deadline:?}"),
                    )));
                }
            }
        }
        Err(last.unwrap_or_else(|| invalid("no Redis URL given")))
    }

    /// A new connection whose every command is bounded by `deadline` (connecting, and each
    /// answer: on a cluster that includes its retries and redirections).
    pub async fn connect(&self, deadline: Duration) -> redis::RedisResult<Connection> {
        let mode = if let Some(mode) = self.mode() {
            mode
        } else {
            let found = self.ask_server(deadline).await?;
            *self.resolved.get_or_init(|| found)
        };
        if mode == RedisMode::Cluster {
            let mut infos: Vec<redis::ConnectionInfo> = self
                .seeds
                .iter()
                .map(|s| s.get_connection_info().clone())
                .collect();
            infos.extend(
                self.learned
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .cloned(),
            );
            let mut builder = ClusterClientBuilder::new(infos)
                .connection_timeout(deadline)
                .response_timeout(deadline)
                .overall_response_timeout(Some(deadline));
            if let Some(roots) = &self.roots {
                builder = builder.certs(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(roots.to_vec()),
                });
            }
            let mut conn = builder.build()?.get_async_connection().await?;
            self.learn_nodes(&mut conn).await;
            return Ok(Connection::Cluster(conn));
        }
        let seed = &self.seeds[0];
        Ok(Connection::Standalone(
            seed.get_multiplexed_async_connection_with_config(&config(deadline))
                .await?,
        ))
    }
}

impl RedisClient {
    /// Remembers the nodes of the cluster's slot map (masters and replicas) as further seeds,
    /// with the first seed's scheme, credentials and TLS settings. Best effort.
    async fn learn_nodes(&self, conn: &mut ClusterConnection) {
        let Ok(Value::Array(ranges)) = conn
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
        else {
            return;
        };
        let template = self.seeds[0].get_connection_info();
        let mut nodes: Vec<redis::ConnectionInfo> = Vec::new();
        // Each range: [start, end, [host, port, id, ...] (master), [host, port, ...] (replicas)...].
        for range in &ranges {
            let Value::Array(fields) = range else {
                continue;
            };
            for node in fields.iter().skip(2) {
                let Value::Array(node) = node else { continue };
                let (Some(host), Some(Value::Int(port))) = (node.first(), node.get(1)) else {
                    continue;
                };
                let Ok(host) = redis::from_redis_value_ref::<String>(host) else {
                    continue;
                };
                let Ok(port) = u16::try_from(*port) else {
                    continue;
                };
                // An empty or `?` host: the node does not know its own address.
                if host.is_empty() || host == "?" {
                    continue;
                }
                let addr = match template.addr() {
                    redis::ConnectionAddr::TcpTls {
                        insecure,
                        tls_params,
                        ..
                    } => redis::ConnectionAddr::TcpTls {
                        host,
                        port,
                        insecure: *insecure,
                        tls_params: tls_params.clone(),
                    },
                    _ => redis::ConnectionAddr::Tcp(host, port),
                };
                let info = template.clone().set_addr(addr);
                if !nodes.iter().any(|n| n.addr() == info.addr()) {
                    nodes.push(info);
                }
            }
        }
        if !nodes.is_empty() {
            *self.learned.lock().unwrap_or_else(PoisonError::into_inner) = nodes;
        }
    }
}

/// The learnt nodes of the cluster that `url` names, one list per URL in the process.
fn learned_nodes(url: &str) -> Arc<Mutex<Vec<redis::ConnectionInfo>>> {
    type Registry =
        Mutex<std::collections::HashMap<String, Arc<Mutex<Vec<redis::ConnectionInfo>>>>>;
    static LEARNED: OnceLock<Registry> = OnceLock::new();
    LEARNED
        .get_or_init(Registry::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(url.to_owned())
        .or_default()
        .clone()
}

fn invalid(message: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, message))
}

fn config(deadline: Duration) -> AsyncConnectionConfig {
    // redis-rs's own response timeout defaults to 500 ms, shorter than any useful BLOCK.
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(deadline))
        .set_response_timeout(Some(deadline))
}

/// A connection to one server, or to a whole cluster (one connection per node, inside).
#[derive(Clone)]
pub enum Connection {
    Standalone(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Connection {
    /// `cmd` sent to the master serving `key`'s slot (on one server: to the server), for
    /// commands that name no key of their own, such as `CLIENT ID` and `CLIENT UNBLOCK`.
    pub async fn query_on_node_of<T: redis::FromRedisValue>(
        &mut self,
        key: &str,
        cmd: &Cmd,
    ) -> redis::RedisResult<T> {
        match self {
            Connection::Standalone(conn) => cmd.query_async(conn).await,
            Connection::Cluster(conn) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::with_key(key, SlotAddr::Master),
                ));
                let value = conn.route_command(cmd.clone(), route).await?;
                redis::from_redis_value(value).map_err(Into::into)
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Standalone(conn) => conn.req_packed_command(cmd),
            Connection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Standalone(conn) => conn.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Standalone(conn) => conn.get_db(),
            Connection::Cluster(conn) => conn.get_db(),
        }
    }
}
