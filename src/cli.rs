//! The command line: `ppm start`, `ppm worker`, `ppm status`, `ppm
//! restart`, `ppm stop`, `ppm config`. Errors become one clear message
//! here, at the edge.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{self, AppOptions, ConfigFile, Outcome, StartOptions, CONFIG_FILE};
use crate::control::identify::{self, Expected};
use crate::control::ControlClient;
use crate::{control, logging, master, Error};

/// Process manager and load balancer for PHP applications.
#[derive(Parser, Debug)]
#[command(name = "ppm", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More log output: -v debug, -vv trace (PPM_LOG overrides).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors; `ppm start -q` also turns the access log off.
    #[arg(short = 'q', long = "quiet", global = true)]
    pub quiet: bool,
}

/// Where a running master's control plane is.
#[derive(clap::Args, Debug, Clone)]
pub struct ControlAddr {
    /// Control plane port of the running master, or its application
    /// directory (PHP-PM's working-directory), whose ppm.json names the
    /// control port (default: ./ppm.json's control-port, else 5500).
    #[arg(value_name = "PORT|DIR")]
    pub target: Option<String>,
    /// Control plane host of the running master (default: control-host of
    /// the ppm.json, else 127.0.0.1).
    #[arg(long)]
    pub host: Option<String>,
    /// The running master's configuration file, for its control port,
    /// host and token (default: DIR/ppm.json).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Token for a control plane that requires one (default: control-token
    /// of the ppm.json).
    #[arg(long, env = "PPM_CONTROL_TOKEN", hide_env_values = true)]
    pub control_token: Option<String>,
    /// File holding the token (default: control-token-file of ./ppm.json).
    #[arg(long, value_name = "FILE")]
    pub control_token_file: Option<PathBuf>,
}

impl ControlAddr {
    /// The address and token, completed from the configuration file where
    /// not given, and where the control plane should be (for hints).
    fn resolve(&self) -> Result<(ControlClient, Expected), Error> {
        let given_port = self.target.as_deref().and_then(|t| t.parse::<u16>().ok());
        let dir = match (&self.target, given_port) {
            (Some(dir), None) => {
                let dir = PathBuf::from(dir);
                if !dir.is_dir() {
                    return Err(Error::Usage(format!(
                        "ppm: {} is neither a port nor an application directory\n",
                        dir.display()
                    )));
                }
                dir
            }
            _ => PathBuf::from("."),
        };
        let file = ConfigFile::find(self.config.as_deref(), &dir)?;
        let from_file = |key: &str| file.as_ref().and_then(|f| f.text(key));
        let file_port = |key: &str, default: u16| -> Result<u16, Error> {
            match from_file(key) {
                Some(text) => text.parse().map_err(|_| Error::Config {
                    file: file
                        .as_ref()
                        .map_or_else(|| PathBuf::from(CONFIG_FILE), |f| f.path.clone()),
                    message: format!("key \"{key}\": {text} is not a port"),
                }),
                None => Ok(default),
            }
        };
        let expected = Expected {
            control_port: file_port("control-port", config::DEFAULT_CONTROL_PORT)?,
            source: match &file {
                Some(f) if f.values.contains_key("control-port") => f.path.display().to_string(),
                _ => "the default".into(),
            },
            balancer_port: file_port("port", config::DEFAULT_PORT)?,
        };
        let port = given_port.unwrap_or(expected.control_port);
        // The file's address as `ppm start` reads it (PHP-PM's
        // `tcp://ADDRESS`, `localhost`).
        let file_host = from_file("control-host")
            .map(|text| {
                config::parse_host(&text).map_err(|message| Error::Config {
                    file: file
                        .as_ref()
                        .map_or_else(|| PathBuf::from(CONFIG_FILE), |f| f.path.clone()),
                    message: format!("key \"control-host\": {message}"),
                })
            })
            .transpose()?
            .map(|ip| ip.to_string());
        let host = self
            .host
            .clone()
            .or(file_host)
            .unwrap_or_else(|| config::DEFAULT_HOST.into());
        let addr = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let token_file = self
            .control_token_file
            .clone()
            .or_else(|| from_file("control-token-file").map(PathBuf::from));
        let token = match (self.control_token.clone(), token_file) {
            (Some(token), _) => Some(token),
            (None, Some(path)) => Some(crate::config::read_token_file(&path)?),
            (None, None) => from_file("control-token"),
        };
        Ok((ControlClient { addr, token }, expected))
    }

    /// The client of a control plane that answered as one.
    async fn connect(&self) -> Result<ControlClient, Error> {
        let (client, expected) = self.resolve()?;
        identify::ensure_control_plane(&client, &expected).await?;
        Ok(client)
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the master in the foreground: balancer, slot ports, workers, control plane.
    Start(StartOptions),
    /// Check the configuration, the PHP binary and the bootstrap, like
    /// `ppm start --check`.
    Configtest(StartOptions),
    /// Run one PHP worker answering HTTP directly on --listen (no master):
    /// PHP hosted in this process, for debugging and as a benchmark
    /// baseline.
    Worker {
        #[command(flatten)]
        app: AppOptions,
        /// Address to answer HTTP on.
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
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
        /// The pool's inherited shared request queue, if it has one.
        #[arg(long)]
        queue_fd: Option<i32>,
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
    /// (with PHP's error) if a replacement fails to boot. `ppm reload` is
    /// the same (PHP-PM's graceful reload).
    #[command(visible_alias = "reload")]
    Restart {
        #[command(flatten)]
        control: ControlAddr,
        /// Restart only this pool (of `ppm.json`'s `pools`); the others
        /// are not touched. Default: every pool, one after the other.
        #[arg(long, value_name = "NAME")]
        pool: Option<String>,
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
    /// Merge the given `ppm start` options into ppm.json (created if
    /// missing; every other key is kept); without options, print it. Or
    /// show one effective setting.
    Config {
        #[command(flatten)]
        options: StartOptions,
        /// Print the effective value of one option instead of writing.
        #[arg(long, value_name = "NAME")]
        show_option: Option<String>,
    },
    /// Internal: the guard process a master starts (see the `guard` module).
    #[command(name = "__guard", hide = true)]
    Guard,
}

/// Runs the command line `args` (program name first); returns the exit status.
pub fn main(args: Vec<OsString>) -> i32 {
    if let Some(message) = removed_option(&subcommand_args(&args)) {
        eprint!("{message}");
        return 2;
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    if matches!(cli.command, Command::Guard) {
        return crate::workers::guard::run();
    }
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "ppm=debug,info",
        (false, _) => "ppm=trace,debug",
    };
    let log_guard = logging::init(level, matches!(cli.command, Command::Start(_)));
    // The arguments after the subcommand, for merging with ppm.json.
    let mut rest = subcommand_args(&args);
    if cli.quiet && matches!(cli.command, Command::Start(_)) {
        rest.push("--no-logging".into());
    }
    let result = run(cli, &rest);
    // Every log line is out before the last word and the exit.
    drop(log_guard);
    match result {
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

/// Runs a parsed command line; returns the process exit status.
pub fn run(cli: Cli, rest: &[OsString]) -> Result<i32, Error> {
    // PHP hosted in this process runs on the main thread, outside tokio.
    let Cli {
        command,
        verbose,
        quiet,
    } = cli;
    let cli = match command {
        Command::Worker { app, listen } => {
            return crate::workers::native::standalone::run(app, listen)
        }
        Command::PhpWorker {
            app,
            fd,
            queue_fd,
            entry,
            slot,
        } => return crate::workers::native::worker::run(fd, queue_fd, &app, entry, slot),
        command => Cli {
            command,
            verbose,
            quiet,
        },
    };
    // One thread: a request's whole way through the master (read, worker
    // frames, response, access log line) runs on the task of its
    // connection, and the master's CPU per request is mostly system calls.
    // A second thread only added wake-ups between threads (measured: about
    // a quarter more CPU per proxied request, twice the context switches);
    // PHP workers, not the master, are what a box runs out of.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    runtime.block_on(async move {
        match cli.command {
            Command::Start(ref given) | Command::Configtest(ref given) => {
                let checking = given.check || matches!(cli.command, Command::Configtest(_));
                let (pools, file) = config::start_pools(rest)?;
                if let Some(file) = file {
                    tracing::info!("configuration from {}", file.path.display());
                }
                if checking {
                    println!("{}", crate::master::check::check_pools(&pools).await?);
                } else {
                    master::run(pools).await?;
                }
            }
            Command::Guard => return Ok(crate::workers::guard::run()),
            Command::Worker { .. } | Command::PhpWorker { .. } => {
                unreachable!("handled before the runtime starts")
            }
            Command::Status {
                control,
                json,
                watch,
            } => control::print_status(&control.connect().await?, json, watch).await?,
            Command::Restart {
                control,
                timeout,
                pool,
            } => {
                let client = control.connect().await?;
                control::restart_master(&client, Duration::from_secs(timeout), pool.as_deref())
                    .await?;
            }
            Command::Stop { control, timeout } => {
                let client = control.connect().await?;
                control::stop_master(&client, Duration::from_secs(timeout)).await?;
                println!("ppm on {} stopped", client.addr);
            }
            Command::Config { show_option, .. } => {
                let rest: Vec<OsString> = strip_show_option(rest);
                match show_option {
                    Some(name) => println!("{}", config::show_option(&rest, &name)?),
                    None => match config::merge(&rest)? {
                        Outcome::Unchanged(path, Some(text)) => {
                            eprintln!("{} (unchanged: no option given)", path.display());
                            print!("{text}");
                        }
                        Outcome::Unchanged(path, None) => {
                            eprintln!("no {} yet; give options to create it", path.display());
                        }
                        Outcome::Written(path, keys, problems) => {
                            println!("wrote {} (set {})", path.display(), keys.join(", "));
                            if let Some(problems) = problems {
                                eprintln!("ppm: note: ppm start would refuse it: {problems}");
                            }
                        }
                    },
                }
            }
        }
        Ok(0)
    })
}

/// The options of the php-cgi runtime, which ppm no longer has: named
/// with what replaced them rather than left to clap's "unexpected
/// argument".
fn removed_option(args: &[OsString]) -> Option<String> {
    args.iter().find_map(|arg| {
        let text = arg.to_string_lossy();
        let name = text.split('=').next().unwrap_or_default();
        match name {
            "--runtime" => Some(
                "ppm: --runtime is gone: workers always host PHP in a ppm process (the php-cgi \
                 runtime was removed); drop the option\n"
                    .to_string(),
            ),
            "--cgi-path" => Some(
                "ppm: --cgi-path is gone: workers run the PHP ppm was built against, not a \
                 php-cgi binary; to use another PHP, build ppm with its php-config (README, \
                 \"Building against another PHP\")\n"
                    .to_string(),
            ),
            _ => None,
        }
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

/// Whether `arg` is one of the global flags (`-v`, `-vv`, `-q`, …).
fn is_global_flag(arg: &OsString) -> bool {
    let text = arg.to_string_lossy();
    matches!(text.as_ref(), "-q" | "--quiet" | "--verbose")
        || (text.len() > 1 && text.starts_with('-') && text[1..].chars().all(|c| c == 'v'))
}

/// The arguments after the subcommand's name, without the global flags
/// (which may come before or after it).
fn subcommand_args(args: &[OsString]) -> Vec<OsString> {
    let mut rest = args.iter().skip(1).skip_while(|a| is_global_flag(a));
    let _subcommand = rest.next();
    rest.filter(|a| !is_global_flag(a)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn global_flags_go_wherever_they_are_and_php_pm_commands_parse() {
        let rest = subcommand_args(&args(&["ppm", "-vv", "start", "app", "-q", "--workers=2"]));
        assert_eq!(rest, args(&["app", "--workers=2"]));
        let cli = Cli::try_parse_from(args(&["ppm", "reload", "/srv/app", "-v"])).unwrap();
        assert_eq!(cli.verbose, 1);
        assert!(
            matches!(cli.command, Command::Restart { ref control, .. } if control.target.as_deref() == Some("/srv/app"))
        );
        let cli = Cli::try_parse_from(args(&["ppm", "-q", "stop", "-c", "ppm.json"])).unwrap();
        assert!(cli.quiet);
        assert!(
            matches!(cli.command, Command::Stop { ref control, .. } if control.config.is_some())
        );
    }
}
