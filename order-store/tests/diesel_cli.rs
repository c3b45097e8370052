//! `diesel migration run` (the deploy pipelines' path) and the embedded migrations (the
//! binaries' `--migrate`) must produce the same schema, and `src/schema.rs` must be what
//! `diesel print-schema` prints for it. Needs the diesel CLI on PATH (`.ci/test` installs it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use order_test_support::db::TestDatabase;

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program}: {e}. Install the diesel CLI with \
             `cargo install diesel_cli --no-default-features --features postgres` \
             (or run the tests with `bash .ci/test`, which does)"
            )
        });
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The schema as pg_dump prints it, without lines that differ between two databases of the
/// same schema (pg_dump's per-run `\restrict` key, comments).
fn schema_of(url: &str) -> String {
    run(
        "pg_dump",
        &["--schema-only", "--no-owner", "--no-privileges", url],
    )
    .lines()
    .filter(|l| {
        !l.starts_with("--") && !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict")
    })
    .collect::<Vec<_>>()
    .join("\n")
}

#[tokio::test]
async fn diesel_cli_and_embedded_migrations_build_the_same_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let migrations_dir = root.join("migrations");
    let by_cli = TestDatabase::empty().await;
    run(
        "diesel",
        &[
            "migration",
            "run",
            "--migration-dir",
            migrations_dir.to_str().unwrap(),
            "--database-url",
            by_cli.url(),
        ],
    );
    let embedded = TestDatabase::new().await;
    let cli_schema = schema_of(by_cli.url());
    assert!(
        cli_schema.contains("CREATE TABLE public.orders"),
        "{cli_schema}"
    );
    assert_eq!(cli_schema, schema_of(embedded.url()));

    let printed = run("diesel", &["print-schema", "--database-url", by_cli.url()]);
    let committed = std::fs::read_to_string(root.join("order-store/src/schema.rs")).unwrap();
    assert_eq!(
        printed.trim_end(),
        committed.trim_end(),
        "regenerate schema.rs with `diesel print-schema`"
    );
}
