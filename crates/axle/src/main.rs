//! The `axle` binary: parses arguments and starts the component asked for. All logic lives in
//! the library crates; this file only wires them to the command line.

mod bundle;
mod footprint;
mod image;
mod self_update;
mod up;
mod wear;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "axle", about = "Axle: the automotive control plane (Kubernetes API for cars)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Kubernetes-compatible API server with its embedded store.
    Server(ServerArgs),
    /// Run the node agent of one computer of the car (registers its Node, heartbeats a Lease).
    Agent(AgentArgs),
    /// Run a whole simulated car on this machine (server, agents and sample workloads).
    Up(UpArgs),
    /// Create or update objects from manifest files (server-side apply).
    Apply(ApplyArgs),
    /// Show objects, as tables (or JSON), like `kubectl get`.
    Get(GetArgs),
    /// Images in the car's own registry.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Node join: approve a registered node's new join, rotate the bootstrap token.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Run a simulated ECU: a DoIP entity with a UDS server and a bootloader (flash bank in a file).
    EcuSim(EcuSimArgs),
    /// Reprogram one ECU over DoIP/UDS with a firmware image, then read its version back.
    EcuFlash(EcuFlashArgs),
    /// Run the ECU gateway: one Node per ECU, firmware Pods flashed over DoIP/UDS.
    EcuGateway(EcuGatewayArgs),
    /// Offline update bundles: keys, trust root, create, sign, verify, inspect, apply.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// Run `axle ARGS…` from the active A/B slot, or a new version on trial with automatic
    /// fallback (`axle launch -- server …`).
    Launch(self_update::LaunchArgs),
    /// This binary's version, and the A/B slots when there are.
    Version {
        /// The data directory whose slots to show. [default: the launcher's, else as `axle server`]
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Axle's own updates: the A/B slots and the trial.
    #[command(subcommand)]
    Selfupdate(self_update::SelfUpdateCommand),
    /// Release tooling: a copy of an Axle build that reports another version.
    Stamp(self_update::StampArgs),
    /// Write a kubeconfig for a user, with a client certificate from the car's CA (run on the
    /// server's computer: it reads DATA_DIR/pki). CN = the user, O = the groups.
    Kubeconfig {
        /// The user's name, e.g. `alice`.
        user: String,
        /// A group of the user (repeatable, at most two), e.g. `axle:viewers`, `axle:admins`,
        /// `axle:update-services`.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// The server's data directory. [default: as `axle server`]
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// How long the certificate is valid, in seconds.
        #[arg(long, default_value_t = 365 * 24 * 3600)]
        valid_for_seconds: u64,
        /// Where to write the kubeconfig (mode 0600).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// What the car writes to flash, by component and cause, per day and against a flash
    /// part's endurance.
    Wear {
        /// How long to watch the car's write counters.
        #[arg(long, default_value_t = 30)]
        window_seconds: u64,
        /// The flash part's size, e.g. `8GiB`.
        #[arg(long, default_value = "8GiB", value_parser = wear::parse_size)]
        flash_size: u64,
        /// Its rated program/erase cycles.
        #[arg(long, default_value_t = 3000)]
        pe_cycles: u64,
        /// The life the car must reach, in years.
        #[arg(long, default_value_t = 15.0)]
        years: f64,
        /// `json` for one document.
        #[arg(short, long)]
        output: Option<String>,
        /// The kubeconfig to use. [default: $KUBECONFIG]
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
    /// What the car has installed and runs: bundle targets, images per node, ECU firmware.
    Inventory {
        /// `json` for one document.
        #[arg(short, long)]
        output: Option<String>,
        /// The kubeconfig to use. [default: $KUBECONFIG]
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct EcuGatewayArgs {
    #[command(flatten)]
    connection: Connection,
    /// The ECUs: `ecus: [{name, address, logicalAddress, testerAddress, hardwareId}]`.
    #[arg(long)]
    config: PathBuf,
    /// Where the gateway remembers the firmware each ECU runs.
    #[arg(long)]
    data_dir: PathBuf,
    /// Seconds between alive checks (and lease renewals).
    #[arg(long, default_value_t = 5)]
    heartbeat_seconds: u64,
}

#[derive(clap::Args)]
struct EcuSimArgs {
    /// TCP and UDP address of the DoIP entity.
    #[arg(long, default_value = "127.0.0.1:13400")]
    listen: SocketAddr,
    /// The ECU's logical address (hex like 0x0E80, or decimal).
    #[arg(long, value_parser = parse_address)]
    logical_address: u16,
    /// The flash bank (created with a small image if missing).
    #[arg(long)]
    flash: PathBuf,
    /// Software version of the bank's initial content (DID F189).
    #[arg(long, default_value = "1.0.0")]
    sw_version: String,
    #[arg(long, default_value = "WAXLE000000000001")]
    vin: String,
    #[arg(long, default_value = "SIM-0001")]
    serial: String,
    /// maxNumberOfBlockLength announced for downloads (counts SID and counter).
    #[arg(long, default_value_t = 4092)]
    max_block_length: u64,
    /// How long the erase routine takes (answered with response-pending meanwhile).
    #[arg(long, default_value_t = 200)]
    erase_ms: u64,
    /// Fault: close the connection after N TransferData blocks (once).
    #[arg(long)]
    drop_after_blocks: Option<u64>,
    /// Fault: answer a service with an NRC, `SID:NRC` in hex (e.g. 27:35 = invalid key). Repeatable.
    #[arg(long = "nrc", value_parser = parse_forced_nrc)]
    nrcs: Vec<(u8, u8)>,
    /// Fault: the check-programming-dependencies routine rejects every image.
    #[arg(long)]
    corrupt_checksum: bool,
    /// Two flash banks (FLASH and FLASH.b): a new image goes to the inactive one and becomes
    /// active at reset, so an interrupted update never touches the running image.
    #[arg(long)]
    ab_banks: bool,
}

#[derive(clap::Args)]
struct EcuFlashArgs {
    /// The firmware image.
    image: PathBuf,
    /// The DoIP entity (host:port).
    #[arg(long)]
    target: SocketAddr,
    /// The ECU's logical address.
    #[arg(long, value_parser = parse_address)]
    ecu_address: u16,
    /// This tester's logical address.
    #[arg(long, value_parser = parse_address, default_value = "0x0E80")]
    tester_address: u16,
    /// The version the ECU must report afterwards (DID F189).
    #[arg(long)]
    expect_version: Option<String>,
}

fn parse_address(text: &str) -> Result<u16, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|e| format!("{text:?} is not a 16-bit address: {e}"))
}

fn parse_forced_nrc(text: &str) -> Result<(u8, u8), String> {
    let (service, code) = text.split_once(':').ok_or_else(|| format!("{text:?} is not SID:NRC"))?;
    let hex = |t: &str| u8::from_str_radix(t.trim_start_matches("0x"), 16).map_err(|e| format!("{t:?}: {e}"));
    Ok((hex(service)?, hex(code)?))
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Let a registered node join again with the bootstrap token, once (its data directory was
    /// wiped, its computer replaced). Nodes not registered yet need no approval.
    Approve {
        /// The node's name.
        name: String,
        /// The kubeconfig to use. [default: $KUBECONFIG]
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
    /// The bootstrap token.
    #[command(subcommand)]
    Token(NodeTokenCommand),
}

#[derive(Subcommand)]
enum NodeTokenCommand {
    /// Replace the bootstrap token (run on the server's computer; the server takes the new one
    /// at its next use, the old one stops working at once). Prints the new token.
    Rotate {
        /// The server's data directory. [default: as `axle server`]
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// How long the new token is valid, in seconds (0: until rotated again).
        #[arg(long, default_value_t = 7 * 24 * 3600)]
        ttl_seconds: u64,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Push an OCI image layout (directory or tar) or a `docker save` archive to the registry.
    Import {
        /// The layout directory, or the tar file.
        path: PathBuf,
        /// The repository (and tag) to import as, where the source names only a tag
        /// (`umoci`, `skopeo … oci:DIR:TAG`). [default: the file's name]
        #[arg(long)]
        name: Option<String>,
        /// The kubeconfig to use. [default: $KUBECONFIG]
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
    /// List the images in the registry.
    #[command(alias = "ls")]
    List {
        /// The kubeconfig to use. [default: $KUBECONFIG]
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
}

/// How a component of a computer of the car reaches the API server. These flags are a
/// contract with tools outside this repository.
#[derive(clap::Args)]
struct Connection {
    /// URL of the API server (e.g. https://10.0.0.1:6443).
    #[arg(long, required_unless_present = "kubeconfig")]
    server: Option<String>,
    /// The car's CA certificate, which the server's certificate must chain to (the server
    /// writes DATA_DIR/pki/ca.crt). Required for https.
    #[arg(long, requires = "server")]
    ca_file: Option<PathBuf>,
    /// File with the bootstrap token (the server writes DATA_DIR/node-token), presented once
    /// to obtain this node's certificate (kept in the data directory, renewed by itself).
    #[arg(long, requires = "server")]
    token_file: Option<PathBuf>,
    /// A kubeconfig instead of --server/--token-file.
    #[arg(long, conflicts_with = "server")]
    kubeconfig: Option<PathBuf>,
}

#[derive(clap::Args)]
struct AgentArgs {
    #[command(flatten)]
    connection: Connection,
    /// The name of this computer's Node.
    #[arg(long)]
    node_name: String,
    /// Where the agent keeps its local state.
    #[arg(long)]
    data_dir: PathBuf,
    /// Extra node labels, `key=value,key=value`.
    #[arg(long, default_value = "")]
    labels: String,
    /// Seconds between lease renewals.
    #[arg(long, default_value_t = 10)]
    heartbeat_seconds: u64,
    /// Where container logs are kept: `memory` (a RAM file system, bounded per container; no
    /// flash wear, gone after a reboot) or `disk` (the data directory; every line is written).
    #[arg(long, default_value = "memory")]
    log_storage: agent::LogStorage,
    #[command(flatten)]
    otlp: OtlpArgs,
}

/// OpenTelemetry export of this process's logs and metrics (and, from an agent, its
/// containers' logs).
#[derive(clap::Args)]
struct OtlpArgs {
    /// OTLP/HTTP endpoint to export to (e.g. http://collector:4318); nothing is exported without.
    #[arg(long)]
    otlp_endpoint: Option<String>,
    /// Seconds between log exports.
    #[arg(long, default_value_t = 5)]
    otlp_interval_seconds: u64,
    /// Seconds between metric exports.
    #[arg(long, default_value_t = 60)]
    otlp_metrics_interval_seconds: u64,
    /// Disk the offline buffer may take (KiB); beyond, the oldest telemetry is dropped.
    #[arg(long, default_value_t = 64 * 1024)]
    otlp_buffer_kib: u64,
    /// The vehicle's identity in exported telemetry (`vehicle.id`). [default: the machine id]
    #[arg(long)]
    vehicle_id: Option<String>,
}

impl OtlpArgs {
    /// The export configuration, if an endpoint is set: `service` names the process, `node`
    /// the computer; the buffer lives in `DATA_DIR/telemetry`.
    fn config(&self, service: &str, node: &str, data_dir: &std::path::Path) -> Option<telemetry::export::ExportConfig> {
        let endpoint = self.otlp_endpoint.clone()?;
        let vehicle = self.vehicle_id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/machine-id").map(|id| id.trim().to_string()).unwrap_or_default()
        });
        Some(telemetry::export::ExportConfig {
            endpoint,
            resource: vec![
                ("service.name".into(), service.into()),
                ("service.version".into(), env!("CARGO_PKG_VERSION").into()),
                ("k8s.node.name".into(), node.into()),
                ("vehicle.id".into(), vehicle),
            ],
            buffer_dir: data_dir.join("telemetry"),
            buffer_limit: self.otlp_buffer_kib.max(16) * 1024,
            interval: std::time::Duration::from_secs(self.otlp_interval_seconds.max(1)),
            metrics_interval: std::time::Duration::from_secs(self.otlp_metrics_interval_seconds.max(1)),
        })
    }
}

#[derive(clap::Args)]
struct UpArgs {
    /// Where the simulated car keeps its state and logs. [default: $XDG_DATA_HOME/axle-up]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the car's API server.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
}

#[derive(clap::Args)]
struct GetArgs {
    /// The resource type: `pods`, `po`, `deployments`, `nodes`, a CRD's plural, …
    resource: String,
    /// One object's name (all objects when omitted).
    name: Option<String>,
    /// Namespace of namespaced resources. [default: the kubeconfig's]
    #[arg(short, long)]
    namespace: Option<String>,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Label selector, e.g. `app=nav,tier!=db`.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// `wide` for more columns, `json` for the objects.
    #[arg(short, long)]
    output: Option<String>,
    /// The kubeconfig to use. [default: $KUBECONFIG]
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ApplyArgs {
    /// Manifest files or directories (YAML or JSON; `-` reads standard input).
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// The kubeconfig to use. [default: $KUBECONFIG]
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Where the store, admin.kubeconfig and node-token live.
    /// [default: /var/lib/axle as root, else $XDG_DATA_HOME/axle]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address the API listens on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Changes kept for watches to resume from; older resourceVersions get 410 Expired.
    #[arg(long, default_value_t = store::Options::default().change_log_capacity)]
    change_log_capacity: u64,
    /// Seconds without a lease renewal after which a node is marked NotReady.
    #[arg(long, default_value_t = 40)]
    node_grace_seconds: u64,
    /// Root metadata to pin as this car's update trust root (first use), or the pinned root's
    /// successor (rotation). Kept in DATA_DIR/trust/root.json.
    #[arg(long)]
    trust_root: Option<PathBuf>,
    /// A directory watched for update bundles (`*.axb`), e.g. where a USB stick is mounted.
    #[arg(long)]
    bundle_dir: Option<PathBuf>,
    /// Where `file` targets of bundles are installed. [default: DATA_DIR/files]
    #[arg(long)]
    files_dir: Option<PathBuf>,
    /// Serve plain HTTP with no authentication or authorization, to anyone who can reach the
    /// address (development only; logs a warning).
    #[arg(long)]
    insecure_http: bool,
    /// Another name or address for the serving certificate (repeatable), e.g. the address
    /// other computers of the car reach the server at through NAT.
    #[arg(long = "tls-san", value_name = "NAME_OR_IP")]
    tls_sans: Vec<String>,
    /// A Kubernetes static token file: lines `token,user,uid,"group1,group2"`.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// Longest lifetime of a node certificate, in seconds; nodes renew at two thirds of it.
    #[arg(long, default_value_t = 365 * 24 * 3600)]
    node_cert_validity_seconds: u64,
    /// Audiences a ServiceAccount token must be meant for to be accepted by the API
    /// (comma-separated; default: the token issuer, https://axle.local). Tokens requested for
    /// other audiences work for those services only.
    #[arg(long, value_delimiter = ',')]
    api_audiences: Vec<String>,
    /// A node label prefix only administrators may set, beyond node-restriction.kubernetes.io/,
    /// node-role.kubernetes.io/ and safety.axle.dev/ (repeatable; a key without `/` protects
    /// the keys that start with it, e.g. `safety`).
    #[arg(long = "protected-node-label-prefix")]
    protected_node_label_prefixes: Vec<String>,
    /// How long the bootstrap token (`DATA_DIR/node-token`) is valid from its creation, in
    /// seconds (0: until `axle node token rotate`).
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    bootstrap_token_ttl_seconds: u64,
    /// Before serving, rebuild the store from what still reads back of it (for a store refused
    /// as damaged): the damaged files are kept aside, and what could not be read is listed.
    #[arg(long)]
    recover: bool,
    #[command(flatten)]
    otlp: OtlpArgs,
}

fn default_data_dir() -> PathBuf {
    // Root is told by the effective uid of this process, read from /proc.
    let is_root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false);
    if is_root {
        return PathBuf::from("/var/lib/axle");
    }
    user_data_dir().join("axle")
}

/// This computer's host name (the server's `k8s.node.name` in exported telemetry).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// `$XDG_DATA_HOME`, else `~/.local/share`.
fn user_data_dir() -> PathBuf {
    match std::env::var_os("XDG_DATA_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".local/share"),
    }
}

/// Logs go to stderr; `AXLE_LOG` sets the level, globally (`debug`) or per crate
/// (`info,apiserver=debug`). Invalid values fall back to `info` with a warning.
/// With `capture`, the same events also go to the OTLP exporter's log sink.
fn init_logging(capture: Option<telemetry::export::LogSink>) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let spec = std::env::var("AXLE_LOG").unwrap_or_default();
    let default = || Targets::new().with_default(tracing::Level::INFO);
    let (filter, invalid) = match spec.parse::<Targets>() {
        _ if spec.is_empty() => (default(), false),
        Ok(targets) => (targets, false),
        Err(_) => (default(), true),
    };
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(capture.map(telemetry::capture::CaptureLayer::new))
        .with(filter)
        .init();
    if invalid {
        tracing::warn!(value = %spec, "AXLE_LOG is not a valid filter (e.g. `debug` or `info,apiserver=debug`); using info");
    }
}

/// Errors end the process with one line, the causes chained: `axle: cannot apply x.yaml: …`.
fn main() -> std::process::ExitCode {
    let started = Instant::now();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Server(_) | Command::Agent(_)) {
        self_update::apply_start_faults();
    }
    let long_running = matches!(
        cli.command,
        Command::Server(_)
            | Command::Agent(_)
            | Command::Up(_)
            | Command::Launch(_)
            | Command::EcuSim(_)
            | Command::EcuGateway(_)
    );
    if !long_running {
        // A command whose output is cut (`axle get pods | head -1`) ends quietly, as other
        // Unix tools do, instead of panicking on the closed pipe. (Services keep Rust's default:
        // a closed socket or pipe is an error they handle.)
        // SAFETY: restoring a signal's default disposition at start, before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let exports = match &cli.command {
        Command::Server(args) => args.otlp.otlp_endpoint.is_some(),
        Command::Agent(args) => args.otlp.otlp_endpoint.is_some(),
        _ => false,
    };
    let log_sink = exports.then(telemetry::export::LogSink::default);
    init_logging(log_sink.clone());
    match run(cli, started, log_sink) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("axle: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, started: Instant, log_sink: Option<telemetry::export::LogSink>) -> anyhow::Result<()> {
    match cli.command {
        Command::Server(args) => run_server(args, started, log_sink),
        Command::Launch(args) => {
            let code = self_update::launch(args, default_data_dir())?;
            std::process::exit(code);
        }
        Command::Version { data_dir } => self_update::version(data_dir),
        Command::Selfupdate(self_update::SelfUpdateCommand::Status(args)) => {
            self_update::status(args, default_data_dir())
        }
        Command::Stamp(args) => self_update::stamp(args),
        Command::Agent(args) => single_threaded()?.block_on(run_agent(args, log_sink)),
        Command::Up(args) => {
            let data_dir = args.data_dir.unwrap_or_else(|| user_data_dir().join("axle-up"));
            single_threaded()?.block_on(up::run(data_dir, args.listen))
        }
        Command::Apply(args) => single_threaded()?.block_on(apply(args)),
        Command::Get(args) => single_threaded()?.block_on(get(args)),
        Command::Image(ImageCommand::Import { path, name, kubeconfig }) => single_threaded()?.block_on(async move {
            let client = client::Client::new(client::Config::from_kubeconfig(&kubeconfig_path(kubeconfig)?)?);
            image::import(&client, &path, name.as_deref()).await
        }),
        Command::EcuSim(args) => single_threaded()?.block_on(async move {
            let config = ecu::sim::SimConfig {
                listen: args.listen,
                logical_address: args.logical_address,
                flash: args.flash,
                sw_version: args.sw_version,
                vin: args.vin,
                serial: args.serial,
                max_block_length: args.max_block_length,
                erase_delay: std::time::Duration::from_millis(args.erase_ms),
                drop_after_blocks: args.drop_after_blocks,
                forced_nrc: args.nrcs.into_iter().collect(),
                corrupt_checksum: args.corrupt_checksum,
                ab_banks: args.ab_banks,
            };
            tokio::select! {
                result = ecu::sim::run(config) => result.map_err(anyhow::Error::from),
                signal = wait_for_signal() => signal,
            }
        }),
        Command::EcuFlash(args) => single_threaded()?.block_on(ecu_flash(args)),
        Command::EcuGateway(args) => single_threaded()?.block_on(ecu_gateway(args)),
        Command::Bundle(command) => single_threaded()?.block_on(bundle::run(command)),
        Command::Kubeconfig { user, groups, data_dir, valid_for_seconds, output } => {
            let data_dir = data_dir.unwrap_or_else(default_data_dir);
            let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
            let validity = std::time::Duration::from_secs(valid_for_seconds.max(1));
            let text = apiserver::user_kubeconfig(&data_dir, &user, &groups, validity)?;
            pki::write_durably(&output, text.as_bytes(), 0o600)
                .with_context(|| format!("cannot write {}", output.display()))?;
            Ok(())
        }
        Command::Wear { window_seconds, flash_size, pe_cycles, years, output, kubeconfig } => single_threaded()?
            .block_on(async move {
                let client = client::Client::new(client::Config::from_kubeconfig(&kubeconfig_path(kubeconfig)?)?);
                let flash = wear::Flash { size_bytes: flash_size, pe_cycles: pe_cycles.max(1), years };
                let window = std::time::Duration::from_secs(window_seconds.max(1));
                wear::report(&client, window, &flash, output.as_deref() == Some("json")).await
            }),
        Command::Node(NodeCommand::Approve { name, kubeconfig }) => single_threaded()?.block_on(async move {
            let client = client::Client::new(client::Config::from_kubeconfig(&kubeconfig_path(kubeconfig)?)?);
            let patch =
                serde_json::json!({"metadata": {"annotations": {apiserver::JOIN_APPROVED: api::meta::now_rfc3339()}}});
            match client.merge_patch(&format!("/api/v1/nodes/{name}"), &patch).await {
                Ok(_) => println!("node/{name} may join again once with the bootstrap token"),
                Err(e) if e.is_not_found() => {
                    println!("node/{name} is not registered: it may join with the bootstrap token as it is")
                }
                Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot approve node {name}"))),
            }
            Ok(())
        }),
        Command::Node(NodeCommand::Token(NodeTokenCommand::Rotate { data_dir, ttl_seconds })) => {
            let data_dir = data_dir.unwrap_or_else(default_data_dir);
            let ttl = (ttl_seconds > 0).then(|| std::time::Duration::from_secs(ttl_seconds));
            let token = apiserver::rotate_node_token(&data_dir, ttl)?;
            println!("{token}");
            Ok(())
        }
        Command::Inventory { output, kubeconfig } => single_threaded()?.block_on(async move {
            let client = client::Client::new(client::Config::from_kubeconfig(&kubeconfig_path(kubeconfig)?)?);
            bundle::inventory(&client, output.as_deref()).await
        }),
        Command::Image(ImageCommand::List { kubeconfig }) => single_threaded()?.block_on(async move {
            let client = client::Client::new(client::Config::from_kubeconfig(&kubeconfig_path(kubeconfig)?)?);
            image::list(&client).await
        }),
    }
}

/// One thread serves each process: a car's control plane is small, and one thread keeps both
/// the footprint and the start time low. (The store writes from its own thread.)
fn single_threaded() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
}

pub(crate) fn kubeconfig_path(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    flag.or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
        .context("no kubeconfig: pass --kubeconfig or set KUBECONFIG (axle server writes DATA_DIR/admin.kubeconfig)")
}

/// How a node-side component connects: it joins with the bootstrap token and its own node
/// certificate (kept under `data_dir/pki`), or uses a kubeconfig as it is.
enum NodeConnection {
    Join(client::join::Join),
    Kubeconfig(client::Config),
}

fn node_connection(connection: &Connection, data_dir: &std::path::Path) -> anyhow::Result<NodeConnection> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read_to_string(path).with_context(|| format!("cannot read the {what} {}", path.display()))
    };
    match (connection.kubeconfig.as_deref(), connection.server.as_deref()) {
        (Some(path), _) => Ok(NodeConnection::Kubeconfig(client::Config::from_kubeconfig(path)?)),
        (None, Some(server)) => {
            let bootstrap_token = match &connection.token_file {
                Some(path) => Some(read(path, "token file")?.trim().to_string()),
                None => None,
            };
            let ca_pem = match &connection.ca_file {
                Some(path) => Some(read(path, "CA file")?),
                None => None,
            };
            Ok(NodeConnection::Join(client::join::Join {
                server: server.trim_end_matches('/').to_string(),
                ca_pem,
                bootstrap_token,
                pki_dir: data_dir.join("pki"),
            }))
        }
        (None, None) => anyhow::bail!("pass --server (with --ca-file and --token-file) or --kubeconfig"),
    }
}

async fn ecu_gateway(args: EcuGatewayArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let connection = match node_connection(&args.connection, &args.data_dir)? {
        NodeConnection::Join(join) => gateway::Connection::PerNode(join),
        NodeConnection::Kubeconfig(config) => {
            gateway::Connection::Shared(std::sync::Arc::new(client::Client::new(config)))
        }
    };
    let heartbeat = std::time::Duration::from_secs(args.heartbeat_seconds.max(1));
    let config = gateway::Config::from_file(&args.config, args.data_dir, heartbeat)?;
    tracing::info!(ecus = config.ecus.len(), "ECU gateway starting");
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let run = gateway::run(config, connection, shutdown);
    tokio::pin!(run);
    tokio::select! {
        _ = &mut run => {}
        signal = wait_for_signal() => {
            signal?;
            let _ = stop.send(true);
            run.await;
        }
    }
    Ok(())
}

async fn run_agent(mut args: AgentArgs, log_sink: Option<telemetry::export::LogSink>) -> anyhow::Result<()> {
    // Runtimes are handed paths inside it (OCI bundles, rootfs): they must not depend on the
    // working directory.
    args.data_dir = std::path::absolute(&args.data_dir)
        .with_context(|| format!("cannot resolve the data directory {}", args.data_dir.display()))?;
    let mut labels = std::collections::BTreeMap::new();
    for pair in args.labels.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').with_context(|| format!("--labels: {pair:?} is not key=value"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let (client, endpoint_tls) = match node_connection(&args.connection, &args.data_dir)? {
        NodeConnection::Kubeconfig(config) => (std::sync::Arc::new(client::Client::new(config)), None),
        NodeConnection::Join(join) => {
            let node = join.node_client(&args.node_name, true)?;
            if let Some(renewal) = node.renewal {
                tokio::spawn(renewal.run(shutdown.clone()));
            }
            let endpoint_tls = match (&join.ca_pem, node.serving) {
                (Some(ca), Some(identity)) => Some(pki::endpoint_server_config(ca, identity)?),
                _ => None,
            };
            (node.client, endpoint_tls)
        }
    };
    let restart = std::sync::Arc::new(tokio::sync::Notify::new());
    let launched = selfupdate::launcher::launched().map(|(slots, slot, trial)| agent::SelfUpdate {
        slots,
        slot,
        trial,
        restart: restart.clone(),
    });
    let telemetry = match (args.otlp.config("axle-agent", &args.node_name, &args.data_dir), log_sink) {
        (Some(export), Some(sink)) => Some(agent::Telemetry { export, sink }),
        _ => None,
    };
    let log_dir = args.log_storage.dir(&args.data_dir).map_err(|e| anyhow::anyhow!("--log-storage: {e}"))?;
    let agent = agent::Agent::new(
        agent::Config {
            node_name: args.node_name,
            labels,
            log_dir,
            data_dir: args.data_dir,
            heartbeat: std::time::Duration::from_secs(args.heartbeat_seconds.max(1)),
            telemetry,
            self_update: launched.clone(),
            endpoint_tls,
        },
        client,
    )?;
    let run = agent.run(shutdown);
    tokio::pin!(run);
    // An idle agent holds only what its work needs, once registered.
    footprint::release_startup_memory_now_and_once_settled();
    tokio::select! {
        result = &mut run => result?,
        signal = wait_for_signal() => {
            signal?;
            let _ = stop.send(true);
            run.await?;
        }
        _ = restart.notified() => {
            let _ = stop.send(true);
            run.await?;
            // The launcher starts the version the boot record names now.
            std::process::exit(selfupdate::launcher::RESTART);
        }
    }
    Ok(())
}

async fn ecu_flash(args: EcuFlashArgs) -> anyhow::Result<()> {
    let image = std::fs::read(&args.image).with_context(|| format!("cannot read {}", args.image.display()))?;
    let target = ecu::flasher::Target {
        address: args.target,
        tester_address: args.tester_address,
        ecu_address: args.ecu_address,
    };
    let started = Instant::now();
    let total = image.len();
    let mut last_percent = u64::MAX;
    let report = ecu::flasher::flash(
        &target,
        &ecu::flasher::Timing::default(),
        &ecu::keys::DemoKey,
        &image,
        args.expect_version.as_deref(),
        &mut |progress| match progress {
            ecu::flasher::Progress::Phase(phase) => eprintln!("{phase}…"),
            ecu::flasher::Progress::Bytes { sent, total } => {
                let percent = sent * 100 / total.max(1);
                if percent / 10 != last_percent / 10 {
                    eprintln!("  {sent}/{total} bytes ({percent}%)");
                    last_percent = percent;
                }
            }
        },
    )
    .await
    .with_context(|| format!("cannot flash the ECU at {}", args.target))?;
    println!(
        "flashed {total} bytes in {:.1} s: version {} → {} (payload/wire {:.3})",
        started.elapsed().as_secs_f64(),
        report.version_before,
        report.version_after,
        report.payload_bytes as f64 / report.wire_bytes.max(1) as f64
    );
    Ok(())
}

async fn get(args: GetArgs) -> anyhow::Result<()> {
    let config = client::Config::from_kubeconfig(&kubeconfig_path(args.kubeconfig)?)?;
    let default_namespace = config.namespace.clone();
    let client = client::Client::new(config);
    let (prefix, plural, namespaced) = client.resolve_resource(&args.resource).await?;
    let across = namespaced && args.all_namespaces && args.name.is_none();
    let mut path = match (namespaced, across) {
        (true, false) => format!("{prefix}/namespaces/{}/{plural}", args.namespace.unwrap_or(default_namespace)),
        _ => format!("{prefix}/{plural}"),
    };
    if let Some(name) = &args.name {
        path.push('/');
        path.push_str(name);
    }
    if let Some(selector) = &args.selector {
        path.push_str(&format!(
            "?labelSelector={}",
            selector.replace('=', "%3D").replace(',', "%2C").replace('!', "%21")
        ));
    }
    match args.output.as_deref() {
        Some("json") => println!("{}", serde_json::to_string_pretty(&client.get(&path).await?)?),
        Some("wide") | None => {
            let table = client.get_table(&path).await?;
            let text = client::table::render(&table, args.output.is_some(), across);
            if text.is_empty() {
                eprintln!("No resources found.");
            } else {
                print!("{text}");
            }
        }
        Some(other) => anyhow::bail!("unknown output format {other:?}: use wide or json"),
    }
    Ok(())
}

async fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let config = client::Config::from_kubeconfig(&kubeconfig_path(args.kubeconfig)?)?;
    let client = client::Client::new(config);
    for source in &args.files {
        for (origin, text) in read_manifest_sources(source)? {
            let manifests = client::parse_manifests(&text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
            for manifest in manifests {
                let applied =
                    client.apply(&manifest, "axle").await.with_context(|| format!("{origin}: cannot apply"))?;
                let kind = applied["kind"].as_str().unwrap_or("object").to_lowercase();
                println!("{kind}/{} applied", applied["metadata"]["name"].as_str().unwrap_or(""));
            }
        }
    }
    Ok(())
}

/// The text of a manifest file, of every .yaml/.yml/.json file of a directory, or of stdin.
fn read_manifest_sources(source: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    if source.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("cannot read standard input")?;
        return Ok(vec![("<stdin>".into(), text)]);
    }
    if source.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(source)
            .with_context(|| format!("cannot read {}", source.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")))
            .collect();
        files.sort();
        return files
            .iter()
            .map(|f| {
                Ok((
                    f.display().to_string(),
                    std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?,
                ))
            })
            .collect();
    }
    Ok(vec![(
        source.display().to_string(),
        std::fs::read_to_string(source).with_context(|| format!("cannot read {}", source.display()))?,
    )])
}

fn run_server(args: ServerArgs, started: Instant, log_sink: Option<telemetry::export::LogSink>) -> anyhow::Result<()> {
    let started_at = std::time::SystemTime::now();
    single_threaded()?.block_on(async move {
        let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
        let mut updates = controllers::updates::Config::new(&data_dir);
        updates.bundle_dir = args.bundle_dir;
        if let Some(files_dir) = args.files_dir {
            updates.files_dir = files_dir;
        }
        let launched = selfupdate::launcher::launched();
        let restart = std::sync::Arc::new(tokio::sync::Notify::new());
        if let Some((slots, slot, _)) = &launched {
            updates.self_update =
                Some(controllers::updates::SelfUpdate { slots: slots.clone(), slot: *slot, restart: restart.clone() });
        }
        if let Some(root) = &args.trust_root {
            controllers::updates::intake::pin_root(&updates, root)
                .with_context(|| format!("cannot pin the trust root {}", root.display()))?;
        }
        let export = args.otlp.config("axle-server", &hostname(), &data_dir).zip(log_sink);
        let export_metrics = export.as_ref().map(|_| telemetry::export::ExportMetrics::default());
        let reconcile_metrics = controllers::metrics::ReconcileMetrics::default();
        let mut metrics: Vec<std::sync::Arc<dyn telemetry::exposition::Registers>> =
            vec![std::sync::Arc::new(reconcile_metrics.clone())];
        if let Some(export_metrics) = &export_metrics {
            metrics.push(std::sync::Arc::new(export_metrics.clone()));
        }
        let config = apiserver::Config {
            data_dir: data_dir.clone(),
            listen: args.listen,
            store: store::Options { change_log_capacity: args.change_log_capacity.max(1), ..store::Options::default() },
            metrics,
            security: (!args.insecure_http).then(|| apiserver::SecurityConfig {
                tls_sans: args.tls_sans.clone(),
                token_file: args.token_auth_file.clone(),
                node_cert_validity: std::time::Duration::from_secs(args.node_cert_validity_seconds.max(10)),
                api_audiences: args.api_audiences.clone(),
                protected_node_label_prefixes: args.protected_node_label_prefixes.clone(),
                bootstrap_token_ttl: (args.bootstrap_token_ttl_seconds > 0)
                    .then(|| std::time::Duration::from_secs(args.bootstrap_token_ttl_seconds)),
            }),
        };
        if args.recover {
            let recovery = apiserver::recover_store(&config)?;
            tracing::warn!(objects = recovery.objects, lost = recovery.lost.len(), "store recovered");
            eprintln!("{recovery}");
        }
        let server = apiserver::start(config).await?;
        let (stop_export, export_shutdown) = tokio::sync::watch::channel(false);
        let exporter = export.zip(export_metrics).map(|((config, sink), metrics)| {
            tokio::spawn(telemetry::export::run(config, sink, metrics, server.metrics_source(), export_shutdown))
        });
        let (stop_controllers, controllers_shutdown) = tokio::sync::watch::channel(false);
        let own_client = client::Client::new(client::Config::from_kubeconfig(&server.kubeconfig)?);
        let lifecycle = controllers::node_lifecycle::Options {
            grace: std::time::Duration::from_secs(args.node_grace_seconds),
            ..Default::default()
        };
        tokio::spawn(controllers::node_lifecycle::run(
            own_client,
            lifecycle,
            reconcile_metrics.clone(),
            controllers_shutdown.clone(),
        ));
        let workloads_client = client::Client::new(client::Config::from_kubeconfig(&server.kubeconfig)?);
        tokio::spawn(controllers::workloads::run(
            workloads_client,
            reconcile_metrics.clone(),
            controllers_shutdown.clone(),
        ));
        // The update controller acts as its own identity: the only one that moves a campaign.
        let mut updates_config = client::Config::from_kubeconfig(&server.kubeconfig)?;
        if let Some(token) = server.update_controller_token() {
            let ca = std::fs::read_to_string(data_dir.join("pki").join("ca.crt"))
                .context("cannot read the car's CA for the update controller")?;
            updates_config = client::Config::new(&updates_config.server, Some(token)).with_tls(&ca, None)?;
        }
        let updates_client = client::Client::new(updates_config);
        tokio::spawn(controllers::updates::run(updates_client, updates, reconcile_metrics, controllers_shutdown));
        // An idle control plane holds only what serving needs.
        footprint::release_startup_memory_now_and_once_settled();
        tracing::info!(
            address = %format!("{}://{}", if args.insecure_http { "http" } else { "https" }, server.local_addr),
            kubeconfig = %server.kubeconfig.display(),
            startup_ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
            "API server ready"
        );
        if let Some((slots, slot, true)) = launched {
            tokio::spawn(self_update::self_check(slots, slot, server.kubeconfig.clone(), started_at));
        }
        let handing_over = tokio::select! {
            signal = wait_for_signal() => { signal?; false }
            _ = restart.notified() => true,
        };
        tracing::info!(handing_over, "shutting down");
        let _ = stop_controllers.send(true);
        server.shutdown().await;
        // What was not exported yet goes to the offline buffer, for the next start.
        let _ = stop_export.send(true);
        if let Some(exporter) = exporter {
            let _ = exporter.await;
        }
        if handing_over {
            // The launcher starts the version the boot record names now.
            std::process::exit(selfupdate::launcher::RESTART);
        }
        Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
