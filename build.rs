//! Embeds the PHP worker runtime (`bridges/`, files listed in
//! `bridges/FILES`) into the binary, so an installed `ppm` works outside
//! the source tree.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("bridges");
    let list = root.join("FILES");
    println!("cargo:rerun-if-changed={}", root.display());
    println!("cargo:rerun-if-changed={}", list.display());
    let text = std::fs::read_to_string(&list).expect("bridges/FILES lists the runtime files");
    let mut out = String::from("/// The runtime files: path relative to `bridges/`, contents.\n");
    out.push_str("pub static FILES: &[(&str, &[u8])] = &[\n");
    for name in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let path = root.join(name);
        assert!(
            path.is_file(),
            "bridges/FILES names {name}, which does not exist"
        );
        println!("cargo:rerun-if-changed={}", path.display());
        writeln!(
            out,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("runtime_files.rs");
    std::fs::write(dest, out).unwrap();
}
