//! Workers as another user (`--user`, `--group`), php-fpm's `user` and
//! `group`: the master runs as root, binds every port itself (so ports
//! below 1024 work) and starts each worker already switched to the
//! user, before PHP runs a line.
//!
//! The switch is made in the forked child, before `exec`: supplementary
//! groups cleared, then the group, then the user (the other order would
//! leave the child unable to change its group). It comes before the
//! parent-death signal is set (`spawner`), because the kernel clears that
//! signal when the credentials change.
//!
//! The run directory (the PHP worker script and bridges) is handed to
//! the user, mode 0700: the workers read it, and no third user can enter
//! it. Its lock file
//! stays the master's, which is how a later master recognises it.
//! Request bodies spooled to disk are read by the master, which streams
//! them to the worker, so their files need no change of owner.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};

use crate::Error;

/// The identity workers run under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: Uid,
    pub gid: Gid,
}

fn invalid(option: &'static str, message: String) -> Error {
    Error::InvalidOption { option, message }
}

/// Resolves `--user` and `--group` (names or numeric ids). None when no
/// user is given. Fails when the master is not root, or when the user or
/// group does not exist.
pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<RunAs>, Error> {
    let Some(user) = user else {
        return match group {
            Some(_) => Err(invalid("group", "needs --user".into())),
            None => Ok(None),
        };
    };
    let euid = Uid::effective();
    if !euid.is_root() {
        return Err(invalid(
            "user",
            format!(
                "only a master running as root can run workers as another user \
                 (this one runs as uid {euid}); start ppm as root, or leave --user out \
                 and run ppm itself as {user:?}"
            ),
        ));
    }
    let lookup = |e: nix::Error| invalid("user", format!("cannot look up user {user:?}: {e}"));
    let found = match User::from_name(user).map_err(lookup)? {
        Some(found) => found,
        None => match user.parse::<u32>() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid))
                .map_err(lookup)?
                .ok_or_else(|| invalid("user", format!("no user with uid {uid} on this system")))?,
            Err(_) => return Err(invalid("user", format!("no user {user:?} on this system"))),
        },
    };
    let gid = match group {
        None => found.gid,
        Some(group) => {
            let lookup =
                |e: nix::Error| invalid("group", format!("cannot look up group {group:?}: {e}"));
            match Group::from_name(group).map_err(lookup)? {
                Some(found) => found.gid,
                None => match group.parse::<u32>() {
                    Ok(gid) => Group::from_gid(Gid::from_raw(gid))
                        .map_err(lookup)?
                        .map(|g| g.gid)
                        .ok_or_else(|| {
                            invalid("group", format!("no group with gid {gid} on this system"))
                        })?,
                    Err(_) => {
                        return Err(invalid(
                            "group",
                            format!("no group {group:?} on this system"),
                        ))
                    }
                },
            }
        }
    };
    Ok(Some(RunAs {
        uid: found.uid,
        gid,
    }))
}

/// Gives the run directory and everything in it but `keep` (the
/// master's lock file) to the workers' user, the directory mode 0700.
pub fn hand_over(dir: &Path, run_as: RunAs, keep: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path == keep {
            continue;
        }
        std::os::unix::fs::lchown(&path, Some(run_as.uid.as_raw()), Some(run_as.gid.as_raw()))?;
        if std::fs::symlink_metadata(&path)?.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

/// Checks that the process listening on a worker `socket` in the run
/// directory runs as the directory's owner (the workers' user). Under
/// `--user` a worker owns the directory, so it could replace its socket
/// with a link to another one (a root daemon's); the master, as root,
/// would follow the link and forward requests there.
pub fn check_peer(stream: &tokio::net::UnixStream, socket: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let peer = stream.peer_cred()?.uid();
    let dir = socket.parent().unwrap_or(socket);
    let owner = std::fs::metadata(dir)?.uid();
    if peer == owner {
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!(
            "{} is served by uid {peer}, not by the workers' uid {owner}; not connecting",
            socket.display()
        ),
    ))
}

/// Switches the calling (forked, single-threaded) process to `run_as`:
/// no supplementary groups, then the group, then the user. For
/// `pre_exec`: only system calls, no allocation.
pub fn switch(run_as: RunAs) -> std::io::Result<()> {
    nix::unistd::setgroups(&[])?;
    nix::unistd::setgid(run_as.gid)?;
    nix::unistd::setuid(run_as.uid)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_socket_served_by_another_uid_than_the_directorys_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("w.sock");
        let _listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        check_peer(&stream, &socket).unwrap();
        if !Uid::effective().is_root() {
            return;
        }
        // The directory handed to nobody, the socket still served by root.
        std::os::unix::fs::chown(dir.path(), Some(65534), None).unwrap();
        let err = check_peer(&stream, &socket).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("uid 0"), "{err}");
    }

    #[test]
    fn no_user_means_no_switch_and_a_group_alone_is_refused() {
        assert_eq!(resolve(None, None).unwrap(), None);
        let err = resolve(None, Some("nogroup")).unwrap_err().to_string();
        assert!(err.contains("--group") && err.contains("--user"), "{err}");
    }

    #[test]
    fn users_and_groups_are_found_by_name_or_id_and_unknown_ones_named() {
        if !Uid::effective().is_root() {
            let err = resolve(Some("nobody"), None).unwrap_err().to_string();
            assert!(err.contains("root"), "{err}");
            return;
        }
        let nobody = User::from_name("nobody").unwrap().unwrap();
        let by_name = resolve(Some("nobody"), None).unwrap().unwrap();
        assert_eq!(by_name.uid, nobody.uid);
        assert_eq!(by_name.gid, nobody.gid);
        let by_id = resolve(Some(&nobody.uid.to_string()), Some("0")).unwrap();
        assert_eq!(by_id.unwrap().gid, Gid::from_raw(0));
        let err = resolve(Some("no-such-user-x"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"no-such-user-x\""), "{err}");
        let err = resolve(Some("nobody"), Some("no-such-group-x"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--group") && err.contains("\"no-such-group-x\""),
            "{err}"
        );
    }
}
