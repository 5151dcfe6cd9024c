//! Option values parsed into the types the rest of ppm uses: durations
//! (`Duration`, or `Option<Duration>` where 0 turns the setting off),
//! sizes in bytes, trusted proxies and FastCGI listen addresses. Each is
//! parsed once, where clap reads the option (from the command line or from
//! `ppm.json`), and written back as the number or text it means, for
//! `ppm config`. What is no value of the type is refused here; the range an
//! option allows is checked by `validate` with every other problem.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Serializer;

/// The address of the balancer and of the control plane when `--host`
/// and `--control-host` are not given.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// The balancer port when `--port` is not given.
pub const DEFAULT_PORT: u16 = 5501;
/// The control plane port when `--control-port` is not given.
pub const DEFAULT_CONTROL_PORT: u16 = 5500;

/// The longest timeout (a day).
pub(super) const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);
/// The longest setting that may be turned off (a year).
pub(super) const MAX_OFF_ABLE: Duration = Duration::from_secs(31_536_000);
/// The largest memory limit, in MB.
pub(super) const MAX_MB: u64 = 1024 * 1024;
const MB: u64 = 1024 * 1024;

/// What `validate` says of a timeout out of range, and clap of one that
/// is no duration at all (negative, not finite).
pub(super) const TIMEOUT_RANGE: &str = "must be a number of seconds above 0";
/// The same for a setting 0 turns off.
pub(super) const OFF_ABLE_RANGE: &str = "must be a number of seconds, 0 to turn it off";

/// `text` as a duration, if it is a number of seconds that is one. The
/// range each option allows is checked by `validate`, with the other
/// problems, so that one run names them all.
fn duration(text: &str, range: &str) -> Result<Duration, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(value).map_err(|_| range.to_string())
}

/// A timeout (validated: above 0, at most a day).
pub fn seconds(text: &str) -> Result<Duration, String> {
    duration(text, TIMEOUT_RANGE)
}

/// Seconds where 0 turns the setting off (None).
pub fn seconds_or_off(text: &str) -> Result<Option<Duration>, String> {
    let value = duration(text, OFF_ABLE_RANGE)?;
    Ok((!value.is_zero()).then_some(value))
}

/// `seconds_or_off` where PHP-PM's negative values (`-1`) mean off too.
pub fn seconds_or_php_pm_off(text: &str) -> Result<Option<Duration>, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if value < 0.0 => Ok(None),
        _ => seconds_or_off(text),
    }
}

/// MB as bytes; 0 and PHP-PM's `-1` (any negative number) mean no limit.
pub fn megabytes_or_off(text: &str) -> Result<Option<u64>, String> {
    let value: i64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of MB (0 or -1 for no limit)"))?;
    // Any i64 of MB fits in u64 bytes; `validate` checks the limit.
    Ok(u64::try_from(value)
        .ok()
        .filter(|&mb| mb > 0)
        .map(|mb| mb.saturating_mul(MB)))
}

/// Writes a duration as the seconds it was given as.
pub fn write_seconds<S: Serializer>(value: &Duration, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_f64(value.as_secs_f64())
}

/// Writes an optional duration as seconds, 0 when off.
pub fn write_seconds_or_off<S: Serializer>(
    value: &Option<Duration>,
    out: S,
) -> Result<S::Ok, S::Error> {
    out.serialize_f64(value.map_or(0.0, |d| d.as_secs_f64()))
}

/// Writes an optional size in bytes as MB, 0 when off.
pub fn write_megabytes_or_off<S: Serializer>(
    value: &Option<u64>,
    out: S,
) -> Result<S::Ok, S::Error> {
    out.serialize_u64(value.map_or(0, |b| b / (1024 * 1024)))
}

/// One `--trusted-proxies` value: addresses and CIDRs, comma-separated,
/// parsed, with the text it was given as.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyList {
    text: String,
    nets: Vec<IpNet>,
}

impl std::str::FromStr for ProxyList {
    type Err = String;

    /// `10.0.0.0/8`, `127.0.0.1`, `::1`, or several separated by commas.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let net = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{item:?} is not an IP address or CIDR"))?;
            nets.push(net);
        }
        Ok(Self {
            text: text.to_string(),
            nets,
        })
    }
}

impl serde::Serialize for ProxyList {
    fn serialize<S: Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(&self.text)
    }
}

/// The addresses whose forwarding headers are believed, and which the
/// per-address connection limit exempts.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// The proxies of every `--trusted-proxies` value.
    pub fn new(lists: &[ProxyList]) -> Self {
        Self(lists.iter().flat_map(|l| l.nets.iter().copied()).collect())
    }

    /// Parses addresses and CIDRs (`10.0.0.0/8`, `127.0.0.1`, `::1`); the
    /// options are parsed as `ProxyList`s, this is for tests.
    #[cfg(test)]
    pub fn parse(items: &[String]) -> Result<Self, String> {
        let lists = items
            .iter()
            .map(|i| i.parse())
            .collect::<Result<Vec<ProxyList>, String>>()?;
        Ok(Self::new(&lists))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// Where a FastCGI listener listens (`--fastcgi-listen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::str::FromStr for ListenAddress {
    type Err = String;

    /// `HOST:PORT` (`127.0.0.1:9000`, `[::1]:9000`, `localhost:9000`) or
    /// `unix:/path/to.sock`.
    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!("{text:?}: the socket path must be absolute"));
            }
            return Ok(ListenAddress::Unix(path));
        }
        let text_v4 = match text.strip_prefix("localhost:") {
            Some(port) => format!("127.0.0.1:{port}"),
            None => text.to_string(),
        };
        text_v4
            .parse::<SocketAddr>()
            .map(ListenAddress::Tcp)
            .map_err(|_| format!("{text:?} is neither HOST:PORT nor unix:/path"))
    }
}

impl std::fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddress::Tcp(addr) => write!(f, "{addr}"),
            ListenAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl serde::Serialize for ListenAddress {
    fn serialize<S: Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        out.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_parsed_once_with_zero_as_off_where_allowed() {
        assert_eq!(seconds("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(seconds("0"), Ok(Duration::ZERO), "refused by validate");
        assert!(seconds("-1").unwrap_err().contains("above 0"));
        assert!(seconds("inf").is_err());
        assert!(seconds("soon").unwrap_err().contains("soon"));
        assert_eq!(seconds_or_off("0"), Ok(None));
        assert_eq!(seconds_or_off("30"), Ok(Some(Duration::from_secs(30))));
        assert!(seconds_or_off("-1")
            .unwrap_err()
            .contains("0 to turn it off"));
        assert_eq!(seconds_or_php_pm_off("-1"), Ok(None));
        assert_eq!(megabytes_or_off("-1"), Ok(None));
        assert_eq!(megabytes_or_off("0"), Ok(None));
        assert_eq!(megabytes_or_off("128"), Ok(Some(128 << 20)));
    }

    #[test]
    fn values_are_written_back_as_given() {
        let json = |v: serde_json::Result<serde_json::Value>| v.unwrap().to_string();
        let secs = |d| write_seconds(&d, serde_json::value::Serializer);
        assert_eq!(json(secs(Duration::from_secs(30))), "30.0");
        let off = |d| write_seconds_or_off(&d, serde_json::value::Serializer);
        assert_eq!(json(off(None)), "0.0");
        let list: ProxyList = "10.0.0.0/8, ::1".parse().unwrap();
        assert_eq!(serde_json::to_string(&list).unwrap(), "\"10.0.0.0/8, ::1\"");
        let unix: ListenAddress = "unix:/run/ppm.sock".parse().unwrap();
        assert_eq!(unix.to_string(), "unix:/run/ppm.sock");
        assert!("unix:rel.sock".parse::<ListenAddress>().is_err());
        assert_eq!(
            "localhost:9000".parse::<ListenAddress>(),
            Ok(ListenAddress::Tcp("127.0.0.1:9000".parse().unwrap()))
        );
    }
}
