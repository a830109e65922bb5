//! A group's filter: the mode and the listed sources, as one socket or one interface holds
//! it.

use std::{collections::BTreeSet, fmt};

use msfilter_common::Addr;
/// The filter mode (RFC 3376 §3.2): the one enum, shared with the XDP maps.
pub use msfilter_common::Mode;

use crate::sockopt::ip_of;

/// A group's filter on one socket or one interface: the mode and the listed sources.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupFilter {
    pub mode: Mode,
    pub sources: BTreeSet<Addr>,
}

impl GroupFilter {
    pub fn new(mode: Mode, sources: impl IntoIterator<Item = Addr>) -> Self {
        Self {
            mode,
            sources: sources.into_iter().collect(),
        }
    }
}

/// `EXCLUDE {10.0.0.5, 10.0.0.6}`.
impl fmt::Display for GroupFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {{", mode_name(self.mode))?;
        for (i, s) in self.sources.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", ip_of(s))?;
        }
        f.write_str("}")
    }
}

/// `INCLUDE` or `EXCLUDE`, as RFC 3376 writes the modes.
pub const fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Include => "INCLUDE",
        Mode::Exclude => "EXCLUDE",
    }
}

/// A mode as the configuration file, the wire protocol and the CLI spell it: `include` or
/// `exclude`.
pub fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "include" => Ok(Mode::Include),
        "exclude" => Ok(Mode::Exclude),
        other => Err(format!(
            "unknown filter mode {other:?} (include or exclude)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use msfilter_common::maps::ipv4_mapped;

    use super::*;

    #[test]
    fn filters_display_as_rfc_3376_writes_them() {
        let f = GroupFilter::new(
            Mode::Exclude,
            [ipv4_mapped([10, 0, 0, 6]), ipv4_mapped([10, 0, 0, 5])],
        );
        assert_eq!(f.to_string(), "EXCLUDE {10.0.0.5, 10.0.0.6}");
        assert_eq!(
            GroupFilter::new(Mode::Include, []).to_string(),
            "INCLUDE {}"
        );
        assert_eq!(parse_mode("include"), Ok(Mode::Include));
        assert!(
            parse_mode("INCLUDE")
                .unwrap_err()
                .contains("include or exclude")
        );
    }
}
