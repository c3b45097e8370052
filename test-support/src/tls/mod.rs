//! TLS fixtures for the integration tests of every crate: a throw-away CA and server
//! certificate made with the `openssl` CLI, a private PostgreSQL with `ssl=on` (`initdb` and
//! `pg_ctl` into a temporary directory, on a spare port) and a private Redis with only a TLS
//! port. The shared servers are never touched: other developers' tests run against them at the
//! same time, so fault tests stop and reconfigure only servers of their own.
//!
//! Its `expect`s fire only when the machine lacks a tool the tests need, and a panic naming it
//! is how a test reports that.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::missing_panics_doc)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::spare_port;

/// Where the PostgreSQL server binaries are (Debian's layout, then `PATH`).
const PG_BIN_DIRS: &[&str] = &["/usr/lib/postgresql/15/bin", "/usr/local/bin"];

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program` run as the `postgres` user when the tests run as root (initdb, pg_ctl and
/// pgbouncer refuse to run as root), else as the current user.
pub fn as_postgres(program: &str) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", program]);
        command
    } else {
        Command::new(program)
    }
}

/// Hands `path` (recursively) to the `postgres` user when running as root.
pub fn give_to_postgres(path: &Path) {
    if is_root() {
        run(Command::new("chown").args(["-R", "postgres:"]).arg(path));
    }
}

pub fn pg_binary(name: &str) -> String {
    PG_BIN_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists())
        .map_or_else(|| name.to_owned(), |p| p.display().to_string())
}

fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA, a server certificate it signed for `localhost` only (so `127.0.0.1` is a wrong host
/// name), and an unrelated second CA.
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let dir = TempDir::new("order-tls-pki");
        let d = dir.path();
        let openssl = |args: &[&str]| {
            run(Command::new("openssl").args(args).current_dir(d));
        };
        for ca in ["ca", "other-ca"] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN=order-service test {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
        }
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA that signed the server certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir().join("ca.pem")
    }

    /// A CA that signed nothing the servers present.
    pub fn other_ca(&self) -> PathBuf {
        self.dir().join("other-ca.pem")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.dir().join("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.dir().join("server.key")
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// A private PostgreSQL with `ssl=on` on a spare port, `trust` authentication for `postgres`.
pub struct TlsPostgres {
    dir: TempDir,
    port: u16,
}

impl TlsPostgres {
    pub fn start(pki: &Pki) -> Self {
        let dir = TempDir::new("order-tls-pg");
        let d = dir.path();
        std::fs::copy(pki.server_cert(), d.join("server.pem")).unwrap();
        std::fs::copy(pki.server_key(), d.join("server.key")).unwrap();
        run(Command::new("chmod").arg("600").arg(d.join("server.key")));
        give_to_postgres(d);
        let data = d.join("data");
        run(as_postgres(&pg_binary("initdb"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data));
        let port = spare_port();
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{d}'\n\
             ssl = on\nssl_cert_file = '{d}/server.pem'\nssl_key_file = '{d}/server.key'\n\
             fsync = off\nfull_page_writes = off\nsynchronous_commit = off\nmax_connections = 50\n",
            d = d.display()
        );
        let mut existing = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        existing.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), existing).unwrap();
        run(as_postgres(&pg_binary("pg_ctl"))
            .args(["-w", "-t", "60", "-l"])
            .arg(d.join("log"))
            .arg("-D")
            .arg(&data)
            .arg("start")
            .stdout(Stdio::null()));
        Self { dir, port }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@<host>:<port>/<database>` plus `query` (without the `?`).
    pub fn url(&self, host: &str, database: &str, query: &str) -> String {
        let mut url = format!("postgres://postgres@{host}:{}/{database}", self.port);
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
    }

    /// The directory of its Unix socket, certificate and key.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs SQL with `psql` over the Unix socket (no TLS involved).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        psql(self.dir.path(), self.port, database, sql)
    }
}

/// Runs SQL with `psql` as `postgres` over the Unix socket in `socket_dir`; the output rows
/// unaligned, without headers.
fn psql(socket_dir: &Path, port: u16, database: &str, sql: &str) -> String {
    run(Command::new("psql")
        .args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
        ])
        .arg("-h")
        .arg(socket_dir)
        .arg("-p")
        .arg(port.to_string())
        .arg("-d")
        .arg(database)
        .arg("-c")
        .arg(sql))
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = as_postgres(&pg_binary("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A private Redis listening only on a TLS port (no client certificates), with an append-only
/// file so that a restart keeps the stream and its group.
pub struct TlsRedis {
    dir: TempDir,
    port: u16,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    child: Option<Child>,
}

impl TlsRedis {
    pub fn start(pki: &Pki) -> Self {
        let mut redis = Self {
            dir: TempDir::new("order-tls-redis"),
            port: spare_port(),
            cert: pki.server_cert(),
            key: pki.server_key(),
            ca: pki.ca(),
            child: None,
        };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1", "--tls-port"])
            .arg(self.port.to_string())
            .arg("--tls-cert-file")
            .arg(&self.cert)
            .arg("--tls-key-file")
            .arg(&self.key)
            .arg("--tls-ca-cert-file")
            .arg(&self.ca)
            .args([
                "--tls-auth-clients",
                "no",
                "--appendonly",
                "yes",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server with TLS did not start (does this build support --tls-port?)"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rediss://localhost:<port>`.
    pub fn url(&self) -> String {
        format!("rediss://localhost:{}", self.port)
    }

    /// Stops the server (SIGKILL: no goodbye to clients) and starts it again on the same port.
    pub fn restart(&mut self, down_for: Duration) {
        self.stop();
        std::thread::sleep(down_for);
        self.spawn();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

mod pgbouncer;
mod replica;
pub use pgbouncer::PgBouncer;
pub use replica::StreamingReplica;

/// The refusal of a binary that must not start: asserts a non-zero exit and exactly one line
/// `"{binary}: …"` on stderr, and returns that line.
pub fn refusal(binary: &str, out: &std::process::Output) -> String {
    assert!(!out.status.success(), "started: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let prefix = format!("{binary}: ");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    lines[0].to_owned()
}
