//! The metrics endpoint: `/metrics` in Prometheus text with per-shard series that move when
//! clients work, and `/ready`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{Broker, run_bounded};

fn get(addr: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// Sum of a metric's values over every series whose line starts with `prefix`.
fn total(body: &str, prefix: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[test]
fn metrics_and_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &["--set", "metrics-listen=127.0.0.1:0"]);
    let metrics_addr = broker
        .log()
        .iter()
        .find_map(|l| {
            let at = l.find("metrics_listen=")? + "metrics_listen=".len();
            Some(l[at..].split_whitespace().next()?.to_string())
        })
        .expect("the metrics address is logged");

    let (status, body) = get(&metrics_addr, "/ready");
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "ready\n")
    );
    let (status, _) = get(&metrics_addr, "/nowhere");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    // Some work: 200 records produced and read back with kcat.
    let lines: String = (0..200).map(|i| format!("m{i}\n")).collect();
    let input = dir.path().join("input.txt");
    std::fs::write(&input, lines).unwrap();
    let (produced, _, err) = run_bounded(
        "kcat",
        &[
            "-P",
            "-b",
            &broker.bootstrap(),
            "-t",
            "metered",
            "-l",
            input.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert!(produced.success(), "{err}");
    let (consumed, out, err) = run_bounded(
        "kcat",
        &["-C", "-b", &broker.bootstrap(), "-t", "metered", "-e", "-q"],
        Duration::from_secs(30),
    );
    assert!(consumed.success(), "{err}");
    assert_eq!(out.lines().count(), 200);

    let (status, body) = get(&metrics_addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("# TYPE ringbroker_requests_total counter"));
    assert!(total(&body, "ringbroker_requests_total{") >= 4.0, "{body}");
    assert!(
        total(
            &body,
            "ringbroker_requests_total{shard=\"0\",api=\"Produce\"}"
        ) + total(
            &body,
            "ringbroker_requests_total{shard=\"1\",api=\"Produce\"}"
        ) >= 1.0
    );
    assert!(total(&body, "ringbroker_bytes_in_total") > 1000.0);
    assert!(total(&body, "ringbroker_bytes_out_total") > 1000.0);
    assert_eq!(total(&body, "ringbroker_partitions"), 1.0);
    assert!(total(&body, "ringbroker_append_latency_seconds_count") >= 1.0);
    assert!(body.contains("ringbroker_request_latency_seconds{shard="));
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "not a sample: {line}");
    }
}
