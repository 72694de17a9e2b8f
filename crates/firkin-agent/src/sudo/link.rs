//! Making `sudo` resolve to the agent: `/usr/bin/sudo` becomes a symlink to the agent binary,
//! which then runs as the sudo client (`super::client`). The root filesystem is a writable
//! overlay over the shared read-only rootfs, so the change is this sandbox's alone; template
//! builds boot the agent cold and checkpoint it afterwards, so every sandbox restored from a
//! template already has the link. Debian's setuid `sudo` is replaced, not kept: gVisor ignores
//! set-user-ID bits, so it can never run anything as root here.

use std::io;
use std::path::{Path, PathBuf};

/// Where sudo is looked up (`PATH` and absolute invocations alike).
pub const SUDO_PATH: &str = "/usr/bin/sudo";

/// Why the link could not be made.
#[derive(Debug, thiserror::Error)]
#[error("linking {link} to {target}: {source}")]
pub struct LinkError {
    link: PathBuf,
    target: PathBuf,
    #[source]
    source: io::Error,
}

/// Makes `link` a symlink to `target`, atomically replacing whatever is there. Idempotent:
/// returns `false` when the link was already in place.
pub fn install(link: &Path, target: &Path) -> Result<bool, LinkError> {
    if std::fs::read_link(link).is_ok_and(|current| current == target) {
        return Ok(false);
    }
    let fail = |source| LinkError { link: link.to_path_buf(), target: target.to_path_buf(), source };
    let name = link.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let staging = link.with_file_name(format!(".{name}.firkin-link"));
    match std::fs::remove_file(&staging) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    std::os::unix::fs::symlink(target, &staging).map_err(fail)?;
    std::fs::rename(&staging, link).map_err(fail)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_a_file_once_and_is_idempotent() {
        let dir = std::env::temp_dir().join(format!("firkin-sudo-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (link, target) = (dir.join("sudo"), dir.join("agent"));
        std::fs::write(&link, b"setuid sudo").unwrap();
        assert!(install(&link, &target).unwrap());
        assert_eq!(std::fs::read_link(&link).unwrap(), target);
        assert!(!install(&link, &target).unwrap(), "second call changes nothing");
        let elsewhere = dir.join("other");
        assert!(install(&link, &elsewhere).unwrap(), "a link to something else is replaced");
        std::fs::remove_file(&link).unwrap();
        assert!(install(&link, &target).unwrap(), "a missing sudo is created");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no staging file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
