//! Compiles the CO-RE eBPF programs in `bpf/*.bpf.c` into `OUT_DIR`, where
//! `src/observe/bpf.rs` embeds them.
//!
//! Needs clang (BPF target) and, for `vmlinux.h`, bpftool plus the build host's
//! `/sys/kernel/btf/vmlinux`. The programs are CO-RE: the header only has to name the types,
//! the running kernel's BTF fixes the offsets at load time, so any recent kernel's header will
//! do. Without the tools the crate still builds: every object is left empty, the cfg
//! `chaos_no_bpf` is set, and the observer reports at run time why eBPF is unavailable.
//!
//! Environment: `CHAOS_BPF_CLANG` (clang to use; a path that does not exist disables eBPF,
//! which is how the no-toolchain build is tested), `CHAOS_BPF_BPFTOOL`, `CHAOS_BPF_BTF`
//! (BTF file to dump, default `/sys/kernel/btf/vmlinux`), `CHAOS_BPF_VMLINUX_H` (use this
//! header instead of generating one), `CHAOS_BPF_STRICT=1` (fail the build instead of falling
//! back).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The objects `src/observe/bpf/programs.rs` embeds (`bpf/<name>.bpf.c`).
const EMBEDDED: &[&str] = &["process", "oom", "tcp", "sched", "block", "probe"];

const FIX: &str =
    "apt-get install clang llvm libbpf-dev bpftool (or set CHAOS_BPF_CLANG / CHAOS_BPF_BPFTOOL)";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(chaos_no_bpf)");
    println!("cargo:rerun-if-changed=build.rs");
    for var in [
        "CHAOS_BPF_CLANG",
        "CHAOS_BPF_BPFTOOL",
        "CHAOS_BPF_BTF",
        "CHAOS_BPF_VMLINUX_H",
        "CHAOS_BPF_STRICT",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let src_dir = manifest.join("bpf");
    println!("cargo:rerun-if-changed={}", src_dir.display());

    let sources = bpf_sources(&src_dir);
    for entry in fs::read_dir(&src_dir).into_iter().flatten().flatten() {
        println!("cargo:rerun-if-changed={}", entry.path().display());
    }
    // Every object the Rust side embeds must exist, even when it cannot be built.
    let placeholders: Vec<String> = EMBEDDED
        .iter()
        .map(|s| s.to_string())
        .chain(sources.iter().map(|(n, _)| n.clone()))
        .collect();
    for name in &placeholders {
        let obj = out.join(format!("{name}.bpf.o"));
        if let Err(e) = fs::write(&obj, b"") {
            panic!("cannot write {}: {e}", obj.display());
        }
    }

    let note = match build(&src_dir, &sources, &out) {
        Ok(()) => String::new(),
        Err(why) => {
            if env::var("CHAOS_BPF_STRICT").is_ok_and(|v| v == "1") {
                panic!("eBPF programs not built: {why}. Fix: {FIX}");
            }
            let why = why.lines().map(str::trim).collect::<Vec<_>>().join(" | ");
            println!("cargo:warning=eBPF observers disabled: {why}. Fix: {FIX}, then rebuild");
            println!("cargo:rustc-cfg=chaos_no_bpf");
            for name in &placeholders {
                let _ = fs::write(out.join(format!("{name}.bpf.o")), b"");
            }
            why
        }
    };
    // Read by bpf.rs to explain, at run time, why nothing can load.
    println!("cargo:rustc-env=CHAOS_BPF_BUILD_NOTE={note}");
}

/// `(name, path)` of every `bpf/<name>.bpf.c`, sorted.
fn bpf_sources(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let name = path
                .file_name()?
                .to_str()?
                .strip_suffix(".bpf.c")?
                .to_owned();
            Some((name, path))
        })
        .collect();
    v.sort();
    v
}

fn build(src_dir: &Path, sources: &[(String, PathBuf)], out: &Path) -> Result<(), String> {
    if sources.is_empty() {
        return Err(format!("no {}/*.bpf.c sources", src_dir.display()));
    }
    let clang = env::var("CHAOS_BPF_CLANG").unwrap_or_else(|_| "clang".into());
    match Command::new(&clang).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => return Err(format!("`{clang} --version` failed: {}", first_line(&o))),
        Err(e) => return Err(format!("clang not found (`{clang}`: {e})")),
    }
    vmlinux_h(out)?;

    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") | Ok("x86") => "x86",
        Ok("aarch64") => "arm64",
        Ok("arm") => "arm",
        Ok("riscv64") => "riscv",
        Ok("powerpc64") => "powerpc",
        Ok("s390x") => "s390",
        Ok("loongarch64") => "loongarch",
        Ok(other) => return Err(format!("no eBPF target arch mapping for {other}")),
        Err(_) => "x86",
    };

    // Compile concurrently; each clang is single-threaded.
    let children: Vec<_> = sources
        .iter()
        .map(|(name, path)| {
            let obj = out.join(format!("{name}.bpf.o"));
            let child = Command::new(&clang)
                .args(["-target", "bpf", &format!("-D__TARGET_ARCH_{arch}")])
                .args(["-mcpu=v3", "-g", "-O2", "-Wall"])
                .arg("-I")
                .arg(out)
                .arg("-I")
                .arg(src_dir)
                .arg("-c")
                .arg(path)
                .arg("-o")
                .arg(&obj)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn();
            (name, obj, child)
        })
        .collect();
    let mut errors = Vec::new();
    for (name, obj, child) in children {
        match child.and_then(|c| c.wait_with_output()) {
            Ok(o) if o.status.success() => {
                for line in String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .filter(|l| l.contains("warning:"))
                {
                    println!("cargo:warning=bpf/{name}.bpf.c: {line}");
                }
                strip_dwarf(&obj);
            }
            Ok(o) => {
                // The first few errors say enough; the rest usually follow from them.
                let stderr = String::from_utf8_lossy(&o.stderr);
                let first: Vec<_> = stderr
                    .lines()
                    .filter(|l| l.contains("error:"))
                    .take(3)
                    .collect();
                errors.push(format!(
                    "clang failed on bpf/{name}.bpf.c: {}",
                    first.join(" | ")
                ));
            }
            Err(e) => errors.push(format!("cannot run clang on bpf/{name}.bpf.c: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Writes `OUT_DIR/vmlinux.h`: a given header, or one dumped from the build host's BTF.
fn vmlinux_h(out: &Path) -> Result<(), String> {
    let dest = out.join("vmlinux.h");
    if let Ok(given) = env::var("CHAOS_BPF_VMLINUX_H") {
        println!("cargo:rerun-if-changed={given}");
        return fs::copy(&given, &dest)
            .map(drop)
            .map_err(|e| format!("cannot copy CHAOS_BPF_VMLINUX_H={given}: {e}"));
    }
    let btf = env::var("CHAOS_BPF_BTF").unwrap_or_else(|_| "/sys/kernel/btf/vmlinux".into());
    if !Path::new(&btf).exists() {
        return Err(format!(
            "{btf} is missing (kernel built without CONFIG_DEBUG_INFO_BTF), cannot generate vmlinux.h; \
             set CHAOS_BPF_VMLINUX_H to a header from another machine"
        ));
    }
    let bpftool = find_bpftool()?;
    let o = Command::new(&bpftool)
        .args(["btf", "dump", "file", &btf, "format", "c"])
        .output()
        .map_err(|e| format!("cannot run bpftool `{bpftool}`: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "`{bpftool} btf dump file {btf} format c` failed: {}",
            first_line(&o)
        ));
    }
    fs::write(&dest, &o.stdout).map_err(|e| format!("cannot write {}: {e}", dest.display()))
}

fn find_bpftool() -> Result<String, String> {
    if let Ok(b) = env::var("CHAOS_BPF_BPFTOOL") {
        return Ok(b);
    }
    // Debian puts bpftool in /usr/sbin, which is not on every user's PATH.
    for candidate in ["bpftool", "/usr/sbin/bpftool", "/usr/local/sbin/bpftool"] {
        if Command::new(candidate)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(candidate.into());
        }
    }
    Err("bpftool not found (needed to generate vmlinux.h)".into())
}

/// Drops DWARF (BTF stays): ~650 KB -> ~50 KB per embedded object. Best effort.
fn strip_dwarf(obj: &Path) {
    let strip = env::var("CHAOS_BPF_CLANG")
        .ok()
        .and_then(|c| {
            let p = Path::new(&c).with_file_name("llvm-strip");
            p.exists().then(|| p.display().to_string())
        })
        .unwrap_or_else(|| "llvm-strip".into());
    let _ = Command::new(strip).arg("-g").arg(obj).output();
}

fn first_line(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    let text = if err.trim().is_empty() {
        String::from_utf8_lossy(&o.stdout)
    } else {
        err
    };
    text.lines().next().unwrap_or("").trim().to_owned()
}
