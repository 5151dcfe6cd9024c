//! The command line: `ppm start`, `ppm worker`, `ppm status`, `ppm stop`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{AppOptions, StartOptions};
use crate::{control, master, Error};

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
    /// Control plane port of the running master.
    #[arg(default_value_t = 5500)]
    pub port: u16,
    /// Control plane host of the running master.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
}

impl ControlAddr {
    fn addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the master in the foreground: balancer, slot ports, workers, control plane.
    Start(StartOptions),
    /// Run one PHP worker answering HTTP directly on --listen (no master).
    Worker {
        #[command(flatten)]
        app: AppOptions,
        /// Address to answer HTTP on.
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
    },
    /// Show the workers of a running master.
    Status {
        #[command(flatten)]
        control: ControlAddr,
        /// Print the JSON of GET /status.
        #[arg(long)]
        json: bool,
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
}

/// Runs a parsed command line; returns the process exit status.
pub fn run(cli: Cli) -> Result<i32, Error> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Start(opts) => master::run(opts).await?,
            Command::Worker { app, listen } => master::run_standalone(app, listen).await?,
            Command::Status { control, json } => {
                control::print_status(&control.addr(), json).await?
            }
            Command::Restart { control, timeout } => {
                control::restart_master(&control.addr(), Duration::from_secs(timeout)).await?;
            }
            Command::Stop { control, timeout } => {
                control::stop_master(&control.addr(), Duration::from_secs(timeout)).await?;
                println!("ppm on {} stopped", control.addr());
            }
        }
        Ok(0)
    })
}
