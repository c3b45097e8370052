//! A private PgBouncer in front of a test's database, for the connection-pooler tests.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Debian's PgBouncer (`/usr/sbin/pgbouncer`, installed by `.ci/test`) on a spare port in
/// front of one database of the test PostgreSQL (`TEST_DATABASE_URL`), in transaction pooling
/// with `trust` authentication. It refuses to run as root, so it runs as `postgres` then.
pub struct PgBouncer {
    dir: TempDir,
    port: u16,
    child: Child,
}

impl PgBouncer {
    pub const BINARY: &'static str = "/usr/sbin/pgbouncer";

    /// PgBouncer in front of `database` on the test server, `pool_mode` as given
    /// (`transaction`), with `server_pool_size` server connections at most.
    pub fn start(database: &str, pool_mode: &str, server_pool_size: u32) -> Self {
        let admin = crate::db::admin_url();
        let authority = admin
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or("127.0.0.1:5432");
        let host_port = authority.rsplit('@').next().unwrap_or(authority);
        let (host, server_port) = host_port.rsplit_once(':').unwrap_or((host_port, "5432"));
        let user = authority.split_once('@').map_or("postgres", |(user, _)| {
            user.split(':').next().unwrap_or("postgres")
        });
        Self::start_for(
            host,
            server_port,
            user,
            database,
            pool_mode,
            server_pool_size,
        )
    }

    /// PgBouncer in front of `database` on the server at `host`:`server_port` (a test's
    /// private server, say), connecting as `user` without a password.
    pub fn start_for(
        host: &str,
        server_port: &str,
        user: &str,
        database: &str,
        pool_mode: &str,
        server_pool_size: u32,
    ) -> Self {
        assert!(
            Path::new(Self::BINARY).exists(),
            "{} is missing: install Debian's pgbouncer package (bash .ci/test does)",
            Self::BINARY
        );
        let dir = TempDir::new("order-pgbouncer");
        let d = dir.path();
        let port = spare_port();
        std::fs::write(d.join("userlist.txt"), format!("\"{user}\" \"\"\n")).unwrap();
        std::fs::write(
            d.join("pgbouncer.ini"),
            format!(
                "[databases]\n{database} = host={host} port={server_port} dbname={database}\n\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {d}/userlist.txt\npool_mode = {pool_mode}\n\
                 default_pool_size = {server_pool_size}\nmax_client_conn = 500\n\
                 ignore_startup_parameters = extra_float_digits,options\n\
                 logfile = {d}/pgbouncer.log\npidfile = {d}/pgbouncer.pid\n",
                d = d.display()
            ),
        )
        .unwrap();
        give_to_postgres(d);
        let child = as_postgres(Self::BINARY)
            .arg(d.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "pgbouncer did not start: {}",
                std::fs::read_to_string(d.join("pgbouncer.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { dir, port, child }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database` through the pooler, as the admin URL's user.
    pub fn url(&self, database: &str) -> String {
        let admin = crate::db::admin_url();
        let user = admin
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split_once('@'))
            .map_or("postgres", |(user, _)| {
                user.split(':').next().unwrap_or("postgres")
            })
            .to_owned();
        format!("postgres://{user}@127.0.0.1:{}/{database}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // pgbouncer itself (its pidfile), not runuser: SIGINT is its "shut down now".
        let pid = std::fs::read_to_string(self.dir.path().join("pgbouncer.pid"))
            .map_or_else(|_| self.child.id().to_string(), |p| p.trim().to_owned());
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
