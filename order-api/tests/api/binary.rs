//! The `order-api` binary itself: start-up refusals and graceful SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use order_test_support::db::TestDatabase;

use crate::common::send;

const BIN: &str = env!("CARGO_BIN_EXE_order-api");

fn clean_command() -> Command {
    let mut command = Command::new(BIN);
    for var in [
        "ORDER_JWKS_URL",
        "ORDER_JWT_PUBLIC_KEY_FILE",
        "ORDER_JWT_ISSUERS",
        "ORDER_AUTH_DISABLED",
        "DATABASE_URL",
        "ORDER_API_ADDR",
    ] {
        command.env_remove(var);
    }
    command
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("order-api did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn refuses_to_start_without_a_key_source_or_with_bad_values() {
    let out = clean_command()
        .args(["--jwt-issuers", "https://users.test"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no token key source"), "{stderr}");
    assert!(stderr.contains("--auth-disabled"), "{stderr}");

    let out = clean_command()
        .args(["--listen", "nonsense"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));

    // Unreachable database: one clear line, non-zero exit.
    let out = clean_command()
        .args([
            "--auth-disabled",
            "--database-url",
            "postgres://nobody@127.0.0.1:1/nothing",
            "--db-connect-timeout-ms",
            "1000",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("order-api: "), "{stderr}");

    // A read URL that can never work: one line naming it, before any connection is tried.
    let out = clean_command()
        .args([
            "--auth-disabled",
            "--database-url",
            "postgres://nobody@127.0.0.1:1/nothing",
            "--read-database-url",
            "postgres://nobody@127.0.0.1:1/nothing?sslmode=sometimes",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("order-api: "))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("cannot use the read database"), "{line}");
    assert!(line.contains("sslmode"), "{line}");
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let db = TestDatabase::new().await;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut child = clean_command()
        .args([
            "--auth-disabled",
            "--database-url",
            db.url(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--shutdown-delay-ms",
            "1500",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/health/ready");
    let started = Instant::now();
    loop {
        let ok = tokio::time::timeout(
            Duration::from_secs(2),
            hyper::Client::new().get(url.parse().unwrap()),
        )
        .await
        .is_ok_and(|r| r.is_ok_and(|r| r.status() == 200));
        if ok {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Without a token: auth is disabled explicitly.
    let reply = send(
        Method::GET,
        &format!("http://127.0.0.1:{port}/orders?storeNumber=1"),
        None,
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // A keep-alive connection opened before the signal must be answered, not reset.
    let client = hyper::Client::new();
    let orders = format!("http://127.0.0.1:{port}/orders?storeNumber=1");
    assert_eq!(
        client.get(orders.parse().unwrap()).await.unwrap().status(),
        200
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let signalled = Instant::now();
    // Readiness turns 503 at once; requests are still served during the delay.
    let ready_url = format!("http://127.0.0.1:{port}/health/ready");
    let actuator_url = format!("http://127.0.0.1:{port}/actuator/health/readiness");
    loop {
        let ready = client.get(ready_url.parse().unwrap()).await.unwrap();
        if ready.status() == 503 {
            break;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "readiness still {} after SIGTERM",
            ready.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let actuator = client.get(actuator_url.parse().unwrap()).await.unwrap();
    assert_eq!(actuator.status(), 503);
    for _ in 0..5 {
        let reply = client.get(orders.parse().unwrap()).await.unwrap();
        assert_eq!(reply.status(), 200, "served during the shutdown delay");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(20)))
            .await
            .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        signalled.elapsed() >= Duration::from_millis(1500),
        "exited before the shutdown delay: {:?}",
        signalled.elapsed()
    );
}
