//! Installing: scripts/install.sh into a temporary destination, the
//! DaemonSet's entrypoint (`install-cni --sleep`), and deploy/ checked
//! against the workspace's binaries (no image is built here).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::{PLUGINS, Run, mode_of, repo};
use crate::common::bin;

/// A copy of the test build's binaries (their content does not matter here).
fn binaries_copy(tmp: &Path) -> PathBuf {
    let from = tmp.join("from");
    fs::create_dir_all(&from).expect("mkdir");
    for b in PLUGINS.iter().chain(&["rdma-hostprep"]) {
        fs::copy(bin(b), from.join(b)).expect("copy");
    }
    from
}

fn inodes(dir: &Path, names: &[&str]) -> Vec<u64> {
    names
        .iter()
        .map(|n| fs::metadata(dir.join(n)).expect("stat").ino())
        .collect()
}

#[test]
fn install_sh_installs_atomically_with_0755_and_is_idempotent() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let from = binaries_copy(tmp.path());
    let (dest, prefix) = (tmp.path().join("opt/cni/bin"), tmp.path().join("usr/local"));
    let install = || {
        Run::of(
            Command::new(repo().join("scripts/install.sh"))
                .arg("--from")
                .arg(&from)
                .arg("--dest")
                .arg(&dest)
                .arg("--prefix")
                .arg(&prefix),
        )
    };
    let first = install().ok();
    for p in PLUGINS {
        assert_eq!(
            fs::read(dest.join(p)).expect("installed"),
            fs::read(from.join(p)).expect("source"),
            "{p}"
        );
        assert_eq!(mode_of(&dest.join(p)), 0o755, "{p}");
        assert!(
            first
                .stdout
                .contains(&format!("{p}: installed {}", dest.join(p).display())),
            "{}",
            first.stdout
        );
    }
    let tool = prefix.join("sbin/rdma-hostprep");
    assert_eq!(mode_of(&tool), 0o755);
    let mut names: Vec<_> = fs::read_dir(&dest)
        .expect("ls")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["coordinator", "ib-sriov", "ippool", "rdma", "sriov"],
        "nothing else (no temp files)"
    );

    let before = inodes(&dest, &PLUGINS);
    let second = install().ok();
    assert_eq!(
        second.stdout.matches("up to date").count(),
        6,
        "{}",
        second.stdout
    );
    assert_eq!(
        inodes(&dest, &PLUGINS),
        before,
        "identical binaries are not rewritten"
    );
    // A new build of one plugin replaces that one only, by rename.
    fs::write(from.join("rdma"), b"#!/bin/sh\necho new rdma\n").expect("w");
    install().ok();
    let after = inodes(&dest, &PLUGINS);
    assert_ne!(after[2], before[2]);
    assert_eq!(
        (after[0], after[1], after[3], after[4]),
        (before[0], before[1], before[3], before[4])
    );
    assert_eq!(
        fs::read(dest.join("rdma")).expect("read"),
        b"#!/bin/sh\necho new rdma\n"
    );

    // A missing binary changes nothing; bad options are refused.
    fs::remove_file(from.join("ippool")).expect("rm");
    let fresh = tmp.path().join("fresh");
    let r = Run::of(
        Command::new(repo().join("scripts/install.sh"))
            .arg("--from")
            .arg(&from)
            .arg("--dest")
            .arg(&fresh)
            .arg("--prefix")
            .arg(&prefix),
    );
    assert_ne!(r.status, 0);
    assert!(r.stderr.contains("ippool"), "{}", r.stderr);
    assert!(!fresh.join("sriov").exists());
    let r = Run::of(
        Command::new(repo().join("scripts/install.sh"))
            .args(["--dest", "relative/bin", "--from"])
            .arg(&from),
    );
    assert_eq!(r.status, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("--dest must be an absolute path"),
        "{}",
        r.stderr
    );
}

#[test]
fn daemonset_entrypoint_installs_then_sleeps_until_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let from = binaries_copy(tmp.path());
    let to = tmp.path().join("host/opt/cni/bin");
    let mut child = Command::new(bin("rdma-hostprep"))
        .args(["install-cni", "--from"])
        .arg(&from)
        .arg("--to")
        .arg(&to)
        .arg("--sleep")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    while !seen.contains("sleeping until SIGTERM") {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stdout, &mut line).expect("read");
        assert!(n > 0, "exited before sleeping: {seen}");
        seen.push_str(&line);
    }
    for p in PLUGINS {
        assert_eq!(mode_of(&to.join(p)), 0o755, "{p}");
    }
    // SAFETY: kill(2) on our own child's pid, which has not been reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().expect("wait");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("read");
    assert_eq!(status.code(), Some(0), "{seen}{rest}");
    assert_eq!(rest, "SIGTERM: exiting\n");
}

/// deploy/: the Dockerfile builds and copies exactly the workspace's
/// binaries, and the DaemonSet runs the entrypoint on them (the image itself
/// is not built here).
#[test]
fn deploy_files_name_the_workspace_binaries() {
    let meta = Run::of(
        Command::new(env!("CARGO"))
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .current_dir(repo()),
    )
    .ok();
    let meta: Value = serde_json::from_str(&meta.stdout).expect("metadata");
    // The test crate's own tools (cni-bench...) are not shipped.
    let mut bins: Vec<String> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p["name"] != "integration")
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["kind"] == json!(["bin"]))
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect();
    bins.sort();

    let dockerfile = fs::read_to_string(repo().join("deploy/Dockerfile")).expect("Dockerfile");
    let line = |prefix: &str| -> String {
        dockerfile
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} line"))
            .to_string()
    };
    let mut copied: Vec<String> = line("ARG BINARIES=")
        .trim()
        .trim_start_matches("ARG BINARIES=")
        .trim_matches('"')
        .split_whitespace()
        .map(str::to_string)
        .collect();
    copied.sort();
    assert_eq!(copied, bins, "the image carries every binary of the suite");
    assert!(
        line("RUN cargo build").contains("--release"),
        "release build"
    );
    for want in [
        "COPY --from=build /out/ /opt/rdma-cni/bin/",
        "ENTRYPOINT [\"/opt/rdma-cni/bin/rdma-hostprep\", \"install-cni\", \"--from\", \"/opt/rdma-cni/bin\", \"--to\", \"/host/opt/cni/bin\", \"--sleep\"]",
    ] {
        assert!(
            dockerfile.lines().any(|l| l.trim() == want),
            "Dockerfile lacks {want}"
        );
    }

    let ds: Value = serde_yaml_ng::from_str(
        &fs::read_to_string(repo().join("deploy/daemonset.yaml")).expect("yaml"),
    )
    .expect("parse");
    assert_eq!(
        (&ds["apiVersion"], &ds["kind"]),
        (&json!("apps/v1"), &json!("DaemonSet"))
    );
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"],
        ds["spec"]["template"]["metadata"]["labels"]
    );
    assert!(
        pod["tolerations"]
            .as_array()
            .expect("tolerations")
            .contains(&json!({"operator": "Exists"})),
        "runs on tainted nodes too"
    );
    let c = &pod["containers"][0];
    assert_eq!(
        c["volumeMounts"],
        json!([{"name": "cni-bin", "mountPath": "/host/opt/cni/bin"}])
    );
    assert_eq!(
        pod["volumes"],
        json!([{"name": "cni-bin", "hostPath": {"path": "/opt/cni/bin", "type": "DirectoryOrCreate"}}])
    );
    assert!(
        c.get("command").is_none() && c.get("args").is_none(),
        "the image's entrypoint runs"
    );
}
