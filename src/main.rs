//! The `ringbroker` command: `serve` starts the broker.
//!
//! Owner: the main thread. It parses the command line, builds and validates the configuration,
//! sets up logging, raises the locked-memory limit, opens the data directory and hands over to
//! the shard pool; then it waits for the shards to stop.
//!
//! Exit codes: 0 after a clean shutdown, 2 for a bad command line or configuration value (one
//! line naming the key), 1 when the broker cannot start or a shard fails.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ringbroker::config::{Config, LogFormat};
use ringbroker::metadata::store;
use ringbroker::pool::{self, BrokerSpec, StartError};
use tracing::{info, warn};

#[derive(Debug, Parser)]
#[command(
    name = "ringbroker",
    version,
    about = "A Kafka-API-compatible, thread-per-core event streaming broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the broker.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Config file: TOML, or Java properties (Kafka's server.properties) when its name ends in
    /// `.properties`; flags override its values.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for the metadata log and partition data [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<String>,
    /// Address every shard listens on [default: 127.0.0.1:9092].
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Address given to clients in Metadata [default: the listen address].
    #[arg(long, value_name = "HOST:PORT")]
    advertised_listener: Option<String>,
    /// Cores to run one shard each on, e.g. 0-3 or 0,2 [default: all online cores].
    #[arg(long, value_name = "LIST")]
    cores: Option<String>,
    /// This broker's node id [default: 0].
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    node_id: Option<String>,
    /// Log filter when RUST_LOG is unset, e.g. info or ringbroker=debug [default: info].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Log line format: text or json [default: text].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Any setting by its key, e.g. --set socket.request.max.bytes=1048576 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
}

impl ServeArgs {
    /// `--set` pairs first, then the dedicated flags, so a flag wins over `--set` of the same key.
    fn overrides(&self) -> Result<Vec<(String, String)>, ringbroker::config::ConfigError> {
        let mut pairs = Vec::new();
        for setting in &self.settings {
            let (key, value) = setting
                .split_once('=')
                .ok_or_else(|| ringbroker::config::ConfigError::MalformedSet(setting.clone()))?;
            pairs.push((key.trim().to_string(), value.to_string()));
        }
        let flags = [
            ("data-dir", &self.data_dir),
            ("listen", &self.listen),
            ("advertised-listener", &self.advertised_listener),
            ("cores", &self.cores),
            ("node-id", &self.node_id),
            ("log-level", &self.log_level),
            ("log-format", &self.log_format),
        ];
        for (key, value) in flags {
            if let Some(value) = value {
                pairs.push((key.to_string(), value.clone()));
            }
        }
        Ok(pairs)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let config = match args
        .overrides()
        .and_then(|pairs| Config::load(args.config.as_deref(), &pairs))
    {
        Ok(config) => config,
        Err(err) => {
            eprintln!("ringbroker: {err}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = init_logging(&config) {
        eprintln!("ringbroker: {err:#}");
        return ExitCode::from(2);
    }
    let cores = match pool::select_cores(&config) {
        Ok(cores) => cores,
        Err(err) => {
            eprintln!("ringbroker: {err}");
            return ExitCode::from(2);
        }
    };
    match run(config, &cores) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("ringbroker: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn run(config: Config, cores: &[usize]) -> anyhow::Result<bool> {
    raise_memlock_limit();
    raise_open_files_limit();
    let (identity, metadata, image) = if config.quorum.voters.is_empty() {
        let identity = store::load_or_create_identity(&config.data_dir, config.node_id)?;
        let (metadata_store, image) = store::MetadataStore::open(&config.data_dir)?;
        (identity, pool::MetadataParts::Local(metadata_store), image)
    } else {
        let cluster = ringbroker::broker::quorum::cluster_id(&config);
        let identity =
            store::load_or_create_identity_in(&config.data_dir, config.node_id, Some(cluster))?;
        let (parts, image) =
            ringbroker::broker::quorum::open(&config).map_err(anyhow::Error::msg)?;
        (
            identity,
            pool::MetadataParts::Quorum(Box::new(parts)),
            image,
        )
    };
    ringbroker::storage::manager::remove_deleted_leftovers(&config.data_dir);
    info!(
        version = env!("CARGO_PKG_VERSION"),
        node_id = identity.node_id,
        cluster_id = %identity.cluster_id,
        data_dir = %config.data_dir.display(),
        topics = image.topics.len(),
        shards = cores.len(),
        "starting ringbroker"
    );
    let spec = BrokerSpec {
        config,
        identity,
        image,
        on_shard_ready: None,
    };
    let broker = pool::start(spec, metadata, cores, true).map_err(|err| match err {
        StartError::Executor { .. } => anyhow::Error::new(err),
        other => anyhow::Error::new(other).context("start failed"),
    })?;
    // Tests and scripts wait for this line to learn the bound port.
    let listeners: Vec<String> = broker
        .listeners
        .iter()
        .map(|(name, addr)| format!("{name}://{addr}"))
        .collect();
    info!(
        listen = %broker.listen_addr,
        advertised = %broker.advertised,
        listeners = %listeners.join(","),
        "ringbroker ready"
    );
    let clean = broker.wait();
    info!(clean, "ringbroker stopped");
    Ok(clean)
}

/// glommio's io_uring rings and registered buffers count against RLIMIT_MEMLOCK. Raise the
/// soft limit to the hard limit, and both to unlimited where the process may. Where it may not,
/// glommio may still start (CAP_IPC_LOCK, or a large enough limit); if it cannot, the start
/// error says what to run.
fn raise_memlock_limit() {
    use rlimit::Resource;
    let Ok((soft, hard)) = Resource::MEMLOCK.get() else {
        return;
    };
    if Resource::MEMLOCK
        .set(rlimit::INFINITY, rlimit::INFINITY)
        .is_ok()
    {
        return;
    }
    if soft < hard
        && let Err(err) = Resource::MEMLOCK.set(hard, hard)
    {
        warn!(%err, "cannot raise RLIMIT_MEMLOCK");
    }
    let soft = Resource::MEMLOCK.get().map_or(soft, |(s, _)| s);
    info!(
        memlock_bytes = soft,
        "locked-memory limit could not be lifted; using it"
    );
}

/// Every connection and every open segment, index and time index costs a descriptor. Raise the
/// soft RLIMIT_NOFILE to the hard limit; `max.connections` is then capped below what is left,
/// so connections can never take the descriptors the logs need (`net::admission`).
fn raise_open_files_limit() {
    use rlimit::Resource;
    let Ok((soft, hard)) = Resource::NOFILE.get() else {
        return;
    };
    if soft < hard
        && let Err(err) = Resource::NOFILE.set(hard, hard)
    {
        warn!(%err, soft, hard, "cannot raise RLIMIT_NOFILE");
    }
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => {
            EnvFilter::try_new(&value).with_context(|| format!("invalid RUST_LOG '{value}'"))?
        }
        _ => EnvFilter::try_new(&config.log_level)
            .with_context(|| format!("invalid value '{}' for 'log-level'", config.log_level))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_thread_names(true);
    let result = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|err| anyhow::anyhow!("cannot set up logging: {err}"))
}
