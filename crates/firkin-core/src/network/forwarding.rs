//! IPv4 forwarding, turned on only while some firkin instance's egress needs it, and put back
//! when the last one stops.
//!
//! Several instances may share a host, and one may be killed with -9. Each instance that uses
//! forwarding leaves a marker file (`/run/firkin/forwarding/<owner>`); the first one to turn
//! forwarding on records that it was off (`prior-off`). The last marker removed while
//! `prior-off` exists turns it off again. A marker left by a killed instance keeps forwarding on
//! until that instance starts and stops again: the safe direction for the sandboxes, and the
//! instances' tables keep the host from routing anything but sandbox traffic meanwhile.

use std::fs::{self, File};
use std::io;
use std::path::PathBuf;

const SYSCTL: &str = "/proc/sys/net/ipv4/ip_forward";
const DIR: &str = "/run/firkin/forwarding";
const PRIOR_OFF: &str = "prior-off";

/// Forwarding as one instance found and left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarding {
    /// Forwarding was off before firkin: the table must keep other traffic from being routed.
    pub firkin_turned_it_on: bool,
}

/// The marker directory and sysctl, swappable for tests.
#[derive(Debug, Clone)]
pub struct ForwardingFiles {
    dir: PathBuf,
    sysctl: PathBuf,
}

impl Default for ForwardingFiles {
    fn default() -> Self {
        ForwardingFiles { dir: PathBuf::from(DIR), sysctl: PathBuf::from(SYSCTL) }
    }
}

impl ForwardingFiles {
    #[cfg(test)]
    fn at(dir: &std::path::Path, sysctl: &std::path::Path) -> ForwardingFiles {
        ForwardingFiles { dir: dir.to_owned(), sysctl: sysctl.to_owned() }
    }

    /// Holds the directory lock while `f` runs (instances start and stop concurrently).
    fn locked<T>(&self, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        fs::create_dir_all(&self.dir)?;
        let lock = File::create(self.dir.join(".lock"))?;
        lock.lock()?;
        let out = f();
        drop(lock);
        out
    }

    fn is_on(&self) -> io::Result<bool> {
        Ok(fs::read_to_string(&self.sysctl)?.trim() == "1")
    }

    /// Whether a firkin table must keep non-sandbox traffic from being routed: forwarding is
    /// off now (firkin is about to turn it on), or firkin turned it on earlier.
    pub fn guard_needed(&self) -> bool {
        !self.is_on().unwrap_or(false) || self.dir.join(PRIOR_OFF).exists()
    }

    /// Registers `owner` as needing forwarding and turns it on if it is off.
    pub fn acquire(&self, owner: &str) -> io::Result<Forwarding> {
        self.locked(|| {
            if !self.is_on()? {
                File::create(self.dir.join(PRIOR_OFF))?;
                fs::write(&self.sysctl, "1\n")?;
            }
            File::create(self.dir.join(owner))?;
            Ok(Forwarding { firkin_turned_it_on: self.dir.join(PRIOR_OFF).exists() })
        })
    }

    /// Unregisters `owner`; the last one out turns forwarding off if firkin turned it on.
    pub fn release(&self, owner: &str) -> io::Result<()> {
        self.locked(|| {
            match fs::remove_file(self.dir.join(owner)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            if self.owners()?.is_empty() && self.dir.join(PRIOR_OFF).exists() {
                fs::write(&self.sysctl, "0\n")?;
                fs::remove_file(self.dir.join(PRIOR_OFF))?;
            }
            Ok(())
        })
    }

    fn owners(&self) -> io::Result<Vec<String>> {
        Ok(fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.') && n != PRIOR_OFF)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(initial: &str) -> (PathBuf, ForwardingFiles) {
        let root = std::env::temp_dir().join(format!("fk-fwd-{}", crate::ids::generate_secret()));
        fs::create_dir_all(&root).unwrap();
        let sysctl = root.join("ip_forward");
        fs::write(&sysctl, initial).unwrap();
        let files = ForwardingFiles::at(&root.join("markers"), &sysctl);
        (root, files)
    }

    fn value(root: &std::path::Path) -> String {
        fs::read_to_string(root.join("ip_forward")).unwrap().trim().to_owned()
    }

    #[test]
    fn the_last_instance_out_puts_forwarding_back() {
        let (root, f) = setup("0\n");
        assert_eq!(f.acquire("a").unwrap(), Forwarding { firkin_turned_it_on: true });
        assert_eq!(value(&root), "1");
        assert_eq!(f.acquire("b").unwrap(), Forwarding { firkin_turned_it_on: true });
        f.release("a").unwrap();
        assert_eq!(value(&root), "1", "b still needs it");
        // A restart after kill -9 re-registers the same owner.
        f.acquire("b").unwrap();
        f.release("b").unwrap();
        assert_eq!(value(&root), "0");
        f.release("b").unwrap();
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn forwarding_that_was_on_stays_on() {
        let (root, f) = setup("1\n");
        assert_eq!(f.acquire("a").unwrap(), Forwarding { firkin_turned_it_on: false });
        f.release("a").unwrap();
        assert_eq!(value(&root), "1");
        fs::remove_dir_all(root).unwrap();
    }
}
