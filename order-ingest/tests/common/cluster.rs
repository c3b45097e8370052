//! A private Redis Cluster per test (6 nodes: 3 masters, 3 replicas), started with
//! `deploy/local/redis-cluster.sh` on spare ports and stopped on drop (every node killed, its
//! files removed), also when the test fails. The shared Redis is never touched.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use order_test_support::tls::Pki;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/redis-cluster.sh")
}

fn bindable(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Six ports whose bus ports (+10000) are free too, below the kernel's ephemeral range so
/// that no outgoing connection takes one meanwhile.
fn cluster_ports() -> [u16; 6] {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = 12_000 + (std::process::id() % 700) as u16 * 10;
    let mut ports = [0; 6];
    let mut found = 0;
    while found < 6 {
        let port = start + NEXT.fetch_add(1, Ordering::SeqCst) % 7_000;
        if bindable(port) && bindable(port + 10_000) {
            ports[found] = port;
            found += 1;
        }
    }
    ports
}

/// A certificate for `localhost` signed by `pki`'s CA, usable by a node both as a server and
/// as a client: nodes present it to each other on the cluster bus, which asks for one.
fn node_certificate(pki: &Pki) -> (PathBuf, PathBuf) {
    let d = pki.dir();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "node.key",
        "-out",
        "node.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        d.join("node.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "node.pem",
        "-days",
        "2",
        "-extfile",
        "node.ext",
    ]);
    (d.join("node.pem"), d.join("node.key"))
}

pub struct RedisCluster {
    dir: PathBuf,
    pub ports: [u16; 6],
    /// `(CA, host name the nodes announce)` for a TLS cluster.
    tls: Option<(PathBuf, String)>,
}

impl RedisCluster {
    pub fn start() -> Self {
        Self::launch(None, &[])
    }

    /// Nodes that speak only TLS, with a certificate from `pki`'s CA for `localhost` only,
    /// announcing `hostname` instead of their IP address.
    pub fn start_tls(pki: &Pki, hostname: &str) -> Self {
        let (cert, key) = node_certificate(pki);
        let env = [
            ("CLUSTER_TLS_CERT", cert),
            ("CLUSTER_TLS_KEY", key),
            ("CLUSTER_TLS_CA", pki.ca()),
            ("CLUSTER_ANNOUNCE_HOSTNAME", PathBuf::from(hostname)),
        ];
        Self::launch(Some((pki.ca(), hostname.to_owned())), &env)
    }

    fn launch(tls: Option<(PathBuf, String)>, env: &[(&str, PathBuf)]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "order-redis-cluster-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let cluster = Self {
            dir,
            ports: cluster_ports(),
            tls,
        };
        let mut cmd = Command::new("bash");
        cmd.arg(script()).arg("start").arg(&cluster.dir);
        for port in cluster.ports {
            cmd.arg(port.to_string());
        }
        for (name, value) in env {
            cmd.env(name, value);
        }
        let out = cmd.output().expect("run deploy/local/redis-cluster.sh");
        assert!(
            out.status.success(),
            "redis-cluster.sh start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    /// The URL of one node: `redis://127.0.0.1:<port>`, or `rediss://<hostname>:<port>`.
    pub fn url(&self, port: u16) -> String {
        match &self.tls {
            Some((_, host)) => format!("rediss://{host}:{port}"),
            None => format!("redis://127.0.0.1:{port}"),
        }
    }

    /// `redis-cli` against the node on `port`.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        if let Some((ca, _)) = &self.tls {
            cmd.arg("--tls").arg("--cacert").arg(ca);
        }
        let out = cmd
            .arg("-p")
            .arg(port.to_string())
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn slot_of(&self, key: &str) -> u16 {
        self.ports
            .iter()
            .find_map(|&p| {
                self.cli(p, &["cluster", "keyslot", key])
                    .trim()
                    .parse()
                    .ok()
            })
            .expect("a node answers CLUSTER KEYSLOT")
    }

    /// The port of the master serving `key`'s slot, as the first node that answers sees it.
    pub fn master_of(&self, key: &str) -> Option<u16> {
        let slot = self.slot_of(key);
        self.ports.iter().find_map(|&p| {
            let nodes = self.cli(p, &["cluster", "nodes"]);
            if nodes.trim().is_empty() {
                return None;
            }
            nodes.lines().find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                if !flags.contains("master") || flags.contains("fail") {
                    return None;
                }
                let serves = fields.iter().skip(8).any(|range| {
                    let mut ends = range.splitn(2, '-');
                    let low: u16 = ends.next().and_then(|s| s.parse().ok()).unwrap_or(u16::MAX);
                    let high: u16 = ends.next().and_then(|s| s.parse().ok()).unwrap_or(low);
                    (low..=high).contains(&slot)
                });
                let port = fields
                    .get(1)?
                    .split(['@', ','])
                    .next()?
                    .rsplit(':')
                    .next()?;
                serves.then(|| port.parse().ok()).flatten()
            })
        })
    }

    /// A master that does not serve `key`'s slot.
    pub fn other_master(&self, key: &str) -> u16 {
        let owner = self.master_of(key).expect("the key's master");
        let masters: Vec<u16> = self
            .ports
            .iter()
            .copied()
            .filter(|&p| p != owner && self.cli(p, &["role"]).starts_with("master"))
            .collect();
        masters[0]
    }

    /// SIGKILL of the node on `port` (no goodbye to its clients or to the cluster).
    pub fn kill(&self, port: u16) {
        let pidfile = self.dir.join(port.to_string()).join("redis.pid");
        let pid = std::fs::read_to_string(&pidfile).expect("the node's pid file");
        let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        // Its pid must not be signalled again on drop (it may belong to another process by then).
        let _ = std::fs::remove_file(pidfile);
    }

    /// Waits until a node other than `dead` serves `key`'s slot as master and the cluster says
    /// it is whole again; returns that node's port.
    pub fn wait_for_new_master(&self, key: &str, dead: u16, limit: Duration) -> u16 {
        let started = Instant::now();
        loop {
            if let Some(port) = self.master_of(key).filter(|&p| p != dead) {
                if self
                    .cli(port, &["cluster", "info"])
                    .contains("cluster_state:ok")
                {
                    return port;
                }
            }
            assert!(
                started.elapsed() < limit,
                "no replica of {dead} was promoted within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every write of the master of `key` reached a replica (`WAIT 1`), so that
    /// a failover cannot lose it.
    pub fn replicated(&self, key: &str) {
        let master = self.master_of(key).expect("the key's master");
        let acked = self.cli(master, &["wait", "1", "5000"]);
        assert_eq!(acked.trim(), "1", "a replica acknowledged the writes");
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}

/// A blocking connection for the tests' own checks: to one server, or to a cluster (routed by
/// key by redis-rs's cluster client).
pub enum TestConn {
    Single(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl TestConn {
    pub fn cluster(url: &str) -> Self {
        TestConn::Cluster(Box::new(
            redis::cluster::ClusterClient::new(vec![url])
                .unwrap()
                .get_connection()
                .unwrap(),
        ))
    }
}

impl redis::ConnectionLike for TestConn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<redis::Value> {
        match self {
            TestConn::Single(c) => c.req_packed_command(cmd),
            TestConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        match self {
            TestConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            TestConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn req_command(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        match self {
            TestConn::Single(c) => c.req_command(cmd),
            TestConn::Cluster(c) => c.req_command(cmd),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            TestConn::Single(c) => c.get_db(),
            TestConn::Cluster(c) => c.get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            TestConn::Single(c) => c.check_connection(),
            TestConn::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            TestConn::Single(c) => c.is_open(),
            TestConn::Cluster(c) => c.is_open(),
        }
    }
}
