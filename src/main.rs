//! `ppm` command-line entry point: parse arguments, run, turn errors into
//! one clear message and an exit status.

use clap::Parser;

fn main() {
    let cli = ppm::cli::Cli::parse();
    ppm::logging::init();
    let code = match ppm::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("ppm: {err}");
            1
        }
    };
    std::process::exit(code);
}
