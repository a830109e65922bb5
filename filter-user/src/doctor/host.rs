//! Reading the facts: kernel files and sysctls of the calling process's network namespace,
//! the kernel's netlink reports, and the daemon's view when it answers. Nothing is written.

use std::{collections::BTreeMap, io, os::fd::AsRawFd as _, path::Path};

use super::{
    ConfigFacts, DaemonFacts, DaemonView, DoctorError, DoctorOptions, Facts, Interface,
    ManagedGroup, Sysctl, Sysctls, XdpProgram, parse,
};
use crate::{
    client::Client,
    daemon::{
        config,
        protocol::{GroupEntry, ListFilter, Reply, Request},
    },
    datapath,
    iface::{self, xdp, xdp_features},
};

pub(super) async fn gather(options: &DoctorOptions) -> Result<Facts, DoctorError> {
    let listed = iface::interfaces().map_err(DoctorError::Interfaces)?;
    for name in &options.interfaces {
        if !listed.iter().any(|(_, n)| n == name) {
            return Err(DoctorError::NoSuchInterface(name.clone()));
        }
    }
    let interfaces: Vec<Interface> = listed
        .iter()
        .map(|(ifindex, name)| interface(*ifindex, name))
        .collect();
    let config = options.config.as_ref().map(|path| ConfigFacts {
        path: path.clone(),
        config: config::load(path).map_err(|e| e.to_string()),
    });
    let daemon = daemon(&options.socket, &listed).await;
    Ok(Facts {
        osrelease: read("/proc/sys/kernel/osrelease"),
        btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
        mountinfo: read("/proc/self/mountinfo"),
        pin_dir: options.pin_dir.clone(),
        pinned_links: datapath::pinned_interfaces(&options.pin_dir)
            .ok()
            .map(|links| links.len()),
        trace: datapath::pinned_switch(&options.pin_dir)
            .ok()
            .flatten()
            .filter(|c| c.enabled != 0)
            .map(|c| (c.owner_pid, datapath::owner_alive(&c))),
        sysctls: Sysctls {
            igmp_max_msf: sysctl("/proc/sys/net/ipv4/igmp_max_msf"),
            mld_max_msf: sysctl("/proc/sys/net/ipv6/mld_max_msf"),
            optmem_max: sysctl("/proc/sys/net/core/optmem_max"),
            rp_filter_all: sysctl("/proc/sys/net/ipv4/conf/all/rp_filter"),
            force_igmp_all: sysctl("/proc/sys/net/ipv4/conf/all/force_igmp_version"),
            force_mld_all: sysctl("/proc/sys/net/ipv6/conf/all/force_mld_version"),
        },
        interfaces,
        selected: options.interfaces.clone(),
        xdp_features: xdp_features::xdp_features().map_err(|u| u.0),
        igmp: read("/proc/net/igmp"),
        igmp6: read("/proc/net/igmp6"),
        config,
        daemon,
    })
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

fn sysctl(path: &str) -> Sysctl {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().map_or_else(
            |_| Sysctl::Unreadable(format!("{path}: {text:?}")),
            Sysctl::Value,
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Sysctl::Absent,
        Err(e) => Sysctl::Unreadable(format!("{path}: {e}")),
    }
}

fn interface(ifindex: u32, name: &str) -> Interface {
    let xdp = xdp::xdp_attachment(ifindex)
        .map(|found| {
            found.map(|a| XdpProgram {
                id: a.prog_id,
                name: xdp::program_summary(a.prog_id).ok().map(|s| s.name),
                mode: a.mode.as_str().to_string(),
            })
        })
        .map_err(|e| e.to_string());
    Interface {
        name: name.to_string(),
        ifindex,
        loopback: name == "lo",
        rp_filter: sysctl(&format!("/proc/sys/net/ipv4/conf/{name}/rp_filter")),
        force_igmp: sysctl(&format!(
            "/proc/sys/net/ipv4/conf/{name}/force_igmp_version"
        )),
        force_mld: sysctl(&format!("/proc/sys/net/ipv6/conf/{name}/force_mld_version")),
        xdp,
    }
}

async fn daemon(socket: &Path, interfaces: &[(u32, String)]) -> DaemonFacts {
    let mut client = match Client::connect(socket).await {
        Ok(c) => c,
        Err(e) => {
            return DaemonFacts::Unreachable {
                socket: socket.to_path_buf(),
                error: e.to_string(),
            };
        }
    };
    let pid = peer_pid(socket);
    let capabilities = pid.and_then(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| parse::effective_capabilities(&s))
    });
    let mut problems = Vec::new();
    let clients = match client.stats().await {
        Ok(s) => s.clients,
        Err(e) => {
            problems.push(format!("stats: {e}"));
            0
        }
    };
    let mut entries: Vec<GroupEntry> = Vec::new();
    if let Err(e) = client
        .list(ListFilter::default(), None, |page| entries.extend(page))
        .await
    {
        problems.push(format!("listing the groups: {e}"));
    }
    let mut owners = Vec::new();
    for (_, name) in interfaces {
        match client
            .request(Request::Owner {
                iface: name.clone(),
            })
            .await
        {
            Ok(Reply::Owner(view)) => owners.push(view),
            Ok(other) => problems.push(format!("owner {name}: unexpected reply {other:?}")),
            // Gone in the meantime.
            Err(_) if !exists(name) => {}
            Err(e) => problems.push(format!("owner {name}: {e}")),
        }
    }
    DaemonFacts::Reachable(Box::new(DaemonView {
        socket: socket.to_path_buf(),
        pid,
        capabilities,
        clients,
        groups: merge_pages(entries),
        owners,
        problems,
    }))
}

fn exists(name: &str) -> bool {
    iface::resolve(name).is_ok()
}

/// One group per (interface, group): continuation entries add their sources to the first.
pub(super) fn merge_pages(entries: Vec<GroupEntry>) -> Vec<ManagedGroup> {
    let mut merged: BTreeMap<(String, std::net::IpAddr), ManagedGroup> = BTreeMap::new();
    for e in entries {
        let g = merged
            .entry((e.iface.clone(), e.group))
            .or_insert_with(|| ManagedGroup {
                iface: e.iface.clone(),
                group: e.group,
                mode: e.mode,
                sources: 0,
                members: e.members,
            });
        g.sources += e.sources.len();
        if !e.continued {
            g.mode = e.mode;
            g.members = e.members;
        }
    }
    merged.into_values().collect()
}

/// The daemon's process id, from the credentials of a connection to its socket.
fn peer_pid(socket: &Path) -> Option<u32> {
    let stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED fills a ucred of the given length.
    let ret = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::from_mut(&mut cred).cast(),
            &raw mut len,
        )
    };
    (ret == 0 && cred.pid > 0).then_some(cred.pid as u32)
}
