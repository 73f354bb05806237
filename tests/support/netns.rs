//! Hosts made of network namespaces: namespaces joined by a bridge, and
//! the processes of one host, killed together. Namespaces need root and
//! `ip` (iproute2); tests fall back to processes on loopback without them
//! (see [`namespaces_usable`]).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command};

/// Processes that make up one host (`ns`: its network namespace; `None`
/// on loopback).
pub struct Host {
    pub ns: Option<String>,
    pub children: Vec<Child>,
}

impl Host {
    /// A host with no process yet.
    pub fn new(ns: Option<String>) -> Host {
        Host {
            ns,
            children: Vec::new(),
        }
    }

    /// A command that runs `program` on this host.
    pub fn command(&self, program: &Path) -> Command {
        match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Kills every process of the host.
    pub fn kill(&mut self) {
        if let Some(ns) = &self.ns {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: kill has no memory preconditions.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Namespaces joined by a bridge, removed when dropped.
pub struct Network {
    tag: String,
    names: Vec<String>,
    subnet: String,
}

/// Runs `ip args`; the error says what failed.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Network {
    /// A bridge with address .1 in this namespace, and namespaces with
    /// addresses .2, .3, ... on it, one per name in `hosts`. `salt` tells
    /// apart the networks of the tests of one process; a subnet or name
    /// still in use (left by a test that was killed) is skipped.
    pub fn new(hosts: &[&str], salt: u32) -> Result<Network, String> {
        // Tests of one process look for free names one at a time.
        static CHOOSING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _choosing = CHOOSING.lock().unwrap_or_else(|e| e.into_inner());
        let addresses = Command::new("ip")
            .args(["-4", "-o", "addr"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .map_err(|e| format!("ip: {e}"))?;
        let links = Command::new("ip")
            .args(["-o", "link"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .map_err(|e| format!("ip: {e}"))?;
        let start = std::process::id() + salt;
        let (tag, subnet) = (0..250)
            .map(|i| {
                (
                    format!("ps{}", (start + i) % 100_000),
                    format!("10.231.{}", (start + i) % 250),
                )
            })
            .find(|(tag, subnet)| {
                !addresses.contains(&format!(" {subnet}.")) && !links.contains(&format!(" {tag}br"))
            })
            .ok_or("no free subnet in 10.231.0.0/16")?;
        let mut net = Network {
            tag: tag.clone(),
            names: Vec::new(),
            subnet: subnet.clone(),
        };
        let bridge = format!("{tag}br");
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for (i, host) in hosts.iter().enumerate() {
            let ns = format!("{tag}-{host}");
            ip(&["netns", "add", &ns])?;
            net.names.push(ns.clone());
            let (outside, inside) = (format!("{tag}v{i}"), format!("{tag}p{i}"));
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            ip(&["link", "set", &inside, "netns", &ns])?;
            ip(&["link", "set", &outside, "master", &bridge, "up"])?;
            let addr = format!("{subnet}.{}/24", i + 2);
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &inside])?;
            ip(&["-n", &ns, "link", "set", &inside, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// The namespace of host `i` (in the order given to [`Network::new`]).
    pub fn ns(&self, i: usize) -> String {
        self.names[i].clone()
    }

    /// Cuts host `i` off the network (its link goes down); its processes
    /// keep running.
    pub fn cut(&self, i: usize) -> Result<(), String> {
        ip(&[
            "-n",
            &self.names[i],
            "link",
            "set",
            &format!("{}p{i}", self.tag),
            "down",
        ])
    }

    /// The address of host `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 2)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &format!("{}br", self.tag)]);
    }
}

/// Whether hosts can be made of namespaces here: root, `ip`, and no
/// `PROXYSTORE_TEST_NO_NETNS`; the error says why not.
pub fn namespaces_usable() -> Result<(), String> {
    if std::env::var_os("PROXYSTORE_TEST_NO_NETNS").is_some() {
        return Err("PROXYSTORE_TEST_NO_NETNS is set".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    Command::new("ip")
        .arg("-V")
        .output()
        .map_err(|e| format!("`ip` (iproute2) is not available: {e}"))?;
    Ok(())
}
