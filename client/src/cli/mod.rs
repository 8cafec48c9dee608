//! The `trireme` command line: argument definitions, exit codes, dispatch.
//!
//! Each command lives in its own module and returns a [`Reply`] (what to
//! print, and the exit code) or a client [`Error`], which [`main`] prints on
//! stderr and maps to an exit code:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | `get`: key not found |
//! | 2 | usage error (clap) |
//! | 3 | certification conflict or failed compare |
//! | 4 | cluster unavailable (no endpoint took the request) |
//! | 5 | anything else (invalid input, unknown outcome, ...) |

mod admin;
mod auth;
mod bench;
mod demo;
mod kv;
mod lease;
mod line;
mod output;
mod shell;
mod snapshot;
mod txn;
mod watch;

use std::io::Write;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
pub use output::Format;
use trireme_client::{Client, ClientOptions, Credentials, Error, Isolation, ReadConsistency};

/// Success.
pub const EXIT_OK: u8 = 0;
/// `get` found no such key.
pub const EXIT_NOT_FOUND: u8 = 1;
/// Certification aborted the write (conflict or failed compare).
pub const EXIT_ABORTED: u8 = 3;
/// No endpoint took the request.
pub const EXIT_UNAVAILABLE: u8 = 4;
/// Any other error.
pub const EXIT_OTHER: u8 = 5;

/// The command line of `trireme`.
#[derive(Debug, Parser)]
#[command(
    name = "trireme",
    version,
    about = "Client for Trireme, a multi-master replicated key-value store",
    after_help = "Exit status: 0 ok, 1 key not found, 2 usage error, 3 conflict or failed \
                  compare, 4 cluster unavailable, 5 other errors."
)]
pub struct Cli {
    /// Options accepted before or after the command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts, anywhere on the line.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Servers to talk to, tried in order on failure (HOST:PORT[,HOST:PORT...]).
    #[arg(
        long,
        global = true,
        env = "TRIREME_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7420"
    )]
    pub endpoints: Vec<String>,
    /// Print JSON instead of text (same as `--output json`).
    #[arg(long, global = true, conflicts_with = "output")]
    pub json: bool,
    /// How `get` and `scan` print: simple (raw bytes), json (binary-safe:
    /// non-UTF-8 keys and values as base64 in `key_b64`/`value_b64`), or
    /// table; every other command prints JSON for `json` and text otherwise.
    #[arg(long, short = 'w', global = true, value_enum)]
    pub output: Option<Format>,
    /// Deadline of each request, failover included (e.g. 500ms, 10s, 1m).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// TLS: the CA certificate (PEM) servers are verified against; turns
    /// https:// on for endpoints given without a scheme.
    #[arg(
        long = "cacert",
        id = "tls_cacert",
        global = true,
        env = "TRIREME_CACERT",
        value_name = "FILE"
    )]
    pub cacert: Option<std::path::PathBuf>,
    /// TLS: this client's certificate (PEM), for servers with --client-cert-auth.
    #[arg(
        long = "cert",
        id = "tls_cert",
        global = true,
        env = "TRIREME_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub cert: Option<std::path::PathBuf>,
    /// TLS: the private key of --cert (PEM).
    #[arg(
        long = "key",
        id = "tls_key",
        global = true,
        env = "TRIREME_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub key: Option<std::path::PathBuf>,
    /// With auth on: the user, as NAME or NAME:PASSWORD. The CLI exchanges
    /// the password for a token and sends the token with each request.
    // Its own id: `user grant USER ROLE` has a positional named `user`,
    // which clap would otherwise merge with this global option.
    #[arg(
        long = "user",
        id = "login_user",
        global = true,
        env = "TRIREME_USER",
        hide_env_values = true
    )]
    pub user: Option<String>,
    /// The password of `--user` (instead of NAME:PASSWORD).
    #[arg(
        long = "password",
        id = "login_password",
        global = true,
        env = "TRIREME_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
}

impl GlobalArgs {
    /// The TLS settings `--cacert`, `--cert` and `--key` give (their files read).
    pub fn tls(&self) -> Result<Option<trireme_client::ClientTls>, Error> {
        match &self.cacert {
            Some(ca) => {
                trireme_client::ClientTls::from_files(ca, self.cert.as_deref(), self.key.as_deref())
                    .map(Some)
            }
            None if self.cert.is_some() => Err(Error::InvalidInput(
                "--cert needs --cacert (the CA the server's certificate is verified against)"
                    .into(),
            )),
            None => Ok(None),
        }
    }
}

impl GlobalArgs {
    /// The credentials `--user` and `--password` give, if any.
    pub fn credentials(&self) -> Result<Option<Credentials>, Error> {
        let Some(user) = &self.user else {
            return match self.password {
                Some(_) => Err(Error::InvalidInput(
                    "--password (or TRIREME_PASSWORD) needs --user (or TRIREME_USER)".into(),
                )),
                None => Ok(None),
            };
        };
        let (user, password) = match (user.split_once(':'), &self.password) {
            (Some((name, password)), None) => (name.to_string(), password.to_string()),
            (None, Some(password)) => (user.clone(), password.clone()),
            (Some((name, _)), Some(password)) => (name.to_string(), password.clone()),
            (None, None) => {
                return Err(Error::InvalidInput(format!(
                    "no password for user {user:?}: give --user NAME:PASSWORD, --password, or TRIREME_PASSWORD"
                )))
            }
        };
        Ok(Some(Credentials { user, password }))
    }

    /// The output format `--json` or `--output` asks for.
    pub fn format(&self) -> Format {
        match (self.json, self.output) {
            (true, _) => Format::Json,
            (false, format) => format.unwrap_or_default(),
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a value (prints `OK <seqno>`).
    Put(PutArgs),
    /// Print a key's value (exit 1 when absent).
    Get(GetArgs),
    /// Delete a key (prints `OK <seqno>`).
    #[command(alias = "delete")]
    Del(DelArgs),
    /// Print the keys (and values) of a range, one `key value` per line; the
    /// whole range unless `--limit` caps it.
    Scan(ScanArgs),
    /// Show each endpoint's node status and its view of the members.
    Status,
    /// Show each endpoint's data checksum (equal seqnos must give equal checksums).
    Checksum,
    /// List the cluster's members (id, address, voter/learner, up).
    Members,
    /// Add a node to the cluster: it joins as a learner and is promoted once caught up.
    Join(JoinArgs),
    /// Remove a node for good (default: the node the CLI talks to); its id is never reused.
    Leave(LeaveArgs),
    /// Show or change the cluster-wide parameters that decide verdicts (`cert_window`).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run a load test and report throughput and latency.
    Bench(BenchArgs),
    /// Run one transaction driven by commands on stdin, one per line.
    Txn(TxnArgs),
    /// Print every change of a key, a prefix or a range as it happens, one
    /// a line (`PUT <seqno> <key> <value>`, `DELETE <seqno> <key>`), in seqno
    /// order; resumes on another endpoint without losing or repeating one.
    Watch(WatchArgs),
    /// Leases: keys attached to a lease (`put --lease ID`) are deleted when
    /// it expires (no keep-alive within its TTL) or is revoked.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Interactive shell.
    Shell,
    /// Backups: save a consistent snapshot of the whole store, or check one.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Turn users and roles on or off, or show whether they are on.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Users: add, delete, passwd, list, get, grant ROLE, revoke ROLE.
    #[command(subcommand)]
    User(auth::UserCommand),
    /// Roles: add, delete, list, get, grant read|readwrite over a key, a
    /// prefix or a range, revoke.
    #[command(subcommand)]
    Role(auth::RoleCommand),
    /// Start a local 3-node cluster in a temporary directory and open the
    /// shell on it; on exit (or Ctrl-C) the nodes are stopped and the
    /// directory removed.
    Demo,
}

/// `watch KEY | --prefix P | --from A [--to B]`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// The key to watch.
    #[arg(required_unless_present_any = ["prefix", "from"], conflicts_with_all = ["prefix", "from"])]
    pub key: Option<String>,
    /// Watch every key starting with P ("" for every key).
    #[arg(long, value_name = "P", conflicts_with_all = ["from", "to"])]
    pub prefix: Option<String>,
    /// Watch the range from A (inclusive) ...
    #[arg(long, value_name = "A")]
    pub from: Option<String>,
    /// ... to B (exclusive; default: unbounded).
    #[arg(long, value_name = "B", requires = "from")]
    pub to: Option<String>,
    /// Start with the changes at seqno N (default: from now). Fails if the
    /// node no longer keeps them ("compacted at seqno ...").
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub from_seqno: Option<u64>,
    /// Also print each key's previous value.
    #[arg(long)]
    pub prev: bool,
    /// Also print progress notifications (`PROGRESS <seqno>`).
    #[arg(long)]
    pub progress: bool,
    /// How often the server sends progress when nothing changes (e.g. 1s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub progress_interval: Option<Duration>,
    /// Exit after printing N changes.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
}

/// `join NODE_ID ADDRESS`.
#[derive(Debug, Clone, Args)]
pub struct JoinArgs {
    /// The new node's id (unique, never used before).
    pub node_id: u64,
    /// The new node's peer HOST:PORT (its `--peer-listen`/`--peer-advertise`).
    pub address: String,
}

/// `config get` / `config set NAME VALUE`.
#[derive(Debug, Clone, Subcommand)]
pub enum ConfigCommand {
    /// Show each endpoint's applied cluster parameters (and its own flag when it differs).
    Get,
    /// Change a cluster parameter through the log: every node applies it at the same seqno.
    Set {
        /// The parameter: cert_window.
        name: String,
        /// Its new value.
        value: String,
    },
}

/// `snapshot save FILE` / `snapshot status FILE`.
#[derive(Debug, Clone, Subcommand)]
pub enum SnapshotCommand {
    /// Stream the store of the first endpoint at its applied seqno into FILE
    /// (while writes go on), verify it, and print its seqno, keys and checksum.
    Save {
        /// The backup file to write (must not exist).
        file: std::path::PathBuf,
    },
    /// Verify a backup file and print its seqno, keys and checksum.
    Status {
        /// The backup file.
        file: std::path::PathBuf,
    },
}

/// `lease grant TTL [--id ID]`, `keep-alive ID [--once]`, `revoke ID`,
/// `timetolive ID [--keys]`, `list`.
#[derive(Debug, Clone, Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease of TTL seconds (prints `lease ID granted with TTL Ns`).
    Grant {
        /// Seconds until it expires unless kept alive.
        ttl: i64,
        /// The lease id to use (positive; default: the server picks one).
        #[arg(long)]
        id: Option<i64>,
    },
    /// Keep a lease alive: every third of its TTL until stopped, or once.
    KeepAlive {
        /// The lease id.
        id: i64,
        /// Send one keep-alive and exit.
        #[arg(long)]
        once: bool,
    },
    /// Revoke a lease now, deleting the keys attached to it.
    Revoke {
        /// The lease id.
        id: i64,
    },
    /// Show a lease's granted and remaining TTL (exit 1 when it does not exist).
    #[command(name = "timetolive")]
    TimeToLive {
        /// The lease id.
        id: i64,
        /// Also list the keys attached to it.
        #[arg(long)]
        keys: bool,
    },
    /// List every lease id, one a line.
    List,
}

/// `leave [NODE_ID]`.
#[derive(Debug, Clone, Args)]
pub struct LeaveArgs {
    /// The node to remove (default: the node the CLI talks to).
    pub node_id: Option<u64>,
}

/// `put KEY VALUE [--if-version N]`.
#[derive(Debug, Clone, Args)]
pub struct PutArgs {
    /// The key.
    pub key: String,
    /// The value.
    #[arg(allow_hyphen_values = true)]
    pub value: String,
    /// Only if the key's current version is N (0: only if the key is absent).
    #[arg(long, value_name = "N")]
    pub if_version: Option<u64>,
    /// Attach the key to lease ID (it is deleted when the lease expires or is revoked).
    #[arg(long, value_name = "ID", conflicts_with = "if_version")]
    pub lease: Option<i64>,
}

/// `get KEY [--local | --consistency C]`.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// The key.
    pub key: String,
    /// How fresh the read must be.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// `del KEY [--if-version N]`.
#[derive(Debug, Clone, Args)]
pub struct DelArgs {
    /// The key.
    pub key: String,
    /// Only if the key's current version is N.
    #[arg(long, value_name = "N")]
    pub if_version: Option<u64>,
}

/// `scan [--prefix P | --from A --to B] [--limit N] [--keys-only]`.
#[derive(Debug, Clone, Args)]
pub struct ScanArgs {
    /// Only keys starting with P.
    #[arg(long, value_name = "P", conflicts_with_all = ["from", "to"])]
    pub prefix: Option<String>,
    /// First key (inclusive).
    #[arg(long, value_name = "A")]
    pub from: Option<String>,
    /// End key (exclusive).
    #[arg(long, value_name = "B")]
    pub to: Option<String>,
    /// At most N pairs (0: no limit: the whole range, fetched page by page
    /// at one seqno).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub limit: u32,
    /// Print keys only.
    #[arg(long)]
    pub keys_only: bool,
    /// How fresh the read must be.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Read freshness flags.
#[derive(Debug, Clone, Copy, Args)]
pub struct ReadArgs {
    /// Read this node's applied state, possibly stale (same as `--consistency local`).
    #[arg(long, conflicts_with = "consistency")]
    pub local: bool,
    /// Read consistency.
    #[arg(long, value_enum)]
    pub consistency: Option<ConsistencyArg>,
}

impl ReadArgs {
    /// The consistency the flags ask for (linearizable by default).
    pub fn consistency(&self) -> ReadConsistency {
        match (self.local, self.consistency) {
            (true, _) => ReadConsistency::Local,
            (false, Some(c)) => c.into(),
            (false, None) => ReadConsistency::Linearizable,
        }
    }
}

/// `--consistency` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConsistencyArg {
    /// Raft read index: sees every acknowledged write.
    Linearizable,
    /// Sees this client's own writes.
    Session,
    /// This node's applied state, possibly stale.
    Local,
}

impl From<ConsistencyArg> for ReadConsistency {
    fn from(c: ConsistencyArg) -> Self {
        match c {
            ConsistencyArg::Linearizable => ReadConsistency::Linearizable,
            ConsistencyArg::Session => ReadConsistency::Session,
            ConsistencyArg::Local => ReadConsistency::Local,
        }
    }
}

/// `--isolation` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IsolationArg {
    /// Certify reads, scanned ranges and writes.
    Serializable,
    /// Certify writes only (first committer wins).
    Snapshot,
}

impl From<IsolationArg> for Isolation {
    fn from(i: IsolationArg) -> Self {
        match i {
            IsolationArg::Serializable => Isolation::Serializable,
            IsolationArg::Snapshot => Isolation::Snapshot,
        }
    }
}

/// `bench` options.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Concurrent workers, each with its own connection, spread over the endpoints.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Number of distinct keys (chosen uniformly, or by `--zipf`).
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Choose keys by a Zipf distribution with this exponent instead of
    /// uniformly: key `bench/0` is the hottest, key k is chosen in
    /// proportion to 1/(k+1)^S (0.99 is the usual "hot keys" workload; at
    /// most 10,000,000 keys).
    #[arg(long, value_name = "S", value_parser = parse_zipf)]
    pub zipf: Option<f64>,
    /// Bytes per written value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Fraction of operations that are reads (0.0 to 1.0).
    #[arg(long, default_value_t = 0.5, value_parser = parse_ratio)]
    pub read_ratio: f64,
    /// How long to run (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Consistency of the reads.
    #[arg(long, value_enum, default_value_t = ConsistencyArg::Linearizable)]
    pub consistency: ConsistencyArg,
    /// Key prefix.
    #[arg(long, default_value = "bench/")]
    pub prefix: String,
    /// Run transactions instead of single reads and writes: each reads this
    /// many distinct random keys (in one `get_many` call, which also takes
    /// the snapshot) and writes every one of them back (a read-modify-write),
    /// once, without retrying; aborts are counted, not retried.
    /// `--read-ratio` does not apply.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub txn: Option<u64>,
    /// With `--txn`: the old way, a begin then one `get` per key, instead of
    /// one `get_many` (a round trip each; for comparing the two).
    #[arg(long, requires = "txn")]
    pub txn_one_by_one: bool,
    /// Isolation of the `--txn` transactions.
    #[arg(long, value_enum, default_value_t = IsolationArg::Serializable)]
    pub isolation: IsolationArg,
    /// Hold this many watches open during the run, each on its own prefix
    /// the workload never writes (`idle-watch/<i>/`), on the endpoints' first
    /// node: what idle watchers cost the writes.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub idle_watchers: usize,
}

/// A Zipf exponent: finite, above 0, at most 10.
fn parse_zipf(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number (a Zipf exponent such as 0.99)"))?;
    if v.is_finite() && v > 0.0 && v <= 10.0 {
        Ok(v)
    } else {
        Err(format!(
            "the Zipf exponent must be above 0 and at most 10 (it is {s})"
        ))
    }
}

/// `txn` options.
#[derive(Debug, Clone, Copy, Args)]
pub struct TxnArgs {
    /// Isolation level.
    #[arg(long, value_enum, default_value_t = IsolationArg::Serializable)]
    pub isolation: IsolationArg,
}

/// What a command prints and how it exits.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reply {
    /// Bytes for stdout.
    pub out: Vec<u8>,
    /// A note for stderr (e.g. "more results").
    pub note: Option<String>,
    /// The exit code.
    pub code: u8,
}

impl Reply {
    /// A successful reply printing `out`.
    pub fn ok(out: impl Into<Vec<u8>>) -> Reply {
        Reply {
            out: out.into(),
            note: None,
            code: EXIT_OK,
        }
    }
}

/// The exit code for a client error.
pub fn exit_code(err: &Error) -> u8 {
    match err {
        Error::Aborted { .. } => EXIT_ABORTED,
        Error::Unavailable(_) => EXIT_UNAVAILABLE,
        Error::InvalidInput(_)
        | Error::Indeterminate(_)
        | Error::SnapshotTooOld(_)
        | Error::Compacted { .. }
        | Error::Unauthenticated(_)
        | Error::PermissionDenied(_)
        | Error::Other(_) => EXIT_OTHER,
    }
}

/// Parses the command line, runs the command, returns the exit code.
pub fn main() -> u8 {
    run(Cli::parse())
}

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return EXIT_OTHER;
        }
    };
    let _entered = runtime.enter();
    let global = cli.global;
    let tls = match global.tls() {
        Ok(tls) => tls,
        Err(e) => return report(Err(e)),
    };
    let credentials = match global.credentials() {
        Ok(c) => c,
        Err(e) => return report(Err(e)),
    };
    let options = ClientOptions {
        timeout: global.timeout,
        tls,
        credentials,
        ..ClientOptions::default()
    };
    let client = match Client::with_options(global.endpoints.clone(), options) {
        Ok(client) => client,
        Err(e) => return report(Err(e)),
    };
    let format = global.format();
    let json = format == Format::Json;
    match cli.command {
        Command::Put(args) => report(runtime.block_on(kv::put(&client, &args, json))),
        Command::Get(args) => report(runtime.block_on(kv::get(&client, &args, format))),
        Command::Del(args) => report(runtime.block_on(kv::del(&client, &args, json))),
        Command::Scan(args) => report(runtime.block_on(kv::scan(&client, &args, format))),
        Command::Status => report(runtime.block_on(admin::status(&client, json))),
        Command::Auth(cmd) => report(runtime.block_on(auth::auth(&client, &cmd, json))),
        Command::User(cmd) => report(runtime.block_on(auth::user(&client, &cmd, json))),
        Command::Role(cmd) => report(runtime.block_on(auth::role(&client, &cmd, json))),
        Command::Checksum => report(runtime.block_on(admin::checksum(&client, json))),
        Command::Members => report(runtime.block_on(admin::members(&client, json))),
        Command::Join(args) => report(runtime.block_on(admin::join(&client, &args, json))),
        Command::Leave(args) => report(runtime.block_on(admin::leave(&client, &args, json))),
        Command::Config(ConfigCommand::Get) => {
            report(runtime.block_on(admin::config_get(&client, json)))
        }
        Command::Config(ConfigCommand::Set { name, value }) => {
            report(runtime.block_on(admin::config_set(&client, &name, &value, json)))
        }
        Command::Bench(args) => report(runtime.block_on(bench::run(&global, &args))),
        Command::Txn(args) => txn::run(&runtime, &client, args.isolation.into(), json),
        Command::Watch(args) => report(runtime.block_on(watch::run(&client, &args, json))),
        Command::Lease(command) => report(runtime.block_on(lease::run(&client, &command, json))),
        Command::Shell => shell::run(&runtime, &client, json),
        Command::Snapshot(SnapshotCommand::Save { file }) => {
            report(runtime.block_on(snapshot::save(&client, &file, json)))
        }
        Command::Snapshot(SnapshotCommand::Status { file }) => {
            report(snapshot::status(&file, json))
        }
        Command::Demo => demo::run(&runtime, json),
    }
}

/// Prints a command's outcome and returns its exit code.
pub fn report(result: Result<Reply, Error>) -> u8 {
    match result {
        Ok(reply) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`trireme scan | head`) is not an error worth a message.
            let _ = stdout.write_all(&reply.out).and_then(|()| stdout.flush());
            if let Some(note) = reply.note {
                eprintln!("{note}");
            }
            reply.code
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit_code(&e)
        }
    }
}

/// Parses `500ms`, `10s`, `1.5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (expected e.g. 500ms, 10s, 2m)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?} (use ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// Parses a fraction in `[0, 1]`.
fn parse_ratio(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("invalid ratio {text:?} (expected a number from 0 to 1)"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("ratio {value} is not between 0 and 1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("trireme").chain(args.iter().copied()))
    }

    #[test]
    fn global_options_are_accepted_after_the_command() -> Result<(), clap::Error> {
        let cli = parse(&[
            "get",
            "k",
            "--endpoints",
            "a:1,b:2",
            "--json",
            "--timeout",
            "250ms",
        ])?;
        assert_eq!(cli.global.endpoints, vec!["a:1", "b:2"]);
        assert!(cli.global.json);
        assert_eq!(cli.global.timeout, Duration::from_millis(250));
        assert!(matches!(cli.command, Command::Get(ref g) if g.key == "k"));

        let cli = parse(&["--endpoints", "x:9", "status"])?;
        assert_eq!(cli.global.endpoints, vec!["x:9"]);
        assert!(!cli.global.json);
        Ok(())
    }

    #[test]
    fn defaults_apply_without_options() -> Result<(), clap::Error> {
        // The variable may be set in a developer's shell; only check the
        // built-in default when it is not.
        let cli = parse(&["checksum"])?;
        if std::env::var_os("TRIREME_ENDPOINTS").is_none() {
            assert_eq!(cli.global.endpoints, vec!["127.0.0.1:7420"]);
        }
        assert_eq!(cli.global.timeout, Duration::from_secs(10));
        Ok(())
    }

    #[test]
    fn command_arguments_parse() -> Result<(), clap::Error> {
        let cli = parse(&["put", "k", "-5", "--if-version", "0"])?;
        match cli.command {
            Command::Put(p) => {
                assert_eq!((p.key.as_str(), p.value.as_str()), ("k", "-5"));
                assert_eq!(p.if_version, Some(0));
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&["get", "k", "--local"])?;
        assert!(
            matches!(cli.command, Command::Get(ref g) if g.read.consistency() == ReadConsistency::Local)
        );
        let cli = parse(&["get", "k", "--consistency", "session"])?;
        assert!(
            matches!(cli.command, Command::Get(ref g) if g.read.consistency() == ReadConsistency::Session)
        );
        let cli = parse(&[
            "scan",
            "--from",
            "a",
            "--to",
            "b",
            "--limit",
            "3",
            "--keys-only",
        ])?;
        match cli.command {
            Command::Scan(s) => {
                assert_eq!((s.from.as_deref(), s.to.as_deref()), (Some("a"), Some("b")));
                assert_eq!(s.limit, 3);
                assert!(s.keys_only && s.prefix.is_none());
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&[
            "bench",
            "--clients",
            "4",
            "--keys",
            "10",
            "--value-size",
            "8",
            "--read-ratio",
            "0.9",
            "--duration",
            "2s",
            "--consistency",
            "local",
            "--prefix",
            "b/",
        ])?;
        match cli.command {
            Command::Bench(b) => {
                assert_eq!((b.clients, b.keys, b.value_size), (4, 10, 8));
                assert_eq!(b.read_ratio, 0.9);
                assert_eq!(b.duration, Duration::from_secs(2));
                assert_eq!(b.consistency, ConsistencyArg::Local);
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&["txn", "--isolation", "snapshot"])?;
        assert!(matches!(cli.command, Command::Txn(t) if t.isolation == IsolationArg::Snapshot));
        Ok(())
    }

    #[test]
    fn usage_errors_are_rejected() {
        for args in [
            &["get"][..],
            &["get", "k", "--local", "--consistency", "session"],
            &["scan", "--prefix", "p", "--from", "a"],
            &["bench", "--read-ratio", "1.5"],
            &["get", "k", "--timeout", "soon"],
            &["frobnicate"],
        ] {
            let err = parse(args).expect_err("usage error");
            assert_ne!(err.kind(), ErrorKind::DisplayHelp, "{args:?}");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn errors_map_to_exit_codes() {
        let aborted = |kind: &str| Error::Aborted {
            kind: kind.into(),
            key: None,
            seqno: None,
            message: String::new(),
        };
        assert_eq!(exit_code(&aborted("write_conflict")), 3);
        assert_eq!(exit_code(&aborted("compare_failed")), 3);
        assert_eq!(exit_code(&Error::Unavailable("x".into())), 4);
        assert_eq!(exit_code(&Error::InvalidInput("x".into())), 5);
        assert_eq!(exit_code(&Error::Indeterminate("x".into())), 5);
        assert_eq!(exit_code(&Error::SnapshotTooOld("x".into())), 5);
        assert_eq!(exit_code(&Error::Other("x".into())), 5);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
