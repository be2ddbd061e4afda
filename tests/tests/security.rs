//! Security: what an attacker with a foot on the node, or a careless
//! operator, can do to the suite.
//!
//! - State and lock files refuse symlinks, other owners, FIFOs and extra
//!   hard links, and whatever they point at stays untouched (libcni::state,
//!   then the plugins: tests/corpus/hostile has the per-plugin cases).
//! - etcd over TLS with self-made certificates and client-certificate
//!   authentication, plus etcd user authentication: ippool ADD/DEL work; a
//!   wrong CA, a missing client certificate or a wrong password fail with
//!   "try again later" (11) on ADD, "not available" (50) on STATUS, naming
//!   the endpoint.
//! - Logs (stderr and logFile, at the most verbose level) and stdout never
//!   contain the etcd password, private key material or auth tokens.
//! - DEL of one container never touches another's state, whatever IDs it
//!   gives (file store and etcd; the per-plugin cases are in the corpus).

mod common;

use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use libcni::state::{DoubleBufferedFile, FileLock, StateDir, StateError};
use serde_json::{Value, json};

const NOBODY: u32 = 65534;
const SECRET: &str = "This passwd must never be logged";
const DECOY: &[u8] = b"root:x:0:0:root:/root:/bin/bash\n";

/// A directory holding a passwd-like file outside the state directory.
struct Target {
    dir: tempfile::TempDir,
}

impl Target {
    fn new() -> Target {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("passwd"), DECOY).expect("decoy");
        Target { dir }
    }

    fn passwd(&self) -> PathBuf {
        self.dir.path().join("passwd")
    }

    fn state(&self) -> StateDir {
        StateDir::open(&self.dir.path().join("state")).expect("state dir")
    }

    fn assert_untouched(&self) {
        let p = self.passwd();
        assert_eq!(
            std::fs::read(&p).expect("read decoy"),
            DECOY,
            "target changed"
        );
        let m = std::fs::symlink_metadata(&p).expect("meta");
        assert_eq!(
            (m.uid(), m.nlink()),
            (0, 1),
            "target owner or links changed"
        );
    }
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).expect("chown");
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Runs `f`, failing if it takes longer than 5 s (a blocked open).
fn quickly<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("{what} blocked"))
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root (chown)")]
fn state_files_refuse_symlinks_and_leave_the_target_untouched() {
    require_root();
    let t = Target::new();
    let dir = t.state();
    symlink(t.passwd(), dir.path().join("rec.json")).expect("symlink");
    symlink(t.passwd(), dir.path().join("vf.lock")).expect("symlink");
    for e in [
        dir.read("rec.json").map(drop).expect_err("read"),
        dir.open_rw("rec.json").map(drop).expect_err("open_rw"),
        DoubleBufferedFile::open(&dir, "rec.json", b"IPPOOL\x02\n")
            .map(drop)
            .expect_err("double-buffered"),
        FileLock::acquire(&dir, "vf.lock", Duration::from_millis(50))
            .map(drop)
            .expect_err("lock"),
    ] {
        assert!(matches!(e, StateError::Symlink { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("refusing") && msg.contains("symlink"), "{msg}");
    }
    // Writes refuse too (the rename would not follow the link, but a
    // planted link is tampering to report); removing deletes the link only.
    let e = dir
        .write("rec.json", b"{\"version\":1}")
        .expect_err("write");
    assert!(matches!(e, StateError::Symlink { .. }), "{e}");
    assert!(std::fs::symlink_metadata(dir.path().join("rec.json")).is_ok_and(|m| m.is_symlink()));
    dir.remove("rec.json").expect("remove");
    t.assert_untouched();
    // A state directory that is a symlink is refused too.
    let link = t.dir.path().join("state-link");
    symlink(t.dir.path(), &link).expect("symlink");
    let e = StateDir::open(&link).expect_err("dir symlink");
    assert!(matches!(e, StateError::Symlink { .. }), "{e}");
    t.assert_untouched();
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root (chown)")]
fn state_files_of_another_owner_are_refused() {
    require_root();
    let t = Target::new();
    let dir = t.state();
    for name in ["rec.json", "pool.state", "vf.lock"] {
        std::fs::write(dir.path().join(name), b"{\"version\":1}").expect("write");
        chown(&dir.path().join(name), NOBODY);
    }
    let errors = [
        dir.read("rec.json").map(drop).expect_err("read"),
        dir.read_json::<Value>("rec.json", 1)
            .map(drop)
            .expect_err("json"),
        dir.open_rw("pool.state").map(drop).expect_err("open_rw"),
        DoubleBufferedFile::open(&dir, "pool.state", b"IPPOOL\x02\n")
            .map(drop)
            .expect_err("double-buffered"),
        FileLock::acquire(&dir, "vf.lock", Duration::from_millis(50))
            .map(drop)
            .expect_err("lock"),
    ];
    let write = dir
        .write("rec.json", b"{}")
        .expect_err("write over a foreign file");
    for e in errors.into_iter().chain([write]) {
        let msg = e.to_string();
        assert!(
            matches!(e, StateError::ForeignOwner { uid: NOBODY, .. }),
            "{msg}"
        );
        assert!(msg.contains("owned by uid 65534, not by us"), "{msg}");
    }
    for name in ["rec.json", "pool.state", "vf.lock"] {
        let m = std::fs::metadata(dir.path().join(name)).expect("meta");
        assert_eq!(m.uid(), NOBODY, "{name} was taken over");
    }
    // A state directory of another owner, or one inside it, is refused.
    let foreign = t.dir.path().join("foreign");
    std::fs::create_dir(&foreign).expect("mkdir");
    chown(&foreign, NOBODY);
    let e = StateDir::open(&foreign).expect_err("foreign dir");
    assert!(matches!(e, StateError::ForeignOwner { .. }), "{e}");
    // The CNI error a plugin prints for it: I/O on state files (5).
    assert_eq!(libcni::Error::from(e).code(), 5);
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn fifos_and_hard_links_are_refused_without_blocking() {
    require_root();
    let t = Target::new();
    let dir = t.state();
    mkfifo(&dir.path().join("rec.json"));
    mkfifo(&dir.path().join("vf.lock"));
    let d = dir.clone();
    let e = quickly("read of a FIFO", move || d.read("rec.json").map(drop));
    assert!(matches!(e, Err(StateError::NotRegular { .. })), "{e:?}");
    let d = dir.clone();
    let e = quickly("open_rw of a FIFO", move || d.open_rw("rec.json").map(drop));
    assert!(matches!(e, Err(StateError::NotRegular { .. })), "{e:?}");
    let d = dir.clone();
    let e = quickly("lock on a FIFO", move || {
        FileLock::acquire(&d, "vf.lock", Duration::from_millis(50)).map(drop)
    });
    assert!(matches!(e, Err(StateError::NotRegular { .. })), "{e:?}");
    // A hard link to a file elsewhere: an in-place update would write through it.
    std::fs::hard_link(t.passwd(), dir.path().join("pool.state")).expect("link");
    let e = DoubleBufferedFile::open(&dir, "pool.state", b"IPPOOL\x02\n").map(drop);
    match e {
        Err(StateError::HardLinked { links: 2, .. }) => {}
        other => panic!("hard link not refused: {other:?}"),
    }
    let e = dir.read("pool.state").map(drop).expect_err("read");
    assert!(e.to_string().contains("has 2 hard links"), "{e}");
    std::fs::remove_file(dir.path().join("pool.state")).expect("unlink");
    t.assert_untouched();
}

// ---------------------------------------------------------------- etcd, TLS

fn tool(cmd: &str, args: &[&str], dir: &Path) {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} (Debian package openssl/etcd-client): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Self-made certificates: a CA, etcd's server certificate (127.0.0.1), a
/// client certificate (CN root), an unrelated CA, and etcd's JWT signing keys.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let mut a = vec!["req", "-x509"];
            a.extend(ec);
            let (key, pem, subj) = (
                format!("{ca}.key"),
                format!("{ca}.pem"),
                format!("/CN={ca}"),
            );
            a.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj]);
            tool("openssl", &a, d);
        }
        for (name, cn, ext) in [
            ("server", "etcd-test", "subjectAltName=IP:127.0.0.1"),
            ("client", "root", "subjectAltName=DNS:root"),
        ] {
            let eku = if name == "server" {
                "extendedKeyUsage=serverAuth,clientAuth"
            } else {
                "extendedKeyUsage=clientAuth"
            };
            let (key, csr, pem, subj) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("/CN={cn}"),
            );
            let mut a = vec!["req"];
            a.extend(ec);
            a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            a.extend(["-addext", ext, "-addext", eku]);
            tool("openssl", &a, d);
            tool(
                "openssl",
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-copy_extensions",
                    "copyall",
                ],
                d,
            );
        }
        tool("openssl", &["genrsa", "-out", "jwt.key", "2048"], d);
        tool(
            "openssl",
            &["rsa", "-in", "jwt.key", "-pubout", "-out", "jwt.pub"],
            d,
        );
        Pki { dir }
    }

    fn path(&self, f: &str) -> String {
        self.dir.path().join(f).display().to_string()
    }

    /// Lines of private key material that must never be logged.
    fn secrets(&self) -> Vec<String> {
        let mut s = vec![SECRET.to_string()];
        for key in ["client.key", "server.key", "ca.key"] {
            let pem = std::fs::read_to_string(self.path(key)).expect("key");
            s.extend(
                pem.lines()
                    .filter(|l| !l.starts_with("-----") && l.len() > 20)
                    .map(str::to_string),
            );
        }
        s
    }
}

/// etcd over TLS only, client certificates required, users and JWT tokens on.
struct TlsEtcd {
    child: std::process::Child,
    _data: tempfile::TempDir,
    endpoint: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl TlsEtcd {
    fn start(pki: &Pki) -> TlsEtcd {
        let data = tempfile::tempdir().expect("tempdir");
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("https://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(data.path().join("etcd.log")).expect("log");
        let token = format!(
            "jwt,pub-key={},priv-key={},sign-method=RS256,ttl=10m",
            pki.path("jwt.pub"),
            pki.path("jwt.key")
        );
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(data.path().join("data"))
            .args([
                "--listen-client-urls",
                &endpoint,
                "--advertise-client-urls",
                &endpoint,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("t={peer_url}")])
            .args([
                "--cert-file",
                &pki.path("server.pem"),
                "--key-file",
                &pki.path("server.key"),
            ])
            .args([
                "--trusted-ca-file",
                &pki.path("ca.pem"),
                "--client-cert-auth",
            ])
            .args(["--auth-token", &token])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (Debian package etcd-server)");
        let etcd = TlsEtcd {
            child,
            _data: data,
            endpoint,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !etcd.ctl(pki, &["endpoint", "health"]).0 {
            assert!(
                Instant::now() < deadline,
                "etcd over TLS did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let (ok, out) = etcd.ctl(
            pki,
            &[
                "user",
                "add",
                "root",
                &format!("--new-user-password={SECRET}"),
            ],
        );
        assert!(ok, "user add: {out}");
        let (ok, out) = etcd.ctl(pki, &["auth", "enable"]);
        assert!(ok, "auth enable: {out}");
        etcd
    }

    /// etcdctl with the client certificate (CN root: etcd's cert-based user).
    fn ctl(&self, pki: &Pki, args: &[&str]) -> (bool, String) {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &self.endpoint,
                "--cacert",
                &pki.path("ca.pem"),
            ])
            .args([
                "--cert",
                &pki.path("client.pem"),
                "--key",
                &pki.path("client.key"),
            ])
            .args(args)
            .output()
            .expect("etcdctl (Debian package etcd-client)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn keys(&self, pki: &Pki, prefix: &str) -> Vec<String> {
        let (ok, out) = self.ctl(pki, &["get", "--prefix", prefix, "--keys-only"]);
        assert!(ok, "etcdctl get: {out}");
        out.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ippool's config for the TLS etcd; `etcd` keys merged over the good ones.
fn etcd_conf(pki: &Pki, etcd: &TlsEtcd, log: &Path, over: Value) -> Value {
    let mut e = json!({"endpoints": [etcd.endpoint], "prefix": "/sec", "timeout": "3s",
                       "cacert": pki.path("ca.pem"), "cert": pki.path("client.pem"),
                       "key": pki.path("client.key"), "username": "root", "password": SECRET});
    for (k, v) in over.as_object().cloned().unwrap_or_default() {
        if v.is_null() {
            e.as_object_mut().map(|o| o.remove(&k));
        } else {
            e[k] = v;
        }
    }
    json!({"cniVersion": "1.1.0", "name": "rail1",
           "ipam": {"type": "ippool", "store": "etcd", "etcd": e, "poolsDir": "/nonexistent",
                    "pools": [{"name": "p", "subnet": "10.66.0.0/24", "ips": ["10.66.0.1-10.66.0.9"]}],
                    "default_ipv4_ippool": ["p"], "logLevel": "trace", "logFile": log}})
}

/// Nothing secret in what a run printed or logged.
fn assert_no_secrets(pki: &Pki, what: &str, texts: &[&str]) {
    for text in texts {
        for s in pki.secrets() {
            assert!(
                !text.contains(&s),
                "{what}: secret {s:?} leaked in:\n{text}"
            );
        }
        for marker in ["PRIVATE KEY", "eyJhbGci", "\"token\"", "authorization"] {
            assert!(
                !text.contains(marker),
                "{what}: {marker:?} appears in:\n{text}"
            );
        }
    }
}

fn ippool_call(command: &str, cid: &str) -> Call {
    Call::new(command, cid, "/var/run/netns/unused-by-ipam", "net1")
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn etcd_over_tls_with_client_certificates_and_auth_serves_add_check_del() {
    require_root();
    let pki = Pki::new();
    let etcd = TlsEtcd::start(&pki);
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("ippool.log");
    let conf = etcd_conf(&pki, &etcd, &log, json!({}));
    let mut printed = Vec::new();

    let add = ippool_call("ADD", "tls-1").run("ippool", &conf);
    let result = add.ok();
    assert_eq!(result["ips"][0]["address"], "10.66.0.1/24");
    assert!(
        etcd.keys(&pki, "/sec/pools/p/owner/")
            .iter()
            .any(|k| k.ends_with("/tls-1/net1")),
        "no owner key in etcd"
    );
    let check = ippool_call("CHECK", "tls-1").run("ippool", &with_prev(&conf, &result));
    check.ok();
    let status = ippool_call("STATUS", "tls-1").run("ippool", &conf);
    status.ok();
    let del = ippool_call("DEL", "tls-1").run("ippool", &conf);
    del.ok();
    assert!(
        etcd.keys(&pki, "/sec/pools/p/owner/").is_empty(),
        "DEL left the owner key"
    );
    assert!(
        etcd.keys(&pki, "/sec/pools/p/ip/").is_empty(),
        "DEL left the address key"
    );
    for o in [&add, &check, &status, &del] {
        printed.push(o.stdout.clone());
        printed.push(o.stderr.clone());
    }
    let logged = std::fs::read_to_string(&log).expect("logFile written");
    assert!(logged.contains("ippool"), "logFile is empty: {logged:?}");
    // Four runs at trace level: the suite's own lines only. Before
    // libcni::logging filtered them, h2/hyper/rustls/tonic added 2300 lines
    // of connection internals, the kind of place tokens end up in.
    let lines = logged.lines().count();
    assert!(
        lines < 100,
        "dependency internals in the log ({lines} lines):\n{logged}"
    );
    printed.push(logged);
    let refs: Vec<&str> = printed.iter().map(String::as_str).collect();
    assert_no_secrets(&pki, "successful ADD/CHECK/STATUS/DEL", &refs);
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn etcd_trust_and_credential_failures_name_the_endpoint_and_leak_nothing() {
    require_root();
    let pki = Pki::new();
    let etcd = TlsEtcd::start(&pki);
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("ippool.log");
    let mut printed = Vec::new();
    for (case, over, hint) in [
        (
            "wrong CA",
            json!({"cacert": pki.path("other-ca.pem")}),
            "certificate",
        ),
        (
            "no client certificate",
            json!({"cert": null, "key": null}),
            "",
        ),
        (
            "wrong password",
            json!({"password": "not the password"}),
            "authentication",
        ),
    ] {
        let conf = etcd_conf(&pki, &etcd, &log, over);
        let add = ippool_call("ADD", "tls-2").run("ippool", &conf);
        assert_eq!(add.err_code(), 11, "{case}: ADD {}", add.stdout);
        let msg = add.err()["msg"].as_str().unwrap_or_default().to_string();
        assert!(
            msg.contains(&etcd.endpoint),
            "{case}: endpoint not named: {msg}"
        );
        assert!(
            msg.to_lowercase().contains(hint),
            "{case}: cause not named: {msg}"
        );
        eprintln!("{case}: ADD: {msg}");
        let status = ippool_call("STATUS", "tls-2").run("ippool", &conf);
        assert_eq!(status.err_code(), 50, "{case}: STATUS {}", status.stdout);
        assert!(
            status.stdout.contains(&etcd.endpoint),
            "{case}: {}",
            status.stdout
        );
        printed.extend([add.stdout, add.stderr, status.stdout, status.stderr]);
    }
    // Nothing was allocated by the failed runs.
    assert!(etcd.keys(&pki, "/sec/").is_empty());
    printed.push(std::fs::read_to_string(&log).expect("logFile written"));
    let refs: Vec<&str> = printed.iter().map(String::as_str).collect();
    assert_no_secrets(&pki, "failed runs", &refs);
}

// ----------------------------------------------------- container isolation

/// DEL (and GC) for containers whose IDs look like B's never release B's
/// address, in the file store and in etcd.
#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn del_of_lookalike_containers_never_releases_anothers_address() {
    require_root();
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = json!({"name": "p", "subnet": "10.67.0.0/24", "ips": ["10.67.0.1-10.67.0.9"]});
    let stores = [
        json!({"dataDir": dir.path().join("data")}),
        json!({"store": "etcd", "etcd": {"endpoints": [etcd.endpoint], "prefix": "/iso"}}),
    ];
    for store in stores {
        let mut ipam = json!({"type": "ippool", "poolsDir": "/nonexistent", "pools": [pool],
                              "default_ipv4_ippool": ["p"]});
        for (k, v) in store.as_object().cloned().unwrap_or_default() {
            ipam[k] = v;
        }
        let conf = json!({"cniVersion": "1.1.0", "name": "rail1", "ipam": ipam});
        let b = Call::new("ADD", "ctr-b", "/var/run/netns/b", "net1");
        let got = b.run("ippool", &conf).ok();
        assert_eq!(got["ips"][0]["address"], "10.67.0.1/24");
        for (cid, ifname) in [
            ("ctr", "b-net1"),
            ("ctr-b", "net10"),
            ("ctr-b", "net"),
            ("ctr-b.", "net1"),
            ("ctr-bnet1", "net1"),
            ("ctr-b-net1", "net1"),
            ("CTR-B", "net1"),
            ("ctr-b", "NET1"),
        ] {
            Call::new("DEL", cid, "/var/run/netns/b", ifname)
                .run("ippool", &conf)
                .ok();
            let again = b.run("ippool", &conf).ok();
            assert_eq!(
                again["ips"][0]["address"], "10.67.0.1/24",
                "DEL of {cid}/{ifname} released B's address ({store})"
            );
        }
        // GC keeping only lookalikes of B is a GC of B: this one must
        // release it (the keep list is what the runtime knows).
        let mut gc = conf.clone();
        gc["cni.dev/valid-attachments"] = json!([{"containerID": "ctr-b", "ifname": "net1"}]);
        Call::new("GC", "", "", "").run("ippool", &gc).ok();
        assert_eq!(
            b.run("ippool", &conf).ok()["ips"][0]["address"],
            "10.67.0.1/24"
        );
        b.with("DEL").run("ippool", &conf).ok();
    }
}
