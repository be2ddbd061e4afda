//! The command line: subcommands, flags (`--flag value` or `--flag=value`),
//! validation, and what each subcommand prints.

use std::io::Write;
use std::path::{Path, PathBuf};

use libcni::netlink::RouteSocket;
use libcni::state::StateDir;

use crate::check::{self, CheckOptions};
use crate::error::{HostprepError, exit};
use crate::files::abs_dir;
use crate::install;
use crate::mode::{self, ModeReading, SetOutcome};
use crate::nic::{self, NicArgs, UnsetArgs};

pub const USAGE: &str = "\
usage: rdma-hostprep <command> [flags]

commands:
  netns-mode [exclusive|shared] [--persist] [--modprobe-dir DIR]
      Without a mode: print the RDMA subsystem's netns mode, now and as
      persisted. With one: set it now (as `rdma system set netns MODE`);
      --persist also writes `options ib_core netns_mode=0|1` to
      DIR/ib_core.conf (DIR: /etc/modprobe.d), applied when ib_core loads.
  set-nic-addr --nic NIC --address IP/PREFIX --gateway IP --table N
               [--mtu N] [--priority N] [--state-dir DIR] [--remove]
      Sets NIC up with the address and MTU, a route table N holding the
      subnet route and `default via IP`, and a rule `from IP lookup N`
      (priority: 1000 + N). Idempotent; what it set is recorded in DIR
      (/var/lib/rdma-hostprep). --remove is unset-nic-addr.
  unset-nic-addr --nic NIC [--state-dir DIR]
                 [--address IP/PREFIX --gateway IP --table N [--priority N]]
      Removes what set-nic-addr set and restores the NIC's MTU; without a
      record, removes the configuration given by the flags.
  check [--json] [--nic NIC]... [--sysfs-root DIR] [--modprobe-dir DIR]
        [--min-mtu N]
      Reports per NIC (SR-IOV PFs in sysfs, or the NICs named) the link
      layer, VFs, MTU, state, addresses, policy routes, RDMA devices and the
      RDMA netns mode, and what is missing.
  install-cni --from DIR --to DIR [--bin NAME]... [--sleep]
      Copies the plugins (default: sriov ib-sriov rdma ippool coordinator)
      from DIR to DIR atomically (temp file, fsync, rename); --sleep then
      waits for SIGTERM (a DaemonSet's entrypoint).
  version

exit codes: 0 done (check: ready), 1 failed, 2 invalid command line,
3 check: something is missing.
";

/// Flags of one subcommand, parsed but not yet validated.
#[derive(Debug, Default)]
struct Parsed {
    positional: Vec<String>,
    values: Vec<(String, String)>,
    switches: Vec<String>,
}

fn parse(
    cmd: &str,
    args: &[String],
    value_flags: &[&str],
    switch_flags: &[&str],
) -> Result<Parsed, HostprepError> {
    let mut p = Parsed::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if !arg.starts_with("--") {
            p.positional.push(arg.clone());
            continue;
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        if switch_flags.contains(&flag) && inline.is_none() {
            p.switches.push(flag.to_string());
        } else if value_flags.contains(&flag) {
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| HostprepError::Usage(format!("{cmd}: {flag} needs a value")))?,
            };
            p.values.push((flag.to_string(), value));
        } else {
            return Err(HostprepError::Usage(format!("{cmd}: unknown flag {arg}")));
        }
    }
    Ok(p)
}

impl Parsed {
    /// The flag's value; given twice is an error.
    fn one(&self, flag: &str) -> Result<Option<String>, HostprepError> {
        let mut found = self.values.iter().filter(|(f, _)| f == flag);
        let first = found.next().map(|(_, v)| v.clone());
        if found.next().is_some() {
            return Err(HostprepError::Usage(format!("{flag} given twice")));
        }
        Ok(first)
    }

    fn all(&self, flag: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(f, _)| f == flag)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn has(&self, switch: &str) -> bool {
        self.switches.iter().any(|s| s == switch)
    }

    fn no_positional(&self, cmd: &str) -> Result<(), HostprepError> {
        match self.positional.first() {
            Some(a) => Err(HostprepError::Usage(format!(
                "{cmd}: unexpected argument {a:?}"
            ))),
            None => Ok(()),
        }
    }

    fn dir_or(&self, flag: &'static str, default: &str) -> Result<PathBuf, HostprepError> {
        abs_dir(flag, self.one(flag)?.as_deref().unwrap_or(default))
    }
}

fn say(out: &mut dyn Write, text: &str) -> Result<(), HostprepError> {
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(HostprepError::io("write", "stdout"))
}

/// Runs one command line (without the program name); returns the exit code.
pub fn run(args: &[String], out: &mut dyn Write) -> Result<i32, HostprepError> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err(HostprepError::Usage("no command given".into()));
    };
    match cmd.as_str() {
        "netns-mode" => netns_mode(rest, out),
        "set-nic-addr" => set_nic_addr(rest, out),
        "unset-nic-addr" => unset_nic_addr(rest, out),
        "check" => check(rest, out),
        "install-cni" => install_cni(rest, out),
        "version" | "--version" => {
            say(out, concat!("rdma-hostprep ", env!("CARGO_PKG_VERSION")))?;
            Ok(exit::OK)
        }
        "help" | "--help" | "-h" => {
            write!(out, "{USAGE}").map_err(HostprepError::io("write", "stdout"))?;
            Ok(exit::OK)
        }
        other => Err(HostprepError::Usage(format!("unknown command {other:?}"))),
    }
}

fn netns_mode(args: &[String], out: &mut dyn Write) -> Result<i32, HostprepError> {
    let p = parse("netns-mode", args, &["--modprobe-dir"], &["--persist"])?;
    let dir = p.dir_or("--modprobe-dir", mode::DEFAULT_MODPROBE_DIR)?;
    let persist = p.has("--persist");
    match p.positional.as_slice() {
        [] if persist => Err(HostprepError::Usage(
            "netns-mode: --persist needs a mode (exclusive or shared)".into(),
        )),
        [] => {
            say(
                out,
                &format!("RDMA netns mode: {}", mode::read_mode().describe()),
            )?;
            let persisted = match mode::persisted_mode(&dir)? {
                Some(p) => format!(
                    "persisted: {} (netns_mode={} in {})",
                    p.mode
                        .map_or_else(|| "invalid".to_string(), |m| m.to_string()),
                    p.value,
                    p.file.display()
                ),
                None => format!("persisted: not set in {}", dir.display()),
            };
            say(out, &persisted)?;
            Ok(exit::OK)
        }
        [m] => {
            let mode = mode::parse_mode("mode", m)?;
            if p.one("--modprobe-dir")?.is_some() && !persist {
                return Err(HostprepError::Usage(
                    "netns-mode: --modprobe-dir is only used with --persist".into(),
                ));
            }
            set_netns_mode(mode, persist.then_some(dir.as_path()), out)
        }
        _ => Err(HostprepError::Usage(
            "netns-mode takes one mode: exclusive or shared".into(),
        )),
    }
}

fn set_netns_mode(
    mode: libcni::rdma::NetnsMode,
    persist: Option<&Path>,
    out: &mut dyn Write,
) -> Result<i32, HostprepError> {
    if let Some(dir) = persist {
        let (path, changed) = mode::persist_mode(dir, mode)?;
        let how = if changed { "written" } else { "unchanged" };
        say(
            out,
            &format!(
                "persisted: netns_mode={} ({mode}) in {} ({how})",
                mode as u8,
                path.display()
            ),
        )?;
    }
    match mode::set_mode(mode) {
        Ok(SetOutcome::AlreadySet) => say(out, &format!("RDMA netns mode: already {mode}"))?,
        Ok(SetOutcome::Changed { from }) => {
            say(out, &format!("RDMA netns mode: {from} -> {mode}"))?;
        }
        Err(HostprepError::RdmaUnavailable(why)) if persist.is_some() => say(
            out,
            &format!(
                "RDMA netns mode: not set now: the RDMA subsystem is unavailable ({why}); \
                 the persisted setting applies when ib_core loads"
            ),
        )?,
        Err(HostprepError::RdmaUnavailable(why)) => {
            return Err(HostprepError::RdmaUnavailable(format!(
                "{why} (with --persist the mode is written to modprobe.d for when ib_core loads)"
            )));
        }
        Err(e) => return Err(e),
    }
    Ok(exit::OK)
}

const NIC_FLAGS: [&str; 7] = [
    "--nic",
    "--address",
    "--gateway",
    "--table",
    "--priority",
    "--mtu",
    "--state-dir",
];

fn open_state(p: &Parsed) -> Result<StateDir, HostprepError> {
    let dir = p.dir_or("--state-dir", nic::DEFAULT_STATE_DIR)?;
    Ok(StateDir::open(&dir)?)
}

fn set_nic_addr(args: &[String], out: &mut dyn Write) -> Result<i32, HostprepError> {
    let p = parse("set-nic-addr", args, &NIC_FLAGS, &["--remove"])?;
    p.no_positional("set-nic-addr")?;
    if p.has("--remove") {
        if p.one("--mtu")?.is_some() {
            return Err(HostprepError::Usage(
                "set-nic-addr --remove restores the recorded MTU: --mtu is not used".into(),
            ));
        }
        return unset_with(&p, out);
    }
    let cfg = NicArgs {
        nic: p.one("--nic")?,
        address: p.one("--address")?,
        gateway: p.one("--gateway")?,
        table: p.one("--table")?,
        priority: p.one("--priority")?,
        mtu: p.one("--mtu")?,
    }
    .validate()?;
    let state = open_state(&p)?;
    let _lock = nic::lock(&state)?;
    let sock = RouteSocket::new()?;
    let lines = nic::set_nic_addr(&sock, &state, &cfg).map_err(|e| match e {
        // Nothing was changed: the message says it all.
        HostprepError::NoNic(_) | HostprepError::Conflict(_) => e,
        e => HostprepError::OnNic {
            nic: cfg.nic.to_string(),
            source: Box::new(e),
            remedy: format!(
                "what was set so far stays recorded: fix the cause and run set-nic-addr again, \
                 or undo it with `rdma-hostprep unset-nic-addr --nic {}`",
                cfg.nic
            ),
        },
    })?;
    for line in lines {
        say(out, &line)?;
    }
    Ok(exit::OK)
}

fn unset_nic_addr(args: &[String], out: &mut dyn Write) -> Result<i32, HostprepError> {
    let flags = [
        "--nic",
        "--address",
        "--gateway",
        "--table",
        "--priority",
        "--state-dir",
    ];
    let p = parse("unset-nic-addr", args, &flags, &[])?;
    p.no_positional("unset-nic-addr")?;
    unset_with(&p, out)
}

fn unset_with(p: &Parsed, out: &mut dyn Write) -> Result<i32, HostprepError> {
    let nic_name = p
        .one("--nic")?
        .ok_or_else(|| HostprepError::Usage("unset-nic-addr needs --nic".into()))?;
    let nic = nic::parse_nic(&nic_name)?;
    let by_hand = UnsetArgs {
        address: p.one("--address")?,
        gateway: p.one("--gateway")?,
        table: p.one("--table")?,
        priority: p.one("--priority")?,
    };
    if by_hand.address.is_none()
        && (by_hand.gateway.is_some() || by_hand.table.is_some() || by_hand.priority.is_some())
    {
        return Err(HostprepError::Usage(
            "unset-nic-addr: --gateway, --table and --priority go with --address".into(),
        ));
    }
    let state = open_state(p)?;
    let _lock = nic::lock(&state)?;
    let sock = RouteSocket::new()?;
    let lines = nic::unset_nic_addr(&sock, &state, &nic, &by_hand).map_err(|e| match e {
        HostprepError::Multiple(_) | HostprepError::Netlink(_) => HostprepError::OnNic {
            nic: nic.to_string(),
            source: Box::new(e),
            remedy: "the record stays: fix the cause and run unset-nic-addr again".into(),
        },
        e => e,
    })?;
    for line in lines {
        say(out, &line)?;
    }
    Ok(exit::OK)
}

fn check(args: &[String], out: &mut dyn Write) -> Result<i32, HostprepError> {
    let p = parse(
        "check",
        args,
        &["--nic", "--sysfs-root", "--modprobe-dir", "--min-mtu"],
        &["--json"],
    )?;
    p.no_positional("check")?;
    let nics = p
        .all("--nic")
        .iter()
        .map(|n| nic::parse_nic(n))
        .collect::<Result<Vec<_>, _>>()?;
    let min_mtu = p
        .one("--min-mtu")?
        .map(|v| match v.parse::<u32>() {
            Ok(m) if (68..=65535).contains(&m) => Ok(m),
            _ => Err(HostprepError::invalid("--min-mtu", v, "must be 68-65535")),
        })
        .transpose()?;
    let opts = CheckOptions {
        sysfs_root: p.dir_or("--sysfs-root", "/sys")?,
        nics,
        min_mtu,
        modprobe_dir: p.dir_or("--modprobe-dir", mode::DEFAULT_MODPROBE_DIR)?,
    };
    let sock = RouteSocket::new()?;
    let mode: ModeReading = mode::read_mode();
    let report = check::check(&opts, &sock, &mode)?;
    if p.has("--json") {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| HostprepError::Conflict(format!("cannot encode the report: {e}")))?;
        say(out, &json)?;
    } else {
        write!(out, "{}", report.text()).map_err(HostprepError::io("write", "stdout"))?;
    }
    Ok(if report.ready {
        exit::OK
    } else {
        exit::NOT_READY
    })
}

fn install_cni(args: &[String], out: &mut dyn Write) -> Result<i32, HostprepError> {
    let p = parse(
        "install-cni",
        args,
        &["--from", "--to", "--bin"],
        &["--sleep"],
    )?;
    p.no_positional("install-cni")?;
    let dir = |flag: &'static str| -> Result<PathBuf, HostprepError> {
        let v = p
            .one(flag)?
            .ok_or_else(|| HostprepError::Usage(format!("install-cni needs {flag}")))?;
        abs_dir(flag, &v)
    };
    let (from, to) = (dir("--from")?, dir("--to")?);
    let mut names = p
        .all("--bin")
        .iter()
        .map(|b| install::parse_bin(b))
        .collect::<Result<Vec<_>, _>>()?;
    if names.is_empty() {
        names = install::PLUGINS.iter().map(ToString::to_string).collect();
    }
    let sleep = p.has("--sleep");
    if sleep {
        install::block_stop_signals()?;
    }
    for line in install::install(&from, &to, &names)? {
        say(out, &line)?;
    }
    if sleep {
        say(out, "installed; sleeping until SIGTERM")?;
        let sig = install::sleep_until_stopped()?;
        say(out, &format!("{sig}: exiting"))?;
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn run_str(s: &str) -> (Result<i32, HostprepError>, String) {
        let mut out = Vec::new();
        let r = run(&args(s), &mut out);
        (r, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn flags_take_values_both_ways_and_refuse_unknown_ones() {
        let p = parse(
            "x",
            &args("--nic a --table=5 --json pos"),
            &["--nic", "--table"],
            &["--json"],
        )
        .expect("parse");
        assert_eq!(p.one("--nic").expect("one").as_deref(), Some("a"));
        assert_eq!(p.one("--table").expect("one").as_deref(), Some("5"));
        assert!(p.has("--json"));
        assert_eq!(p.positional, ["pos"]);
        for bad in ["--bogus", "--nic", "--json=1"] {
            let e = parse("x", &args(bad), &["--nic"], &["--json"]).expect_err(bad);
            assert!(matches!(e, HostprepError::Usage(_)), "{bad}: {e}");
        }
        let p = parse("x", &args("--nic a --nic b"), &["--nic"], &[]).expect("parse");
        assert!(p.one("--nic").is_err());
        assert_eq!(p.all("--nic"), ["a", "b"]);
    }

    #[test]
    fn usage_errors_are_exit_2() {
        for bad in [
            "",
            "frobnicate",
            "netns-mode exclusive shared",
            "netns-mode Exclusive",
            "netns-mode --persist",
            "netns-mode exclusive --modprobe-dir /tmp",
            "netns-mode exclusive --persist --modprobe-dir relative/dir",
            "set-nic-addr --nic hp0",
            "set-nic-addr --remove --nic hp0 --mtu 9000",
            "unset-nic-addr --nic hp0 --table 5",
            "unset-nic-addr --nic hp0 --mtu 9000",
            "unset-nic-addr --nic hp0 --state-dir relative",
            "check --min-mtu 10",
            "check --nic ../x",
            "check --sysfs-root /a/../b",
            "install-cni --from /a",
            "install-cni --from /a --to /b --bin ../sh",
        ] {
            let (r, _) = run_str(bad);
            let e = r.expect_err(bad);
            assert_eq!(e.exit_code(), exit::USAGE, "{bad}: {e}");
        }
    }

    #[test]
    fn help_and_version() {
        let (r, out) = run_str("--help");
        assert_eq!(r.expect("help"), exit::OK);
        assert!(out.contains("set-nic-addr --nic NIC"));
        let (r, out) = run_str("version");
        assert_eq!(r.expect("version"), exit::OK);
        assert!(out.starts_with("rdma-hostprep "));
    }
}
