//! Whether an interface forwards multicast (`mc_forwarding`, set by a multicast routing
//! daemon through MRT_ADD_VIF / MRT6_ADD_MIF): such an interface needs every group.

use std::path::Path;

/// Multicast forwarding on an interface, per family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct McForwarding {
    pub ipv4: bool,
    pub ipv6: bool,
}

/// One family's `mc_forwarding` file for an interface, as read.
enum Read {
    Contents(String),
    /// The interface's `conf` directory has its `forwarding` file but no `mc_forwarding`:
    /// a kernel built without multicast routing for that family (`CONFIG_IPV6_MROUTE` off:
    /// IPv6 has the file only with it), which cannot forward multicast at all.
    NoMulticastRouting,
    Unreadable,
}

/// What one `mc_forwarding` file says: forwarding unless it reads exactly 0. A file that
/// cannot be read counts as forwarding, so that nothing is dropped on a guess.
fn forwarding(read: &Read) -> bool {
    match read {
        Read::Contents(c) => c.trim() != "0",
        Read::NoMulticastRouting => false,
        Read::Unreadable => true,
    }
}

/// Read `/proc/sys/net/ipv{4,6}/conf/NAME/mc_forwarding` (in the caller's namespace).
pub fn mc_forwarding(name: &str) -> McForwarding {
    mc_forwarding_under(Path::new("/proc/sys/net"), name)
}

fn mc_forwarding_under(root: &Path, name: &str) -> McForwarding {
    let read = |family: &str| {
        let conf = root.join(family).join("conf").join(name);
        match std::fs::read_to_string(conf.join("mc_forwarding")) {
            Ok(c) => Read::Contents(c),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && conf.join("forwarding").is_file() =>
            {
                Read::NoMulticastRouting
            }
            Err(_) => Read::Unreadable,
        }
    };
    McForwarding {
        ipv4: forwarding(&read("ipv4")),
        ipv6: forwarding(&read("ipv6")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_zero_means_not_forwarding() {
        assert!(!forwarding(&Read::Contents("0\n".into())));
        assert!(forwarding(&Read::Contents("1\n".into())));
        assert!(forwarding(&Read::Unreadable));
        assert!(!forwarding(&Read::NoMulticastRouting));
    }

    #[test]
    fn both_families_are_read() {
        let root = std::env::temp_dir().join(format!("msf-mcfwd-{}", std::process::id()));
        for (family, value) in [("ipv4", "0\n"), ("ipv6", "1\n")] {
            let dir = root.join(family).join("conf").join("eth9");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("mc_forwarding"), value).unwrap();
        }
        assert_eq!(
            mc_forwarding_under(&root, "eth9"),
            McForwarding {
                ipv4: false,
                ipv6: true
            }
        );
        assert_eq!(
            mc_forwarding_under(&root, "eth8"),
            McForwarding {
                ipv4: true,
                ipv6: true
            }
        );
        // An interface whose IPv6 conf has `forwarding` but no `mc_forwarding`: the kernel
        // has no IPv6 multicast routing.
        let dir = root.join("ipv6").join("conf").join("eth7");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("forwarding"), "0\n").unwrap();
        assert!(!mc_forwarding_under(&root, "eth7").ipv6);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn this_hosts_loopback_can_be_read() {
        // lo exists in every namespace; its files are readable, so the result is not the
        // "cannot read" default for IPv4.
        let lo = std::fs::read_to_string("/proc/sys/net/ipv4/conf/lo/mc_forwarding").unwrap();
        assert_eq!(mc_forwarding("lo").ipv4, lo.trim() != "0");
    }
}
