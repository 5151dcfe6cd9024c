//! Workers: the PHP-hosting processes (`native`, `process`, `spawner`,
//! `env`, `php`, `runtime`), the slot task that owns each one (`slot`), the
//! pool that dispatches requests to idle workers (`pool`) and the rolling
//! restart that swaps them (`rolling`).

pub mod env;
pub mod fdlimit;
pub mod guard;
pub mod native;
pub mod php;
pub mod pool;
pub mod privileges;
pub mod process;
pub mod rolling;
pub mod rundir;
pub mod runtime;
pub mod slot;
pub mod spawner;
