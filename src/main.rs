//! `ppm` command-line entry point; everything else lives in the library.

fn main() {
    std::process::exit(ppm::cli::main(std::env::args_os().collect()));
}
