//! Validated identifiers: sandbox ids and template ids.

use std::fmt;

use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// A sandbox id: 20 lowercase alphanumerics, safe in host names, file names and netns names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SandboxId(String);

/// A string that is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id {value:?}: {reason}")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
    pub reason: &'static str,
}

impl SandboxId {
    pub const LEN: usize = 20;

    /// A fresh random id.
    pub fn generate() -> SandboxId {
        let s: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(Self::LEN)
            .map(|c| (c as char).to_ascii_lowercase())
            .collect();
        SandboxId(s)
    }

    pub fn parse(value: &str) -> Result<SandboxId, IdError> {
        let err = |reason| IdError { kind: "sandbox", value: value.to_owned(), reason };
        if value.is_empty() || value.len() > 64 {
            return Err(err("length must be 1..=64"));
        }
        if !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
            return Err(err("only lowercase letters and digits are allowed"));
        }
        Ok(SandboxId(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SandboxId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        SandboxId::parse(&value)
    }
}

impl From<SandboxId> for String {
    fn from(id: SandboxId) -> String {
        id.0
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Random secret (access tokens): 32 alphanumerics.
pub fn generate_secret() -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(32).map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse() {
        let id = SandboxId::generate();
        assert_eq!(id.as_str().len(), SandboxId::LEN);
        assert_eq!(SandboxId::parse(id.as_str()).unwrap(), id);
    }

    #[test]
    fn hostile_ids_are_rejected() {
        for bad in ["", "../x", "ABC", "a b", "a/b", &"a".repeat(65)] {
            assert!(SandboxId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
