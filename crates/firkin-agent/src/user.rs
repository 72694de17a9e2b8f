//! Sandbox users: looking up `/etc/passwd` entries and their supplementary groups.

use std::ffi::CString;
use std::path::PathBuf;

use nix::unistd::{Gid, Group, Uid, User};

/// A user of the sandbox that processes and file operations run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxUser {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    pub home: PathBuf,
}

/// Why a user could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user '{0}' does not exist")]
    Unknown(String),
    #[error("looking up user '{name}': {source}")]
    Lookup {
        name: String,
        #[source]
        source: nix::Error,
    },
}

impl SandboxUser {
    /// Looks `name` up in the sandbox's user database.
    pub fn lookup(name: &str) -> Result<Self, UserError> {
        match User::from_name(name) {
            Ok(Some(u)) => Ok(SandboxUser { name: u.name, uid: u.uid, gid: u.gid, home: u.dir }),
            Ok(None) => Err(UserError::Unknown(name.to_string())),
            Err(source) => Err(UserError::Lookup { name: name.to_string(), source }),
        }
    }

    /// The user's supplementary groups (like `initgroups`), primary group included.
    /// Computed in the parent so the child only needs async-signal-safe `setgroups`.
    pub fn groups(&self) -> Vec<Gid> {
        CString::new(self.name.as_str())
            .ok()
            .and_then(|c| nix::unistd::getgrouplist(&c, self.gid).ok())
            .unwrap_or_else(|| vec![self.gid])
    }
}

/// Name of the user owning `uid`, or the number as text (Go's `user.LookupId` fallback).
pub fn owner_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

/// Name of the group `gid`, or the number as text.
pub fn group_name(gid: u32) -> String {
    match Group::from_gid(Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    }
}
