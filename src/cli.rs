//! The command line: `ppm start`, `ppm worker`, `ppm status`, `ppm
//! restart`, `ppm stop`, `ppm config`. Errors become one clear message
//! here, at the edge.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{self, AppOptions, ConfigFile, StartOptions, CONFIG_FILE};
use crate::control::ControlClient;
use crate::{control, logging, master, Error};

/// Process manager and load balancer for PHP applications.
#[derive(Parser, Debug)]
#[command(name = "ppm", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where a running master's control plane is.
#[derive(clap::Args, Debug, Clone)]
pub struct ControlAddr {
    /// Control plane port of the running master (default: control-port of
    /// ./ppm.json, else 5500).
    pub port: Option<u16>,
    /// Control plane host of the running master (default: control-host of
    /// ./ppm.json, else 127.0.0.1).
    #[arg(long)]
    pub host: Option<String>,
    /// Token for a control plane that requires one (default: control-token
    /// of ./ppm.json).
    #[arg(long, env = "PPM_CONTROL_TOKEN", hide_env_values = true)]
    pub control_token: Option<String>,
}

impl ControlAddr {
    /// The address and token, completed from `./ppm.json` where not given.
    fn resolve(&self) -> Result<ControlClient, Error> {
        let file = ConfigFile::find(None, &PathBuf::from("."))?;
        let from_file = |key: &str| {
            file.as_ref().and_then(|f| f.values.get(key)).map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
        };
        let port = match self.port {
            Some(port) => port,
            None => match from_file("control-port") {
                Some(text) => text.parse().map_err(|_| Error::Config {
                    file: PathBuf::from(CONFIG_FILE),
                    message: format!("key \"control-port\": {text} is not a port"),
                })?,
                None => 5500,
            },
        };
        let host = self
            .host
            .clone()
            .or_else(|| from_file("control-host"))
            .unwrap_or_else(|| "127.0.0.1".into());
        let addr = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let token = self
            .control_token
            .clone()
            .or_else(|| from_file("control-token"));
        Ok(ControlClient { addr, token })
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the master in the foreground: balancer, slot ports, workers, control plane.
    Start(StartOptions),
    /// Check the configuration, the PHP binary and the bootstrap, like
    /// `ppm start --check`.
    Configtest(StartOptions),
    /// Run one PHP worker answering HTTP directly on --listen (no master).
    Worker {
        #[command(flatten)]
        app: AppOptions,
        /// Address to answer HTTP on.
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
        /// How the worker runs PHP: `cgi` (php-cgi running the PHP runtime
        /// in bridges/) or `native` (PHP hosted in this process through
        /// ppm's own SAPI).
        #[arg(long, value_enum, default_value_t = WorkerRuntime::Cgi)]
        runtime: WorkerRuntime,
    },
    /// A native worker driven by a master over the frame socket on --fd
    /// (started by the master, not by hand).
    #[command(hide = true)]
    PhpWorker {
        #[command(flatten)]
        app: AppOptions,
        /// The inherited frame socket.
        #[arg(long)]
        fd: i32,
        /// The native runtime's entry script (default: installed into a
        /// temporary directory).
        #[arg(long)]
        entry: Option<PathBuf>,
        /// The slot this worker serves, for the application's config.
        #[arg(long, default_value_t = 0)]
        slot: usize,
    },
    /// Show the workers of a running master.
    Status {
        #[command(flatten)]
        control: ControlAddr,
        /// Print the JSON of GET /status.
        #[arg(long)]
        json: bool,
        /// Refresh every second until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// Replace every worker of a running master, surge-first; exits non-zero
    /// (with PHP's error) if a replacement fails to boot.
    Restart {
        #[command(flatten)]
        control: ControlAddr,
        /// Seconds to wait for the restart to finish.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Stop a running master gracefully; returns once everything exited.
    Stop {
        #[command(flatten)]
        control: ControlAddr,
        /// Seconds to wait for the master to exit.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Write the given `ppm start` options to ppm.json (only those that
    /// differ from the defaults), or show one effective setting.
    Config {
        #[command(flatten)]
        options: StartOptions,
        /// Print the effective value of one option instead of writing.
        #[arg(long, value_name = "NAME")]
        show_option: Option<String>,
    },
}

/// Runs the command line `args` (program name first); returns the exit status.
pub fn main(args: Vec<OsString>) -> i32 {
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    logging::init();
    // The arguments after the subcommand, for merging with ppm.json.
    let rest = args.get(2..).unwrap_or_default();
    match run(cli, rest) {
        Ok(code) => code,
        Err(Error::Usage(text)) => {
            eprint!("{text}");
            2
        }
        Err(err) => {
            eprintln!("ppm: {err}");
            1
        }
    }
}

/// How `ppm worker` runs PHP.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerRuntime {
    /// php-cgi running the PHP runtime in bridges/.
    Cgi,
    /// PHP hosted in the ppm process through ppm's own SAPI.
    Native,
}

/// Runs a parsed command line; returns the process exit status.
pub fn run(cli: Cli, rest: &[OsString]) -> Result<i32, Error> {
    // PHP hosted in this process runs on the main thread, outside tokio.
    let cli = match cli.command {
        Command::Worker {
            app,
            listen,
            runtime: WorkerRuntime::Native,
        } => return crate::native::standalone::run(app, listen),
        Command::PhpWorker {
            app,
            fd,
            entry,
            slot,
        } => return crate::native::worker::run(fd, &app, entry, slot),
        command => Cli { command },
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Start(ref given) | Command::Configtest(ref given) => {
                let checking = given.check || matches!(cli.command, Command::Configtest(_));
                let (opts, file) = config::start_options(rest)?;
                if let Some(file) = file {
                    tracing::info!("configuration from {}", file.path.display());
                }
                if checking {
                    println!("{}", crate::check::check(&opts).await?);
                } else {
                    master::run(opts).await?;
                }
            }
            Command::Worker { app, listen, .. } => master::run_standalone(app, listen).await?,
            Command::PhpWorker { .. } => unreachable!("handled before the runtime starts"),
            Command::Status {
                control,
                json,
                watch,
            } => control::print_status(&control.resolve()?, json, watch).await?,
            Command::Restart { control, timeout } => {
                control::restart_master(&control.resolve()?, Duration::from_secs(timeout)).await?;
            }
            Command::Stop { control, timeout } => {
                let client = control.resolve()?;
                control::stop_master(&client, Duration::from_secs(timeout)).await?;
                println!("ppm on {} stopped", client.addr);
            }
            Command::Config {
                options,
                show_option,
            } => {
                let rest: Vec<OsString> = strip_show_option(rest);
                match show_option {
                    Some(name) => {
                        let (effective, _) = config::start_options(&rest)?;
                        let settings = config::settings(&effective);
                        let value = settings.get(&name).ok_or_else(|| Error::InvalidOption {
                            option: "show-option",
                            message: format!("{name:?} is not a ppm.json key"),
                        })?;
                        match value {
                            serde_json::Value::String(s) => println!("{s}"),
                            other => println!("{other}"),
                        }
                    }
                    None => {
                        let changed = config::changed_settings(&rest)?;
                        let path = options
                            .config
                            .clone()
                            .unwrap_or_else(|| options.app.dir.join(CONFIG_FILE));
                        let text = serde_json::to_string_pretty(&changed)
                            .map_err(std::io::Error::other)?;
                        std::fs::write(&path, text + "\n")?;
                        println!("wrote {} ({} settings)", path.display(), changed.len());
                    }
                }
            }
        }
        Ok(0)
    })
}

/// `ppm config`'s own option is not a `ppm start` option.
fn strip_show_option(args: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut skip_next = false;
    for arg in args {
        if skip_next {
            skip_next = false;
            continue;
        }
        let text = arg.to_string_lossy();
        if text == "--show-option" {
            skip_next = true;
        } else if !text.starts_with("--show-option=") {
            out.push(arg.clone());
        }
    }
    out
}
