//! Whether an interface forwards multicast (`mc_forwarding`, set by a multicast routing
//! daemon through MRT_ADD_VIF / MRT6_ADD_MIF): such an interface needs every group.

use std::path::Path;

/// Multicast forwarding on an interface, per family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct McForwarding {
    pub ipv4: bool,
    pub ipv6: bool,
}

/// What one `mc_forwarding` file says: forwarding unless it reads exactly 0. A file that
/// cannot be read counts as forwarding, so that nothing is dropped on a guess.
fn forwarding(contents: Option<&str>) -> bool {
    contents.is_none_or(|c| c.trim() != "0")
}

/// Read `/proc/sys/net/ipv{4,6}/conf/NAME/mc_forwarding` (in the caller's namespace).
pub fn mc_forwarding(name: &str) -> McForwarding {
    mc_forwarding_under(Path::new("/proc/sys/net"), name)
}

fn mc_forwarding_under(root: &Path, name: &str) -> McForwarding {
    let read = |family: &str| {
        std::fs::read_to_string(
            root.join(family)
                .join("conf")
                .join(name)
                .join("mc_forwarding"),
        )
        .ok()
    };
    McForwarding {
        ipv4: forwarding(read("ipv4").as_deref()),
        ipv6: forwarding(read("ipv6").as_deref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_zero_means_not_forwarding() {
        assert!(!forwarding(Some("0\n")));
        assert!(forwarding(Some("1\n")));
        assert!(forwarding(None));
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
