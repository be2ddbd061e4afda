//! The sections of cni-bench and what they share: running a plugin process
//! as a runtime does and taking its wall time and peak RSS (wait4), medians,
//! Markdown tables, the machine's load.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod exec;
pub mod floor;
pub mod ipam;
pub mod memory;
pub mod moves;
pub mod pod;
pub mod rig;
pub mod route;

/// Debian's containernetworking-plugins (Go).
pub const GO_PLUGINS: &str = "/usr/lib/cni";

/// Where our binaries are.
pub struct Bins {
    /// `cargo build --release`: what users install.
    pub release: PathBuf,
    /// The release profile with the test-build features (simulated PF and
    /// RDMA subsystem): for `sriov` and `rdma` on stand-in VFs, which the
    /// release binaries cannot program (this kernel has no SR-IOV PF and no
    /// RDMA subsystem).
    pub sim: PathBuf,
}

impl Bins {
    pub fn ours(&self, name: &str) -> PathBuf {
        self.release.join(name)
    }

    pub fn sim(&self, name: &str) -> PathBuf {
        self.sim.join(name)
    }
}

pub fn go(name: &str) -> PathBuf {
    Path::new(GO_PLUGINS).join(name)
}

/// One plugin process: its wall time (spawn to reap), peak RSS and output.
pub struct Run {
    pub took: Duration,
    pub maxrss_kib: u64,
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The parsed result; aborts the benchmark when the plugin failed (a
    /// panic, not `exit`: unwinding deletes the namespaces and links made).
    pub fn ok(&self, what: &str) -> Value {
        assert!(
            self.status == 0,
            "{what} failed (exit {}): {}{}",
            self.status,
            self.stdout,
            self.stderr
        );
        serde_json::from_str(self.stdout.trim()).unwrap_or(Value::Null)
    }
}

/// A CNI invocation's environment.
#[derive(Clone, Debug)]
pub struct Call {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub cni_path: String,
    /// Measure peak RSS through GNU time (see `run_rss`).
    pub rss: bool,
}

impl Call {
    pub fn new(command: &str, container_id: &str, netns: &str, ifname: &str) -> Call {
        Call {
            command: command.into(),
            container_id: container_id.into(),
            netns: netns.into(),
            ifname: ifname.into(),
            cni_path: GO_PLUGINS.into(),
            rss: false,
        }
    }

    pub fn with(&self, command: &str) -> Call {
        Call {
            command: command.into(),
            ..self.clone()
        }
    }

    pub fn run(&self, plugin: &Path, conf: &Value) -> Run {
        (if self.rss { run_rss } else { run })(
            plugin,
            &[
                ("CNI_COMMAND", self.command.as_str()),
                ("CNI_CONTAINERID", self.container_id.as_str()),
                ("CNI_NETNS", self.netns.as_str()),
                ("CNI_IFNAME", self.ifname.as_str()),
                ("CNI_PATH", self.cni_path.as_str()),
            ],
            conf.to_string().as_bytes(),
        )
    }

    /// Runs and aborts the benchmark on failure.
    pub fn must(&self, plugin: &Path, conf: &Value) -> Run {
        let r = self.run(plugin, conf);
        r.ok(&format!(
            "{} {} {}",
            plugin.display(),
            self.command,
            self.container_id
        ));
        r
    }
}

/// Spawns `bin` with a clean environment plus `env`, feeds `stdin`, collects
/// the output and reaps it with wait4 for its resource usage.
pub fn run(bin: &Path, env: &[(&str, &str)], stdin: &[u8]) -> Run {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    spawn_and_reap(Command::new(bin), &env, stdin, bin)
}

// The child is reaped by `wait4` below (for its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn spawn_and_reap(mut cmd: Command, env: &[(String, String)], stdin: &[u8], bin: &Path) -> Run {
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    if let Some(mut pipe) = child.stdin.take() {
        // A plugin may exit without reading its input (VERSION): EPIPE is fine.
        let _ = pipe.write_all(stdin);
    }
    let mut err_pipe = child.stderr.take();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_string(&mut s);
        }
        s
    });
    let mut stdout = String::new();
    if let Some(mut p) = child.stdout.take() {
        let _ = p.read_to_string(&mut stdout);
    }
    let (status, maxrss_kib) = wait4(child.id());
    let took = start.elapsed();
    Run {
        took,
        maxrss_kib,
        status,
        stdout,
        stderr: err.join().unwrap_or_default(),
    }
}

/// `run` through GNU time (Debian package `time`), which reports the peak
/// RSS of the plugin alone. wait4 from this process would not: the child
/// starts as a vfork of this process, and the kernel counts the RSS of the
/// address space it had before exec (this runner's) in ru_maxrss. time's own
/// (about 0.9 MiB for /bin/true) is below every plugin's.
pub fn run_rss(bin: &Path, env: &[(&str, &str)], stdin: &[u8]) -> Run {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = std::env::temp_dir().join(format!("cni-bench-rss.{}.{n}", std::process::id()));
    let time_env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-f").arg("%M").arg("-o").arg(&out).arg(bin);
    let mut r = spawn_and_reap(cmd, &time_env, stdin, bin);
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    // The last line: time prefixes "Command exited with non-zero status" on failure.
    r.maxrss_kib = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    r
}

/// Reaps `pid`: (exit code or -1, ru_maxrss in KiB). std's `Child` is not
/// used to wait, so nothing else reaps it.
fn wait4(pid: u32) -> (i32, u64) {
    let pid = pid as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live locals the kernel fills in.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        assert!(
            e.kind() == std::io::ErrorKind::Interrupted,
            "wait4({pid}): {e}"
        );
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, u64::try_from(usage.ru_maxrss).unwrap_or(0))
}

pub fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

pub fn median_u64(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// `peer / ours`: above 1 means we are faster (or smaller).
pub fn ratio(peer: f64, ours: f64) -> String {
    if ours > 0.0 {
        format!("{:.2}x", peer / ours)
    } else {
        "-".into()
    }
}

pub fn dratio(peer: Duration, ours: Duration) -> String {
    ratio(peer.as_secs_f64(), ours.as_secs_f64())
}

/// Prints a Markdown table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    println!("| {} |", headers.join(" | "));
    println!("|{}", "---|".repeat(headers.len()));
    for r in rows {
        println!("| {} |", r.join(" | "));
    }
    println!();
}

/// The 1/5/15-minute load averages, for the record of each section.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Section heading with the load before it ran.
pub fn heading(title: &str) {
    println!("## {title}\n");
    println!("_Load average (1/5/15 min) at start: {}._\n", load());
}

pub fn footer() {
    println!("_Load average at end: {}._\n", load());
}

const SECTIONS: &str = "exec, move, ipam, route, pod, floor, memory";

pub fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(release), Some(sim)) = (args.next(), args.next()) else {
        eprintln!(
            "usage: cni-bench <release bin dir> <release test-build bin dir> [section...]  (sections: {SECTIONS}; default all)"
        );
        std::process::exit(2);
    };
    let bins = Bins {
        release: PathBuf::from(release),
        sim: PathBuf::from(sim),
    };
    let mut sections: Vec<String> = args.collect();
    if sections.is_empty() {
        sections = SECTIONS.split(", ").map(str::to_string).collect();
    }
    let out_dir =
        std::env::var_os("BENCH_OUT").map_or_else(|| PathBuf::from("target/bench"), PathBuf::from);
    for section in sections {
        match section.as_str() {
            "exec" => exec::section(&bins),
            "move" => moves::section(&bins),
            "ipam" => ipam::section(&bins),
            "route" | "coordinator" => route::section(&bins),
            "pod" => pod::section(&bins, &out_dir),
            "floor" => floor::section(&bins),
            "memory" => memory::section(&bins),
            other => {
                eprintln!("unknown section {other} (sections: {SECTIONS})");
                std::process::exit(2);
            }
        }
    }
}
