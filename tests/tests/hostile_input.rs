//! Hostile input, data-driven: every case file of tests/corpus/hostile runs
//! against the real plugin binaries, each command it names, on a node where
//! another container (B) holds a live attachment. Every run must end with
//! the CNI error JSON and the code the case names (or success where the
//! case says the input is tolerated), a non-zero exit for errors, no panic,
//! and no change at all: files under the node's directories (state, sysfs,
//! decoys outside), links, addresses, routes and rules of both pods, the
//! VFs in the host. Adding a case is adding a file (see the corpus README).

mod common;
mod hostile;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hostile::corpus::{self, Case, Expect, Stdin};
use hostile::fixtures::{ATTACKER, Fixture};
use hostile::snapshot;
use serde_json::Value;

/// A run that takes longer than this is a hang (lock waits are 30-60 s, and
/// no hostile input may reach one).
const HANG: Duration = Duration::from_secs(20);

struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

fn exec(plugin: &str, env: &BTreeMap<String, OsString>, stdin: Vec<u8>) -> Run {
    let mut child = Command::new(bin(plugin))
        .env_clear()
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    let mut pipe = child.stdin.take().expect("stdin pipe");
    // The plugin stops reading past its 4 MiB limit: the writer then sees EPIPE.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&stdin);
    });
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + HANG;
    let mut exited = false;
    while !exited && Instant::now() < deadline {
        exited = matches!(child.try_wait(), Ok(Some(_)));
        if !exited {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    if !exited {
        let _ = child.kill();
    }
    // Reaps it (or returns the status try_wait saw).
    let status = child.wait().ok().filter(|_| exited);
    let _ = writer.join();
    Run {
        status: status.and_then(|s| s.code()),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// What a case's `setup` made, and what it moved aside to make room (a
/// lock file that persists, say), for `teardown`.
#[derive(Default)]
struct Made {
    paths: Vec<PathBuf>,
    saved: Vec<(PathBuf, PathBuf)>,
}

/// Creates what a case's `setup` asks for.
fn setup(fx: &Fixture, case: &Case, made: &mut Made) -> Result<(), String> {
    for step in &case.setup {
        let step = corpus::substitute(step, &fx.vars);
        let path = |k: &str| step.get(k).and_then(Value::as_str).map(PathBuf::from);
        let at = ["symlink", "write", "mkfifo", "hardlink", "mkdir"]
            .iter()
            .find_map(|k| path(k))
            .ok_or_else(|| format!("unknown setup step {step}"))?;
        if std::fs::symlink_metadata(&at).is_ok() {
            let aside = PathBuf::from(format!("{}.hostile-saved", at.display()));
            std::fs::rename(&at, &aside).map_err(|e| format!("move {}: {e}", at.display()))?;
            made.saved.push((aside, at.clone()));
        }
        let target = if let Some(link) = path("symlink") {
            let to = path("to").ok_or("symlink without \"to\"")?;
            symlink(&to, &link).map_err(|e| format!("symlink {}: {e}", link.display()))?;
            link
        } else if let Some(file) = path("write") {
            let text = match (step.get("text"), step.get("json")) {
                (Some(Value::String(t)), _) => t.clone(),
                (_, Some(j)) => j.to_string(),
                _ => return Err("write without text or json".into()),
            };
            std::fs::write(&file, text).map_err(|e| format!("write {}: {e}", file.display()))?;
            file
        } else if let Some(fifo) = path("mkfifo") {
            let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())
                .map_err(|e| e.to_string())?;
            // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                return Err(format!(
                    "mkfifo {}: {}",
                    fifo.display(),
                    std::io::Error::last_os_error()
                ));
            }
            fifo
        } else if let Some(link) = path("hardlink") {
            let to = path("to").ok_or("hardlink without \"to\"")?;
            std::fs::hard_link(&to, &link).map_err(|e| format!("link {}: {e}", link.display()))?;
            link
        } else if let Some(dir) = path("mkdir") {
            std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            dir
        } else {
            unreachable!("a setup key was found above")
        };
        if let Some(uid) = step.get("uid").and_then(Value::as_u64) {
            std::os::unix::fs::lchown(&target, Some(uid as u32), Some(uid as u32))
                .map_err(|e| format!("chown {}: {e}", target.display()))?;
        }
        made.paths.push(target);
    }
    Ok(())
}

fn teardown(made: Made) {
    for p in made.paths.into_iter().rev() {
        let is_dir = std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
        let _ = if is_dir {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
    }
    for (aside, at) in made.saved.into_iter().rev() {
        let _ = std::fs::rename(aside, at);
    }
}

fn environment(fx: &Fixture, case: &Case, command: &str) -> BTreeMap<String, OsString> {
    let mut env: BTreeMap<String, OsString> = [
        ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin".to_string()),
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", ATTACKER.to_string()),
        ("CNI_NETNS", fx.attacker_ns.path()),
        ("CNI_IFNAME", "net1".to_string()),
        ("CNI_PATH", fx.cni_path.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into()))
    .collect();
    for (k, v) in &case.env {
        match v {
            Value::Null => {
                env.remove(k);
            }
            Value::String(s) => {
                env.insert(k.clone(), corpus::subst_str(s, &fx.vars).into());
            }
            other => {
                env.insert(k.clone(), other.to_string().into());
            }
        }
    }
    for (k, bytes) in &case.env_hex {
        env.insert(k.clone(), OsString::from_vec(bytes.clone()));
    }
    env
}

fn stdin(fx: &Fixture, case: &Case) -> Vec<u8> {
    match &case.stdin {
        Stdin::Patched(patch) => {
            let mut conf = fx.base.clone();
            if !patch.is_null() {
                corpus::merge(
                    &mut conf,
                    &corpus::expand(&corpus::substitute(patch, &fx.vars)),
                );
            }
            conf.to_string().into_bytes()
        }
        Stdin::Text(t) => corpus::subst_str(t, &fx.vars).into_bytes(),
        Stdin::Bytes(b) => b.clone(),
        Stdin::Repeat {
            prefix,
            unit,
            times,
            suffix,
        } => format!("{prefix}{}{suffix}", unit.repeat(*times)).into_bytes(),
    }
}

/// Checks one run's outcome against the case; Err says what is wrong.
fn judge(
    fx: &Fixture,
    case: &Case,
    command: &str,
    expect: &Expect,
    run: &Run,
) -> Result<(), String> {
    let Some(status) = run.status else {
        return Err(format!("hung for {HANG:?} (killed)"));
    };
    if run.stderr.contains("panicked") {
        return Err(format!("panicked: {}", run.stderr.trim()));
    }
    for secret in &case.never {
        if run.stdout.contains(secret.as_str()) || run.stderr.contains(secret.as_str()) {
            return Err(format!("{secret:?} was printed"));
        }
    }
    let out = run.stdout.trim();
    match expect {
        Expect::Ok => {
            if status != 0 {
                return Err(format!("want success, got exit {status}: {out}"));
            }
            let parsed: Option<Value> = serde_json::from_str(out).ok();
            if !out.is_empty() && parsed.as_ref().is_none_or(|v| v.get("code").is_some()) {
                return Err(format!("success printed an error or garbage: {out}"));
            }
        }
        Expect::Code(code) => {
            let e: Value = serde_json::from_str(out)
                .map_err(|err| format!("stdout is not one JSON document ({err}): {out:?}"))?;
            let msg = e["msg"].as_str().unwrap_or_default();
            if e["code"].as_u64() != Some(*code) {
                return Err(format!("want code {code}, got {e}"));
            }
            if status == 0 {
                return Err(format!("error JSON with exit 0: {out}"));
            }
            if msg.is_empty() || !e["cniVersion"].is_string() {
                return Err(format!("error without msg or cniVersion: {out}"));
            }
            for needle in case.msg.get(command).into_iter().flatten() {
                let needle = corpus::subst_str(needle, &fx.vars);
                if !msg.contains(&needle) {
                    return Err(format!("msg lacks {needle:?}: {msg}"));
                }
            }
        }
    }
    Ok(())
}

fn run_case(fx: &Fixture, case: &Case, command: &str, expect: &Expect) -> Result<(), String> {
    let mut made = Made::default();
    let ready = setup(fx, case, &mut made);
    let before = snapshot::take(&fx.watch);
    let run = ready.map(|()| exec(fx.plugin, &environment(fx, case, command), stdin(fx, case)));
    let after = snapshot::take(&fx.watch);
    teardown(made);
    let run = run?;
    let verdict = judge(fx, case, command, expect, &run);
    let mut changed = snapshot::diff(&before, &after);
    changed.retain(|line| !case.tolerate.iter().any(|t| line.contains(t.as_str())));
    match (verdict, changed.is_empty()) {
        (Ok(()), true) => Ok(()),
        (v, _) => Err(format!(
            "{}{}",
            v.err().map(|e| format!("{e}\n")).unwrap_or_default(),
            if changed.is_empty() {
                String::new()
            } else {
                format!("state changed:\n    {}\n", changed.join("\n    "))
            }
        )),
    }
}

fn run_corpus(plugin: &'static str) {
    require_root();
    let cases = corpus::load(plugin).unwrap_or_else(|e| panic!("corpus: {e}"));
    let fx = Fixture::new(plugin);
    fx.control();
    snapshot::settled(&fx.watch);
    let mut failures = Vec::new();
    let mut runs = 0;
    for case in &cases {
        for (command, expect) in &case.expect {
            runs += 1;
            if let Err(e) = run_case(&fx, case, command, expect) {
                failures.push(format!(
                    "{plugin} {} {command} ({}):\n  {}",
                    case.name, case.about, e
                ));
            }
        }
    }
    fx.finish();
    eprintln!("{plugin}: {} cases, {runs} runs", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {runs} hostile runs of {plugin} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn sriov_survives_the_hostile_corpus() {
    run_corpus("sriov");
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn ib_sriov_survives_the_hostile_corpus() {
    run_corpus("ib-sriov");
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn rdma_survives_the_hostile_corpus() {
    run_corpus("rdma");
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn ippool_survives_the_hostile_corpus() {
    run_corpus("ippool");
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn coordinator_survives_the_hostile_corpus() {
    run_corpus("coordinator");
}

/// The corpus itself: every file parses, every plugin gets every command,
/// every code named is one the suite defines (README "Error codes").
#[test]
fn the_corpus_is_well_formed_and_covers_every_plugin_and_command() {
    const CODES: [u64; 20] = [
        1, 2, 3, 4, 5, 6, 7, 11, 50, 51, 100, 101, 102, 103, 104, 105, 106, 107, 108, 999,
    ];
    let mut total = 0;
    for plugin in corpus::PLUGINS {
        let cases = corpus::load(plugin).unwrap_or_else(|e| panic!("corpus: {e}"));
        let mut commands = std::collections::BTreeSet::new();
        for case in &cases {
            for (cmd, e) in &case.expect {
                commands.insert(cmd.as_str());
                if let Expect::Code(c) = e {
                    assert!(
                        CODES.contains(c),
                        "{}: code {c} is not a suite code",
                        case.name
                    );
                }
            }
        }
        assert_eq!(
            commands.into_iter().collect::<Vec<_>>(),
            ["ADD", "CHECK", "DEL", "GC", "STATUS", "VERSION"],
            "{plugin}: commands without a hostile case"
        );
        total += cases.len();
    }
    assert!(total > 0);
}
