//! `ppm config`: merge the given options into `ppm.json`, or show one
//! effective setting (`--show-option NAME`), in the form it takes on the
//! command line.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::FromArgMatches;

use super::file::{closest, command, options_with, unchecked, ConfigFile, NOT_KEYS};
use super::{StartOptions, CONFIG_FILE};
use crate::Error;

/// What `ppm config` did.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// No option was given: the file as it is (None when there is none).
    Unchanged(PathBuf, Option<String>),
    /// The file was written with these keys set; `ppm start` would still
    /// refuse it for the reasons given (a later `ppm config` may complete
    /// it, say `--bootstrap` after `--bridge`).
    Written(PathBuf, Vec<String>, Option<String>),
}

/// Merges the options given in `args` (the arguments after `config`) into
/// the configuration file (`-c FILE`, else `DIR/ppm.json`), keeping every
/// other key; creates the file if missing. A value that cannot be read
/// is not written; a file `ppm start` would refuse is written, with the
/// reasons.
pub fn merge(args: &[OsString]) -> Result<Outcome, Error> {
    let matches = command("ppm config")
        .try_get_matches_from(args)
        .map_err(|e| Error::Usage(e.render().to_string()))?;
    let given = StartOptions::from_arg_matches(&matches)
        .map_err(|e| Error::Usage(e.render().to_string()))?;
    let path = given
        .config
        .clone()
        .unwrap_or_else(|| given.app.dir.join(CONFIG_FILE));
    let existing = if path.is_file() {
        Some(ConfigFile::read(&path)?)
    } else {
        None
    };
    let chosen = settings(&given);
    let mut set = Vec::new();
    let mut values = existing
        .as_ref()
        .map(|f| f.values.clone())
        .unwrap_or_default();
    for arg in command("ppm config").get_arguments() {
        let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else {
            continue;
        };
        if NOT_KEYS.contains(&long) || matches.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        // `--no-logging` is saved as `"logging": false`.
        let key = if long == "no-logging" {
            "logging"
        } else {
            long
        };
        let value = chosen.get(key).cloned().unwrap_or(serde_json::Value::Null);
        values.insert(key.to_string(), value);
        if !set.iter().any(|k| k == key) {
            set.push(key.to_string());
        }
    }
    if set.is_empty() {
        let text = existing
            .map(|_| std::fs::read_to_string(&path))
            .transpose()?;
        return Ok(Outcome::Unchanged(path, text));
    }
    let merged = ConfigFile {
        path: path.clone(),
        values,
    };
    let problems = match options_with(args, Some(merged.clone())) {
        Ok(_) => None,
        // A value clap cannot read is not written.
        Err(err @ Error::Usage(_)) => return Err(err),
        Err(err) => Some(err.to_string()),
    };
    let text = serde_json::to_string_pretty(&merged.values).map_err(std::io::Error::other)?;
    std::fs::write(&path, text + "\n").map_err(|e| Error::Config {
        file: path.clone(),
        message: format!("cannot write it: {e}"),
    })?;
    Ok(Outcome::Written(path, set, problems))
}

/// The effective value of option `name` (`workers` or `--workers`) with
/// `ppm.json` and `args` merged, as it would be typed on the command line;
/// empty when unset, one line per value of a repeatable option.
pub fn show_option(args: &[OsString], name: &str) -> Result<String, Error> {
    let name = name.trim_start_matches("--");
    let command = command("ppm config");
    let known: Vec<&str> = command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !NOT_KEYS.contains(l) && *l != "no-logging")
        .collect();
    if !known.contains(&name) {
        let hint = closest(name, &known)
            .map(|k| format!("; did you mean \"{k}\"?"))
            .unwrap_or_default();
        return Err(Error::InvalidOption {
            option: "show-option",
            message: format!("{name:?} is not a ppm option{hint}"),
        });
    }
    // Shown whether or not `ppm start` would accept the whole.
    let (_, given) = super::file::parse(args)?;
    let file = ConfigFile::find(given.config.as_deref(), &given.app.dir)?;
    let (effective, _, _) = unchecked(args, file.as_ref())?;
    Ok(match settings(&effective).get(name) {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Some(other) => other.to_string(),
    })
}

/// Every setting of `options` as `ppm.json` names it.
pub fn settings(options: &StartOptions) -> serde_json::Map<String, serde_json::Value> {
    let mut map = match serde_json::to_value(options) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    map.insert("logging".into(), options.logging().into());
    map
}
