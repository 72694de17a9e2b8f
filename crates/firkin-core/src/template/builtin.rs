//! The built-in templates, as ordinary build specs: `base` (the base rootfs, nothing added) and
//! `code-interpreter-v1` (the interpreter rootfs with firkin's code-interpreter service started
//! as root, its default Python kernel warm and its default JavaScript context running, so a
//! restored sandbox answers `run_code` at once).

use base64::Engine as _;

use super::spec::{ReadyCheck, StartCommand, Step, StepUser, TemplateSpec};

include!(concat!(env!("OUT_DIR"), "/interpreter_files.rs"));

/// Ids of the built-in templates.
pub const BUILTIN_IDS: &[&str] = &["base", "code-interpreter-v1"];
/// Where the interpreter package is installed inside the sandbox.
pub const INTERPRETER_DIR: &str = "/opt/firkin/interpreter";
/// The port the code interpreter serves (E2B's).
pub const INTERPRETER_PORT: u16 = 49999;

pub fn is_builtin(id: &str) -> bool {
    BUILTIN_IDS.contains(&id)
}

/// The spec of a built-in template.
pub fn spec(id: &str) -> Option<TemplateSpec> {
    match id {
        "base" => Some(TemplateSpec::new("base", "base")),
        "code-interpreter-v1" => Some(interpreter_spec()),
        _ => None,
    }
}

fn interpreter_spec() -> TemplateSpec {
    let mut steps: Vec<Step> = INTERPRETER_FILES
        .iter()
        .map(|(rel, bytes)| Step::Copy {
            dest: format!("{INTERPRETER_DIR}/{rel}"),
            content_base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            mode: Some(0o644),
            user: StepUser::Root,
        })
        .collect();
    steps.push(Step::Run {
        cmd: format!("chmod -R a+rX {INTERPRETER_DIR}"),
        user: StepUser::Root,
        timeout_secs: None,
    });
    TemplateSpec {
        name: "code-interpreter-v1".into(),
        from: "code-interpreter".into(),
        steps,
        start: Some(StartCommand {
            cmd: format!(
                "cd /home/user && PYTHONPATH={INTERPRETER_DIR} exec python3 -m firkin_interpreter --port {INTERPRETER_PORT}"
            ),
            // As root, as E2B's Jupyter server runs its kernels: code may use any cwd (`/root`
            // included) and HOME is /root; the default cwd stays /home/user.
            user: StepUser::Root,
        }),
        ready: Some(ReadyCheck::Http { port: INTERPRETER_PORT, path: "/health".into() }),
        ready_timeout_secs: Some(180),
        cpu_count: None,
        // A warm kernel with numpy, pandas and matplotlib imported, plus room for user work.
        memory_mb: Some(1024),
        disk_size_mb: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_specs_are_valid() {
        for id in BUILTIN_IDS {
            let s = spec(id).unwrap();
            assert_eq!(s.name, *id);
            s.validate().unwrap();
        }
        assert!(spec("nope").is_none());
    }
}
