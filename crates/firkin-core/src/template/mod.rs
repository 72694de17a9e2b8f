//! Templates a sandbox can be created from.
//!
//! A template is built ([`crate::runtime::Runtime::build_template`]) from a cached base rootfs
//! plus setup steps ([`spec::TemplateSpec`]) run in a live sandbox, then checkpointed into the
//! template store; creating a sandbox restores that checkpoint. The built-in templates (`base`,
//! `code-interpreter-v1`) are specs like any other ([`builtin`]), built on first need.
//!
//! This module owns the rootfs catalogue (template `from` names → cached rootfs directories and
//! their build identity) and the template metadata stored in artifact manifests.

pub mod builtin;
pub mod spec;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Layout;

pub use spec::{ReadyCheck, StartCommand, Step, StepUser, TemplateSpec, TemplateSpecError};

/// Name of the default base rootfs directory under `cache/rootfs/`.
pub const BASE_ROOTFS: &str = "base-v1";
/// The base rootfs plus the code-interpreter stack (ipykernel, numpy, pandas, matplotlib, node,
/// TypeScript, R with IRkernel, e2b-charts); bumped with `INTERPRETER_NAME` in scripts/setup.sh.
pub const INTERPRETER_ROOTFS: &str = "code-interpreter-v2";
/// File inside a rootfs written last by `scripts/setup.sh`: its digest identifies the build.
pub const ROOTFS_MANIFEST: &str = ".firkin-rootfs.json";

/// Rootfs of records and manifests written before the field existed.
pub fn default_rootfs() -> String {
    BASE_ROOTFS.to_owned()
}

/// What a template artifact was built from (kept in its manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateInfo {
    /// The template id sandboxes are created with.
    pub name: String,
    /// Built-in templates are rebuilt automatically when their spec, rootfs or agent changes.
    pub builtin: bool,
    /// SHA-256 of the canonical JSON of the spec.
    pub spec_sha256: String,
    /// Number of steps run.
    pub steps: usize,
    /// The start command left running in the checkpoint, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_cmd: Option<String>,
    /// How long the build took, in milliseconds.
    pub build_ms: u64,
}

/// A cached rootfs a template builds on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    /// Directory name under `cache/rootfs/`.
    pub name: String,
    pub path: PathBuf,
    /// SHA-256 of its [`ROOTFS_MANIFEST`]: changes whenever setup rebuilds it.
    pub id: String,
}

/// Why a template or rootfs cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template '{0}' not found")]
    NotFound(String),
    #[error("template base '{0}' is unknown (known: base, code-interpreter)")]
    UnknownBase(String),
    #[error("rootfs '{name}' is missing at {path}; run scripts/setup.sh")]
    RootfsMissing { name: String, path: PathBuf },
    #[error("template '{name}' was built for another {what}; rebuild it with `firkin template build`")]
    Stale { name: String, what: &'static str },
}

/// Resolves template bases to cached rootfs directories.
#[derive(Debug, Clone)]
pub struct TemplateCatalog {
    layout: Layout,
}

impl TemplateCatalog {
    pub fn new(layout: Layout) -> TemplateCatalog {
        TemplateCatalog { layout }
    }

    /// The rootfs directory name for a spec's `from`.
    pub fn rootfs_name(from: &str) -> Result<&'static str, TemplateError> {
        match from {
            "base" | BASE_ROOTFS => Ok(BASE_ROOTFS),
            "code-interpreter" | INTERPRETER_ROOTFS => Ok(INTERPRETER_ROOTFS),
            other => Err(TemplateError::UnknownBase(other.to_owned())),
        }
    }

    /// A cached rootfs by directory name, with its build identity.
    pub fn rootfs(&self, name: &str) -> Result<Rootfs, TemplateError> {
        let path = self.layout.rootfs_dir(name);
        let missing = || TemplateError::RootfsMissing { name: name.to_owned(), path: path.clone() };
        if !path.join("bin").exists() {
            return Err(missing());
        }
        let id = crate::digest::sha256_file(&path.join(ROOTFS_MANIFEST)).map(|(_, d)| d).unwrap_or_default();
        Ok(Rootfs { name: name.to_owned(), path, id })
    }

    /// The rootfs a spec's `from` names.
    pub fn base(&self, from: &str) -> Result<Rootfs, TemplateError> {
        self.rootfs(Self::rootfs_name(from)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_resolve_to_rootfs_names_and_missing_rootfs_is_reported() {
        let layout = Layout { state_dir: "/nonexistent/s".into(), cache_dir: "/nonexistent/c".into() };
        let cat = TemplateCatalog::new(layout);
        assert_eq!(TemplateCatalog::rootfs_name("base"), Ok(BASE_ROOTFS));
        assert_eq!(TemplateCatalog::rootfs_name("code-interpreter"), Ok(INTERPRETER_ROOTFS));
        assert!(matches!(TemplateCatalog::rootfs_name("ubuntu"), Err(TemplateError::UnknownBase(_))));
        assert!(matches!(cat.base("base"), Err(TemplateError::RootfsMissing { .. })));
    }
}
