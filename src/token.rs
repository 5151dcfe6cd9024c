//! Secrets ppm reads that PHP workers must not see. (The control token
//! file is read by `config`.)

/// Environment variables ppm reads that hold secrets: never passed on to
/// PHP workers, whose `$_SERVER` shows their whole environment.
pub const SECRET_ENV: [&str; 1] = ["PPM_CONTROL_TOKEN"];
