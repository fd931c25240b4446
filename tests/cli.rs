//! The command line: version, bad values (one line naming the key, exit code 2), the config
//! file with flags over it, and graceful shutdown on SIGINT/SIGTERM.

mod support;

use std::io::Write;
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
use support::{Broker, RawClient, run_bounded};

const BIN: &str = env!("CARGO_BIN_EXE_ringbroker");

#[test]
fn version_prints_the_crate_version() {
    let (status, stdout, _) = run_bounded(BIN, &["--version"], Duration::from_secs(10));
    assert!(status.success());
    assert_eq!(
        stdout.trim(),
        format!("ringbroker {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_values_fail_with_one_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--node-id", "-4"], "'node-id'"),
        (&["--node-id", "x"], "'node-id'"),
        (&["--listen", "not-an-address"], "'listen'"),
        (
            &["--advertised-listener", "host:70000"],
            "'advertised-listener'",
        ),
        (&["--cores", "4095"], "'cores'"),
        (&["--cores", "2-1"], "'cores'"),
        (&["--log-format", "yaml"], "'log-format'"),
        (
            &["--set", "socket.request.max.bytes=-1"],
            "'socket.request.max.bytes'",
        ),
        (&["--set", "no.such.setting=1"], "'no.such.setting'"),
        (&["--set", "missing-equals"], "missing-equals"),
        (
            &["--config", "/nonexistent/ringbroker.toml"],
            "/nonexistent/ringbroker.toml",
        ),
    ];
    for (args, names) in cases {
        let mut full = vec!["serve", "--data-dir", data];
        if !args.contains(&"--listen") {
            full.extend_from_slice(&["--listen", "127.0.0.1:0"]);
        }
        full.extend_from_slice(args);
        let (status, _, stderr) = run_bounded(BIN, &full, Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        let lines: Vec<_> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: expected one line, got {stderr}");
        assert!(
            lines[0].contains(names),
            "{args:?}: '{}' should name {names}",
            lines[0]
        );
    }
}

#[test]
fn config_file_values_apply_and_flags_override_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    let mut file = std::fs::File::create(&config).unwrap();
    writeln!(file, "node-id = 3").unwrap();
    writeln!(file, "advertised-listener = \"file.example:1111\"").unwrap();
    writeln!(file, "socket.request.max.bytes = 1048576").unwrap();
    drop(file);
    let data = dir.path().join("data");
    let broker = Broker::start_in(
        &data,
        &[
            "--config",
            config.to_str().unwrap(),
            "--advertised-listener",
            "flag.example:2222",
        ],
    );
    let mut client = RawClient::connect(broker.addr);
    let response: MetadataResponse = client.call(ApiKey::Metadata, 12, &MetadataRequest::default());
    assert_eq!(response.controller_id.0, 3, "node-id from the file");
    assert_eq!(
        response.brokers[0].host.as_str(),
        "flag.example",
        "flag wins"
    );
    assert_eq!(response.brokers[0].port, 2222);
    // socket.request.max.bytes from the file: a 2 MiB frame is refused.
    let mut big = RawClient::connect(broker.addr);
    big.send_raw(&(2 * 1024 * 1024i32).to_be_bytes());
    assert!(big.is_closed_by_peer());
}

#[test]
fn a_kafka_server_properties_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kraft-logs");
    let config = dir.path().join("server.properties");
    std::fs::write(
        &config,
        format!(
            "# as Kafka writes it\nnode.id=5\nlog.dirs={}\nnum.partitions=2\n\
             socket.request.max.bytes: 1048576\n",
            data.display()
        ),
    )
    .unwrap();
    // start_in also passes --data-dir (the same directory), and flags win over the file, so
    // log.dirs itself is checked by the config unit tests.
    let broker = Broker::start_in(&data, &["--config", config.to_str().unwrap()]);
    let mut client = RawClient::connect(broker.addr);
    let response: MetadataResponse = client.call(ApiKey::Metadata, 12, &MetadataRequest::default());
    assert_eq!(
        response.controller_id.0, 5,
        "node.id from the properties file"
    );
    let mut big = RawClient::connect(broker.addr);
    big.send_raw(&(2 * 1024 * 1024i32).to_be_bytes());
    assert!(big.is_closed_by_peer());
}

#[test]
fn a_port_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Broker::start_in(&dir.path().join("a"), &[]);
    let other = dir.path().join("b");
    let (status, _, stderr) = run_bounded(
        BIN,
        &[
            "serve",
            "--data-dir",
            other.to_str().unwrap(),
            "--listen",
            &first.bootstrap(),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen on"), "{stderr}");
}

#[test]
fn sigterm_and_sigint_shut_down_cleanly_with_connections_open() {
    for signal in ["TERM", "INT"] {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start_in(dir.path(), &[]);
        let mut idle = RawClient::connect(broker.addr);
        let mut busy = RawClient::connect(broker.addr);
        let _: MetadataResponse = busy.call(ApiKey::Metadata, 12, &MetadataRequest::default());
        let status = broker.stop_with(signal);
        assert!(status.success(), "SIG{signal}: {status:?}");
        assert!(idle.is_closed_by_peer());
        assert!(busy.is_closed_by_peer());
    }
}

#[test]
fn a_data_dir_of_another_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &["--node-id", "1"]);
    assert!(broker.stop().success());
    let (status, _, stderr) = run_bounded(
        BIN,
        &[
            "serve",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--node-id",
            "2",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("belongs to node.id 1"), "{stderr}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut shard_lines = 0;
    let ready = loop {
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(err) => {
                let _ = child.kill();
                panic!("no ready line: {err}");
            }
        };
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if value["fields"]["message"] == "shard started" {
            shard_lines += 1;
            assert!(value["fields"]["core"].is_number(), "{line}");
        }
        if value["fields"]["message"] == "ringbroker ready" {
            break value;
        }
    };
    assert!(shard_lines >= 1);
    assert!(
        ready["fields"]["listen"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let _ = child.kill();
    let _ = child.wait();
}
