//! The OTEL_* settings as read by [`super::trace_export`].

use std::collections::HashMap;

use super::*;

fn export(vars: &[(&str, &str)]) -> Result<TraceExport, String> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    trace_export(|name| vars.get(name).cloned())
}

#[test]
fn no_endpoint_means_no_export() {
    assert_eq!(
        export(&[]),
        Ok(TraceExport::Off("no OTEL_EXPORTER_OTLP_ENDPOINT"))
    );
    assert_eq!(
        export(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
        Ok(TraceExport::Off("no OTEL_EXPORTER_OTLP_ENDPOINT"))
    );
}

#[test]
fn the_platform_settings_export_over_grpc() {
    let got = export(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://tempo:4317"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_PROPAGATORS", "tracecontext,baggage"),
    ]);
    assert_eq!(
        got,
        Ok(TraceExport::Otlp {
            protocol: OtlpProtocol::Grpc,
            endpoint: "http://tempo:4317".to_owned(),
            propagators: vec!["tracecontext", "baggage"],
            timeout: Duration::from_secs(10),
            certificate: None,
        })
    );
}

#[test]
fn signal_specific_settings_win_and_http_protobuf_is_the_default() {
    let got = export(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://b:4318/v1/traces",
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
    ]);
    assert!(
        matches!(got, Ok(TraceExport::Otlp { protocol: OtlpProtocol::HttpProtobuf, ref endpoint, .. }) if endpoint == "http://b:4318/v1/traces")
    );
    let got = export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318")]);
    assert!(matches!(
        got,
        Ok(TraceExport::Otlp {
            protocol: OtlpProtocol::HttpProtobuf,
            ..
        })
    ));
}

#[test]
fn exporter_none_and_sdk_disabled_turn_export_off() {
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://tempo:4317");
    assert!(matches!(
        export(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]),
        Ok(TraceExport::Off(_))
    ));
    assert!(matches!(
        export(&[endpoint, ("OTEL_SDK_DISABLED", "true")]),
        Ok(TraceExport::Off(_))
    ));
}

#[test]
fn unknown_values_are_configuration_errors() {
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://tempo:4317");
    assert_eq!(
        export(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]),
        Err(
            "OTEL_EXPORTER_OTLP_PROTOCOL \"http/json\" is not supported: use grpc or http/protobuf"
                .to_owned()
        )
    );
    assert!(export(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")]).is_err());
    assert!(export(&[endpoint, ("OTEL_PROPAGATORS", "b3")]).is_err());
    assert!(export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "tempo:4317")]).is_err());
    assert!(export(&[endpoint, ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]).is_err());
    assert!(export(&[endpoint, ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem")]).is_err());
}

#[test]
fn traceparent_becomes_a_remote_span_context() {
    let context = remote_span_context(
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        Some("congo=t61rcWkgMzE"),
    );
    let context = context.expect("a valid traceparent");
    assert_eq!(
        context.trace_id().to_string(),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert!(context.is_remote());
    assert!(remote_span_context("00-zz-b7ad6b7169203331-01", None).is_none());
}

#[test]
fn an_https_collector_takes_the_trace_certificate_first() {
    let got = export(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otlp.example.com"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            "/etc/traces-ca.pem",
        ),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"),
    ]);
    let Ok(TraceExport::Otlp {
        endpoint,
        certificate,
        timeout,
        ..
    }) = got
    else {
        panic!("{got:?}");
    };
    assert_eq!(endpoint, "https://otlp.example.com");
    assert_eq!(
        certificate,
        Some(CollectorCertificate {
            variable: "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            path: "/etc/traces-ca.pem".into(),
        })
    );
    assert_eq!(timeout, Duration::from_millis(2500));
}

#[test]
fn an_unreadable_collector_certificate_is_a_start_up_error() {
    let error = CollectorTls::new(
        "https://otlp.example.com:4317",
        Some(&CollectorCertificate {
            variable: "OTEL_EXPORTER_OTLP_CERTIFICATE",
            path: "/nonexistent/ca.pem".into(),
        }),
        b"h2",
    )
    .unwrap_err();
    assert!(error.contains("/nonexistent/ca.pem"), "{error}");
    assert!(error.contains("OTEL_EXPORTER_OTLP_CERTIFICATE"), "{error}");
}

#[tokio::test]
async fn the_certificate_check_tells_a_refused_certificate_from_an_unreachable_collector() {
    let pki = order_test_support::tls::Pki::new();
    let collector = order_test_support::otlp::Collector::start_tls(
        order_test_support::otlp::OtlpProtocol::Grpc,
        &pki,
    )
    .await;
    let endpoint = collector.endpoint();
    let trusting = |path: std::path::PathBuf| CollectorCertificate {
        variable: "OTEL_EXPORTER_OTLP_CERTIFICATE",
        path,
    };

    let trusted = CollectorTls::new(&endpoint, Some(&trusting(pki.ca())), b"h2").unwrap();
    assert_eq!(trusted.check().await, None);
    assert!(trusted.ready().await);

    // Another CA's certificate file replaces the default roots: refused, and no export until
    // the next check a minute later.
    let refused = CollectorTls::new(&endpoint, Some(&trusting(pki.other_ca())), b"h2").unwrap();
    let reason = refused.check().await.expect("a refused certificate");
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    assert!(!refused.ready().await);
    assert!(!refused.ready().await);

    // The right CA, the wrong name (the certificate is for localhost only): refused too.
    let by_ip = endpoint.replace("localhost", "127.0.0.1");
    let wrong_name = CollectorTls::new(&by_ip, Some(&trusting(pki.ca())), b"h2").unwrap();
    let reason = wrong_name
        .check()
        .await
        .expect("a certificate for another name");
    assert!(reason.contains("not valid for name"), "{reason}");

    // Nothing listening: not a refusal, so the export is tried (and fails as for http://).
    let closed = format!("https://localhost:{}", order_test_support::spare_port());
    let down = CollectorTls::new(&closed, Some(&trusting(pki.ca())), b"h2").unwrap();
    assert_eq!(down.check().await, None);
    assert!(down.ready().await);
}
