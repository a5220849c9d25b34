//! The runtime's helper programs (the fault proxy, which is also the reaper, and the host
//! agent) when no binary of theirs is at hand: the test binary itself plays them.
//!
//! Inside this workspace cargo builds `chaos-proxy` and `chaos-agent` beside the tests, and a
//! team can install them or point `CHAOS_PROXY_BIN`/`CHAOS_AGENT_BIN` at them. A crate that
//! depends on `chaos-runtime` from crates.io has neither: cargo never builds a dependency's
//! binaries. Every test binary links this crate, which links both programs, so the runtime
//! copies the test binary's loadable part into the helper's container instead and sets
//! [`SELF_AS`] there. A constructor of this crate (run by the C runtime before `main`, so
//! before the test harness) sees that variable and runs the helper instead of the tests.

use std::path::PathBuf;

use crate::stack::{StackError, fixture_binary};

/// Set in a helper's container when the test binary was copied in to play it: the helper's
/// name (`chaos-proxy` or `chaos-agent`).
pub const SELF_AS: &str = "CHAOS_SELF_AS";

/// A helper program to copy into a container.
pub(crate) struct HelperBinary {
    /// The file (a built helper, or this test binary).
    pub path: PathBuf,
    /// `Some((SELF_AS, name))` when the file is this test binary: the container's environment
    /// must hold it.
    pub self_as: Option<(String, String)>,
}

impl HelperBinary {
    /// What goes into the container: the file's loadable part, read off the async runtime.
    pub async fn loadable(&self) -> Result<Vec<u8>, String> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            crate::system::loadable_part(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// `KEY=VALUE` entries for a container's environment.
    pub fn env(&self) -> Vec<String> {
        self.self_as
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }
}

/// The helper `name`: `$env` if set (an error if it names no file), a built one beside the
/// test binary or on `PATH`, else this test binary playing it.
pub(crate) fn binary(name: &'static str, env: &'static str) -> Result<HelperBinary, StackError> {
    match fixture_binary(name, env) {
        Ok(path) => Ok(HelperBinary {
            path,
            self_as: None,
        }),
        Err(e) if std::env::var_os(env).is_some() => Err(e),
        Err(e) => {
            // The constructor below must be linked into this binary: this reference keeps it.
            std::hint::black_box(&BE_A_HELPER);
            let path = std::env::current_exe().map_err(|_| e)?;
            static SAID: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
            let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
            if !said.contains(&name) {
                said.push(name);
                crate::progress::line(
                    "helper",
                    &format!(
                        "no {name} binary built beside the tests or on PATH: this test binary \
                         plays it in its container (set {env} to use another)"
                    ),
                );
            }
            Ok(HelperBinary {
                path,
                self_as: Some((SELF_AS.to_string(), name.to_string())),
            })
        }
    }
}

type Constructor =
    extern "C" fn(libc::c_int, *const *const libc::c_char, *const *const libc::c_char);

/// Run by glibc and musl before `main` with the process's arguments (the ELF `.init_array`).
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static BE_A_HELPER: Constructor = be_a_helper;

#[cfg(not(target_os = "linux"))]
static BE_A_HELPER: Constructor = be_a_helper;

extern "C" fn be_a_helper(
    argc: libc::c_int,
    argv: *const *const libc::c_char,
    _envp: *const *const libc::c_char,
) {
    let Some(name) = std::env::var_os(SELF_AS) else {
        return;
    };
    // std's own argument capture may not have run yet; read them as the C runtime gave them.
    let mut args = Vec::new();
    for i in 1..usize::try_from(argc).unwrap_or(0) {
        // SAFETY: the C runtime passes argc valid, NUL-terminated argv entries.
        let arg = unsafe { std::ffi::CStr::from_ptr(*argv.add(i)) };
        args.push(arg.to_string_lossy().into_owned());
    }
    // Rust's `main` would have ignored SIGPIPE; a helper writing to a closed socket (splice,
    // a client gone) must get EPIPE, not die.
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    match name.to_str() {
        Some("chaos-proxy") => chaos_proxy::main_with_args(args),
        Some("chaos-agent") => chaos_agent::main_with_args(args, crate::observe::bpf::serve),
        _ => {
            eprintln!(
                "{SELF_AS}={name:?}: not a helper this binary can play (chaos-proxy, chaos-agent)"
            );
            std::process::exit(2);
        }
    }
    std::process::exit(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_variable_naming_no_file_is_an_error_not_this_binary() {
        // SAFETY: this test's own variable; no other test reads it.
        unsafe { std::env::set_var("CHAOS_TEST_HELPER_BIN", "/nonexistent/helper") };
        let e = binary("chaos-test-helper", "CHAOS_TEST_HELPER_BIN").err();
        assert!(e.is_some_and(|e| e.to_string().contains("/nonexistent/helper")));
    }

    #[test]
    fn without_a_built_helper_this_binary_plays_it() {
        let h = binary("chaos-no-such-helper", "CHAOS_NO_SUCH_HELPER_BIN").unwrap();
        assert_eq!(h.path, std::env::current_exe().unwrap());
        assert_eq!(
            h.env(),
            vec!["CHAOS_SELF_AS=chaos-no-such-helper".to_string()]
        );
    }

    #[test]
    fn this_binary_plays_the_proxy_when_asked() {
        // The constructor runs before the harness: the binary answers as the proxy would.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--version")
            .env(SELF_AS, "chaos-proxy")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("chaos-proxy {}", env!("CARGO_PKG_VERSION"))
        );
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("nonsense")
            .env(SELF_AS, "chaos-agent")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage: chaos-agent session"));
    }
}
