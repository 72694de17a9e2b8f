//! Templates a sandbox can be created from. Until template builds land, the catalogue is the
//! built-in set, each backed by a cached base rootfs directory.

use std::path::PathBuf;

use crate::config::Layout;

/// Name of the default base rootfs directory under `cache/rootfs/`.
pub const BASE_ROOTFS: &str = "base-v1";

/// A template resolved to what the engine needs to boot it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTemplate {
    pub id: String,
    pub rootfs: PathBuf,
}

/// Why a template id cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template '{0}' not found")]
    NotFound(String),
    #[error("template '{id}' is known but its rootfs {path} is missing; run scripts/setup.sh")]
    RootfsMissing { id: String, path: PathBuf },
}

/// The built-in template catalogue.
#[derive(Debug, Clone)]
pub struct TemplateCatalog {
    layout: Layout,
}

impl TemplateCatalog {
    pub fn new(layout: Layout) -> TemplateCatalog {
        TemplateCatalog { layout }
    }

    /// Template ids this server accepts. `code-interpreter-v1` boots the base rootfs until the
    /// code-interpreter template is built.
    pub fn known_ids() -> &'static [&'static str] {
        &["base", "code-interpreter-v1"]
    }

    pub fn resolve(&self, id: &str) -> Result<ResolvedTemplate, TemplateError> {
        let rootfs_name = match id {
            "base" | "code-interpreter-v1" => BASE_ROOTFS,
            _ => return Err(TemplateError::NotFound(id.to_owned())),
        };
        let rootfs = self.layout.rootfs_dir(rootfs_name);
        if !rootfs.join("bin").exists() {
            return Err(TemplateError::RootfsMissing { id: id.to_owned(), path: rootfs });
        }
        Ok(ResolvedTemplate { id: id.to_owned(), rootfs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_template_is_not_found() {
        let layout = Layout { state_dir: "/nonexistent/s".into(), cache_dir: "/nonexistent/c".into() };
        let cat = TemplateCatalog::new(layout);
        assert_eq!(cat.resolve("nope"), Err(TemplateError::NotFound("nope".into())));
        assert!(matches!(cat.resolve("base"), Err(TemplateError::RootfsMissing { .. })));
    }
}
