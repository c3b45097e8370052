//! A streaming-replication standby of a [`TlsPostgres`]: `pg_basebackup -R` of the primary into
//! a temporary directory, started on a spare port as a hot standby. It can be stopped and
//! started again, and its replay paused, to test how readers cope with a replica that lags or
//! goes away. The shared server is never touched.

use std::process::Stdio;

use super::{as_postgres, give_to_postgres, pg_binary, run, spare_port, TempDir, TlsPostgres};

/// A hot standby streaming from a [`TlsPostgres`], stopped (immediately) on drop.
pub struct StreamingReplica {
    dir: TempDir,
    port: u16,
}

impl StreamingReplica {
    /// Copies `primary` with `pg_basebackup -R` (which writes `primary_conninfo` and
    /// `standby.signal`) and starts the copy as a hot standby with the primary's TLS set-up.
    pub fn start(primary: &TlsPostgres) -> Self {
        let dir = TempDir::new("order-pg-replica");
        let d = dir.path();
        for file in ["server.pem", "server.key"] {
            std::fs::copy(primary.dir().join(file), d.join(file)).unwrap();
        }
        give_to_postgres(d);
        let data = d.join("data");
        run(as_postgres(&pg_binary("pg_basebackup"))
            .arg("-h")
            .arg(primary.dir())
            .args(["-p", &primary.port().to_string()])
            .args(["-U", "postgres", "-R", "-X", "stream", "-c", "fast", "-D"])
            .arg(&data));
        let port = spare_port();
        let conf = format!(
            "\nport = {port}\nunix_socket_directories = '{d}'\nhot_standby = on\n\
             ssl_cert_file = '{d}/server.pem'\nssl_key_file = '{d}/server.key'\n\
             wal_receiver_status_interval = 1s\n",
            d = d.display()
        );
        let mut existing = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        existing.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), existing).unwrap();
        let replica = Self { dir, port };
        replica.start_again();
        replica
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

    /// Stops the standby at once (`pg_ctl -m immediate`): its clients see their connections
    /// cut, new ones are refused.
    pub fn stop(&self) {
        run(as_postgres(&pg_binary("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .stdout(Stdio::null()));
    }

    /// Starts the standby (again) and waits until it accepts connections.
    pub fn start_again(&self) {
        run(as_postgres(&pg_binary("pg_ctl"))
            .args(["-w", "-t", "60", "-l"])
            .arg(self.dir.path().join("log"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("start")
            .stdout(Stdio::null()));
    }

    /// Runs SQL with `psql` over the Unix socket.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        super::psql(self.dir.path(), self.port, database, sql)
    }
}

impl Drop for StreamingReplica {
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
