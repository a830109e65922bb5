//! The daemon's configuration file (`msfilter daemon --config FILE`): the interfaces msfilter
//! owns and, on each, the groups with their filter mode and sources. The format is described
//! in `docs/config.md`.
//!
//! * [`parse`] / [`load`]: the whole file is checked and refused at once, with every problem
//!   found and its line, so a reload never applies half a file.
//! * [`diff`]: what changes from one valid configuration to the next, so that a reload
//!   applies only that.

use std::{
    collections::{BTreeMap, BTreeSet, btree_map::Entry},
    fmt, fs,
    net::IpAddr,
    ops::Range,
    path::{Path, PathBuf},
};

use msfilter_common::Mode;
use serde::Deserialize;
use toml::Spanned;

use crate::{
    datapath::AttachMode,
    sockopt::{Family, InvalidRequest, validate_group, validate_source},
};

/// A configuration: the interfaces msfilter owns, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub interfaces: BTreeMap<String, InterfaceConfig>,
}

/// An interface msfilter owns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// How the XDP program is attached; `None`: driver mode, falling back to skb mode.
    pub xdp_mode: Option<AttachMode>,
    /// Follow the interface: XDP enforces the merge of every socket there (docs/follow.md).
    pub follow: bool,
    /// With `follow`: XDP also drops the groups no socket there joined (docs/follow.md).
    pub drop_unjoined: bool,
    pub groups: BTreeMap<IpAddr, GroupConfig>,
}

/// The filter of one group on one interface. An INCLUDE filter has at least one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    pub mode: Mode,
    pub sources: BTreeSet<IpAddr>,
}

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, when it was read by [`load`].
    pub path: Option<PathBuf>,
    /// From 1; `None` when the file could not be read.
    pub line: Option<usize>,
    /// From 1, in characters; given for the problems the TOML reader finds (syntax, unknown
    /// or missing keys, wrong types), where the line alone may not be enough.
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// `/etc/msfilter.toml line 9: 239.0.0.1 is a multicast address; a source must be unicast`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.path {
            write!(f, "{}", path.display())?;
            if self.line.is_some() {
                f.write_str(" ")?;
            }
        }
        if let Some(line) = self.line {
            write!(f, "line {line}")?;
        }
        if let Some(column) = self.column {
            write!(f, ", column {column}")?;
        }
        if self.path.is_some() || self.line.is_some() {
            f.write_str(": ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Why a configuration file was refused: every problem found (at least one), in the order
/// of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    /// One problem per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Read and check the configuration file at `path`; every problem names the file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: Some(path.to_owned()),
            line: None,
            column: None,
            message: e.to_string(),
        }])
    })?;
    parse(&text).map_err(|mut errors| {
        for error in &mut errors.0 {
            error.path = Some(path.to_owned());
        }
        errors
    })
}

/// Check a configuration given as text.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map(|span| position(text, span.start)).unzip();
        ConfigErrors(vec![ConfigError {
            path: None,
            line,
            column,
            message: e.message().to_owned(),
        }])
    })?;
    let mut checker = Checker {
        text,
        errors: Vec::new(),
    };
    let config = checker.config(raw);
    if checker.errors.is_empty() {
        Ok(config)
    } else {
        checker.errors.sort_by_key(|e| e.line);
        Err(ConfigErrors(checker.errors))
    }
}

/// What a reload changes, in the order of interface names, then groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Interfaces to own: the new ones, and those whose `xdp-mode` changed (to attach again).
    pub attach: Vec<(String, Option<AttachMode>)>,
    /// Interfaces no longer listed.
    pub release: Vec<String>,
    /// Listed interfaces whose `follow` changed (new ones that follow included): the new
    /// value.
    pub follow: Vec<(String, bool)>,
    /// Listed interfaces whose `drop-unjoined` changed (new ones that drop included): the
    /// new value.
    pub drop_unjoined: Vec<(String, bool)>,
    /// Groups whose filter is new or changed (`Some`: the new filter) or gone (`None`); the
    /// groups of a released interface are gone.
    pub groups: Vec<(String, IpAddr, Option<GroupConfig>)>,
}

impl ConfigDiff {
    /// Whether the two configurations are the same.
    pub fn is_empty(&self) -> bool {
        self.attach.is_empty()
            && self.release.is_empty()
            && self.follow.is_empty()
            && self.drop_unjoined.is_empty()
            && self.groups.is_empty()
    }
}

/// What changes from `old` to `new`.
pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let mut diff = ConfigDiff::default();
    let unlisted = InterfaceConfig::default();
    let names: BTreeSet<&String> = old.interfaces.keys().chain(new.interfaces.keys()).collect();
    for name in names {
        let before = old.interfaces.get(name);
        let after = new.interfaces.get(name);
        match after {
            Some(after) if before.is_none_or(|b| b.xdp_mode != after.xdp_mode) => {
                diff.attach.push((name.clone(), after.xdp_mode));
            }
            Some(_) => {}
            None => diff.release.push(name.clone()),
        }
        if let Some(after) = after
            && before.is_some_and(|b| b.follow) != after.follow
        {
            diff.follow.push((name.clone(), after.follow));
        }
        if let Some(after) = after
            && before.is_some_and(|b| b.drop_unjoined) != after.drop_unjoined
        {
            diff.drop_unjoined.push((name.clone(), after.drop_unjoined));
        }
        let before = &before.unwrap_or(&unlisted).groups;
        let after = &after.unwrap_or(&unlisted).groups;
        let groups: BTreeSet<&IpAddr> = before.keys().chain(after.keys()).collect();
        for group in groups {
            let filter = after.get(group);
            if before.get(group) != filter {
                diff.groups.push((name.clone(), *group, filter.cloned()));
            }
        }
    }
    diff
}

/// The file as TOML gives it, before msfilter's checks. Values that are checked keep their
/// place in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    interface: BTreeMap<Spanned<String>, RawInterface>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawInterface {
    xdp_mode: Option<Spanned<String>>,
    /// Checked here rather than by TOML, so that a wrong value is named with the key.
    follow: Option<Spanned<toml::Value>>,
    drop_unjoined: Option<Spanned<toml::Value>>,
    #[serde(default)]
    group: Vec<RawGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    address: Spanned<String>,
    mode: Spanned<String>,
    #[serde(default)]
    sources: Vec<Spanned<String>>,
}

/// Turns the raw file into a [`Config`], collecting every problem.
struct Checker<'a> {
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn refuse(&mut self, span: Range<usize>, message: String) {
        self.errors.push(ConfigError {
            path: None,
            line: Some(self.line(&span)),
            column: None,
            message,
        });
    }

    fn line(&self, span: &Range<usize>) -> usize {
        position(self.text, span.start).0
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let interfaces = raw
            .interface
            .into_iter()
            .map(|(name, iface)| {
                self.interface_name(&name);
                let iface = self.interface(name.get_ref(), iface);
                (name.into_inner(), iface)
            })
            .collect();
        Config { interfaces }
    }

    /// A name Linux accepts for an interface (`dev_valid_name`).
    fn interface_name(&mut self, name: &Spanned<String>) {
        const MAX: usize = libc::IFNAMSIZ - 1;
        let problem = match name.get_ref().as_str() {
            "" => "it is empty".to_owned(),
            "." | ".." => "\".\" and \"..\" are not interface names".to_owned(),
            n if n.len() > MAX => {
                format!("it is {} bytes long; at most {MAX} are allowed", n.len())
            }
            n => match n
                .chars()
                .find(|&c| matches!(c, '/' | ':' | '\0') || c.is_whitespace())
            {
                Some(c) => format!("it contains {c:?}"),
                None => return,
            },
        };
        self.refuse(
            name.span(),
            format!(
                "{:?} is not a valid interface name: {problem}",
                name.get_ref()
            ),
        );
    }

    fn interface(&mut self, name: &str, raw: RawInterface) -> InterfaceConfig {
        let xdp_mode = raw.xdp_mode.and_then(|mode| match mode.get_ref().as_str() {
            "driver" => Some(AttachMode::Driver),
            "skb" => Some(AttachMode::Skb),
            other => {
                let message = format!("xdp-mode must be \"driver\" or \"skb\", not {other:?}");
                self.refuse(mode.span(), message);
                None
            }
        });
        let follow = self.flag("follow", raw.follow.as_ref());
        let drop_unjoined = self.flag("drop-unjoined", raw.drop_unjoined.as_ref());
        if drop_unjoined
            && !follow
            && let Some(value) = &raw.drop_unjoined
        {
            let message = format!(
                "drop-unjoined needs follow = true on {name}: only the follower knows which \
                 groups every socket joined"
            );
            self.refuse(value.span(), message);
        }
        let mut groups = BTreeMap::new();
        let mut first_lines = BTreeMap::new();
        for group in &raw.group {
            let address = self.group_address(&group.address);
            let filter = self.filter(address, group);
            let Some(address) = address else { continue };
            match first_lines.entry(address) {
                Entry::Occupied(first) => {
                    let message = format!(
                        "group {address} is listed twice on {name} (first on line {})",
                        first.get()
                    );
                    self.refuse(group.address.span(), message);
                }
                Entry::Vacant(entry) => {
                    entry.insert(self.line(&group.address.span()));
                    if let Some(filter) = filter {
                        groups.insert(address, filter);
                    }
                }
            }
        }
        InterfaceConfig {
            xdp_mode,
            follow,
            drop_unjoined,
            groups,
        }
    }

    /// A `true`/`false` key (absent: false).
    fn flag(&mut self, key: &str, value: Option<&Spanned<toml::Value>>) -> bool {
        let Some(value) = value else { return false };
        match value.get_ref() {
            toml::Value::Boolean(b) => *b,
            other => {
                let given = match other {
                    toml::Value::String(s) => format!("{s:?}"),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    other => format!("a {}", other.type_str()),
                };
                self.refuse(
                    value.span(),
                    format!("{key} must be true or false, not {given}"),
                );
                false
            }
        }
    }

    fn group_address(&mut self, raw: &Spanned<String>) -> Option<IpAddr> {
        let address = self.ip(raw)?;
        match validate_group(Family::of(address), address) {
            Ok(()) => Some(address),
            Err(problem) => {
                self.refuse(raw.span(), in_file_words(problem, address));
                None
            }
        }
    }

    /// The mode and sources of a group; with the group's address when it is valid, the
    /// sources are checked against it.
    fn filter(&mut self, group: Option<IpAddr>, raw: &RawGroup) -> Option<GroupConfig> {
        let mode = match raw.mode.get_ref().as_str() {
            "include" => Some(Mode::Include),
            "exclude" => Some(Mode::Exclude),
            other => {
                let message = format!("mode must be \"include\" or \"exclude\", not {other:?}");
                self.refuse(raw.mode.span(), message);
                None
            }
        };
        let empty_include = mode == Some(Mode::Include) && raw.sources.is_empty();
        if empty_include {
            let message = "mode \"include\" with no sources is not a membership (INCLUDE {} \
                           means leave the group); list at least one source, or remove the group";
            self.refuse(raw.mode.span(), message.to_owned());
        }
        let mut sources = BTreeSet::new();
        let mut sources_valid = true;
        for raw in &raw.sources {
            match self.source(group, raw) {
                Some(source) if sources.insert(source) => {}
                Some(source) => {
                    let message = InvalidRequest::DuplicateSource(source).to_string();
                    self.refuse(raw.span(), message);
                    sources_valid = false;
                }
                None => sources_valid = false,
            }
        }
        let mode = mode?;
        (sources_valid && !empty_include).then_some(GroupConfig { mode, sources })
    }

    fn source(&mut self, group: Option<IpAddr>, raw: &Spanned<String>) -> Option<IpAddr> {
        let source = self.ip(raw)?;
        if let Some(group) = group
            && let Err(problem) = validate_source(Family::of(group), source)
        {
            self.refuse(raw.span(), in_file_words(problem, group));
            return None;
        }
        Some(source)
    }

    fn ip(&mut self, raw: &Spanned<String>) -> Option<IpAddr> {
        let parsed = raw.get_ref().parse().ok();
        if parsed.is_none() {
            let message = format!("{:?} is not an IP address", raw.get_ref());
            self.refuse(raw.span(), message);
        }
        parsed
    }
}

/// The daemon's words for a refused address, except where they speak of the socket, which a
/// file does not have: there the source is compared with its group.
fn in_file_words(problem: InvalidRequest, group: IpAddr) -> String {
    match problem {
        InvalidRequest::WrongFamily { addr, role, .. } => format!(
            "{addr} is an {} {role} but group {group} is {}",
            Family::of(addr),
            Family::of(group)
        ),
        InvalidRequest::Ipv4Mapped { addr, role } => format!(
            "{addr} is an IPv4-mapped IPv6 address; write the {role} as {}",
            addr.to_canonical()
        ),
        problem => problem.to_string(),
    }
}

/// The line and column (from 1; the column in characters) of a byte offset in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..text.floor_char_boundary(offset)];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn group(mode: Mode, sources: &[&str]) -> GroupConfig {
        GroupConfig {
            mode,
            sources: sources.iter().map(|s| ip(s)).collect(),
        }
    }

    /// The problems in `text`, as (line, message).
    fn problems(text: &str) -> Vec<(usize, String)> {
        parse(text)
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| (e.line.unwrap(), e.message))
            .collect()
    }

    /// The only problem in `text`, as (line, message).
    fn problem(text: &str) -> (usize, String) {
        let mut all = problems(text);
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }

    /// A file with one group on eth1 (address on line 3, mode on line 4, sources on line 5).
    fn one_group(address: &str, mode: &str, sources: &[&str]) -> String {
        let sources: Vec<String> = sources.iter().map(|s| format!("{s:?}")).collect();
        format!(
            "[[interface.eth1.group]]\n\naddress = {address:?}\nmode = {mode:?}\nsources = [{}]\n",
            sources.join(", ")
        )
    }

    fn example() -> Config {
        let eth1 = InterfaceConfig {
            xdp_mode: Some(AttachMode::Driver),
            follow: false,
            drop_unjoined: false,
            groups: BTreeMap::from([
                (ip("232.1.1.1"), group(Mode::Exclude, &["10.0.0.5"])),
                (
                    ip("ff3e::8000:1"),
                    group(Mode::Include, &["fd00::7", "fd00::8"]),
                ),
                (ip("239.1.2.3"), group(Mode::Exclude, &[])),
            ]),
        };
        Config {
            interfaces: BTreeMap::from([
                ("eth1".to_owned(), eth1),
                ("eth2".to_owned(), InterfaceConfig::default()),
                (
                    "eth3".to_owned(),
                    InterfaceConfig {
                        follow: true,
                        drop_unjoined: true,
                        ..InterfaceConfig::default()
                    },
                ),
            ]),
        }
    }

    /// The TOML example in docs/config.md.
    fn documented_example() -> &'static str {
        let doc = include_str!("../../../docs/config.md");
        let start = doc.find("```toml\n").unwrap() + "```toml\n".len();
        &doc[start..start + doc[start..].find("```").unwrap()]
    }

    #[test]
    fn the_documented_example_is_read_as_written() {
        assert_eq!(parse(documented_example()), Ok(example()));
    }

    #[test]
    fn an_empty_file_owns_nothing() {
        assert_eq!(parse(""), Ok(Config::default()));
        assert_eq!(parse("# nothing yet\n[interface]\n"), Ok(Config::default()));
    }

    #[test]
    fn follow_is_true_or_false() {
        let config = parse("[interface.eth1]\nfollow = true\n").unwrap();
        assert!(config.interfaces["eth1"].follow);
        let config = parse("[interface.eth1]\n").unwrap();
        assert!(!config.interfaces["eth1"].follow);
        assert_eq!(
            problem("[interface.eth1]\nfollow = \"yes\"\n"),
            (2, r#"follow must be true or false, not "yes""#.to_owned())
        );
        assert_eq!(
            problem("[interface.eth1]\nfollow = 1\n"),
            (2, "follow must be true or false, not 1".to_owned())
        );
    }

    #[test]
    fn drop_unjoined_is_true_or_false_and_needs_follow() {
        let config = parse("[interface.eth1]\nfollow = true\ndrop-unjoined = true\n").unwrap();
        assert!(config.interfaces["eth1"].drop_unjoined);
        let config = parse("[interface.eth1]\nfollow = true\n").unwrap();
        assert!(!config.interfaces["eth1"].drop_unjoined);
        assert_eq!(
            problem("[interface.eth1]\nfollow = true\ndrop-unjoined = \"yes\"\n"),
            (
                3,
                r#"drop-unjoined must be true or false, not "yes""#.to_owned()
            )
        );
        let (line, message) = problem("[interface.eth1]\ndrop-unjoined = true\n");
        assert_eq!(line, 2);
        assert!(
            message.starts_with("drop-unjoined needs follow = true on eth1"),
            "{message}"
        );
        let old = parse("[interface.eth1]\nfollow = true\n").unwrap();
        let new = parse("[interface.eth1]\nfollow = true\ndrop-unjoined = true\n").unwrap();
        let d = diff(&old, &new);
        assert_eq!(d.drop_unjoined, vec![("eth1".to_owned(), true)]);
        assert!(d.follow.is_empty());
        assert!(!d.is_empty());
    }

    #[test]
    fn a_follow_change_is_in_the_diff() {
        let old = parse("[interface.eth1]\n[interface.eth2]\nfollow = true\n").unwrap();
        let new = parse(
            "[interface.eth1]\nfollow = true\n[interface.eth2]\n[interface.eth3]\nfollow = true\n",
        )
        .unwrap();
        let diff = diff(&old, &new);
        assert_eq!(
            diff.follow,
            vec![
                ("eth1".to_owned(), true),
                ("eth2".to_owned(), false),
                ("eth3".to_owned(), true)
            ]
        );
        assert!(super::diff(&new, &new).is_empty());
    }

    #[test]
    fn xdp_mode_is_driver_or_skb() {
        let read = |mode: &str| {
            let config = parse(&format!("[interface.eth1]\nxdp-mode = {mode:?}\n"))?;
            Ok::<_, ConfigErrors>(config.interfaces["eth1"].xdp_mode)
        };
        assert_eq!(read("driver"), Ok(Some(AttachMode::Driver)));
        assert_eq!(read("skb"), Ok(Some(AttachMode::Skb)));
        assert_eq!(
            problem("[interface.eth1]\n\nxdp-mode = \"native\"\n"),
            (
                3,
                r#"xdp-mode must be "driver" or "skb", not "native""#.to_owned()
            )
        );
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let error = parse("[interface.eth1]\nxdp-mode = \"skb\n").unwrap_err();
        assert_eq!(
            error.0,
            [ConfigError {
                path: None,
                line: Some(2),
                column: Some(16),
                message: "invalid basic string, expected `\"`".to_owned(),
            }]
        );
        let error = parse("[interface.eth1]\n[interface.eth1]\n").unwrap_err();
        assert_eq!((error.0[0].line, error.0[0].column), (Some(2), Some(12)));
        assert_eq!(error.0[0].message, "duplicate key");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let at = |text: &str| {
            let error = &parse(text).unwrap_err().0[0];
            (
                error.line.unwrap(),
                error.column.unwrap(),
                error.message.clone(),
            )
        };
        assert_eq!(
            at("interfaces = 3\n"),
            (
                1,
                1,
                "unknown field `interfaces`, expected `interface`".to_owned()
            )
        );
        assert_eq!(
            at("[interface.eth1]\nxdp = \"skb\"\n"),
            (
                2,
                1,
                "unknown field `xdp`, expected one of `xdp-mode`, `follow`, `drop-unjoined`, `group`".to_owned()
            )
        );
        let text = one_group("232.1.1.1", "exclude", &[]) + "source = [\"10.0.0.1\"]\n";
        assert_eq!(
            at(&text),
            (
                6,
                1,
                "unknown field `source`, expected one of `address`, `mode`, `sources`".to_owned()
            )
        );
    }

    #[test]
    fn missing_keys_and_wrong_types_are_refused() {
        let at = |text: &str| {
            let error = &parse(text).unwrap_err().0[0];
            (error.line.unwrap(), error.message.clone())
        };
        assert_eq!(
            at("[interface.eth1]\n[[interface.eth1.group]]\nmode = \"exclude\"\n"),
            (2, "missing field `address`".to_owned())
        );
        assert_eq!(
            at("[[interface.eth1.group]]\naddress = \"232.1.1.1\"\n"),
            (1, "missing field `mode`".to_owned())
        );
        assert_eq!(
            at(
                "[[interface.eth1.group]]\naddress = \"232.1.1.1\"\nmode = \"exclude\"\n\
                sources = \"10.0.0.1\"\n"
            ),
            (
                4,
                "invalid type: string \"10.0.0.1\", expected a sequence".to_owned()
            )
        );
        assert_eq!(
            at("[interface.eth1.group]\naddress = \"232.1.1.1\"\nmode = \"exclude\"\n"),
            (1, "invalid type: map, expected a sequence".to_owned())
        );
    }

    #[test]
    fn interface_names_are_linux_names() {
        let name = |name: &str| problems(&format!("[interface.{name:?}]\n"));
        let refused = |message: &str| vec![(1, message.to_owned())];
        assert_eq!(
            parse("[interface.\"br0.100\"]\n").map(|c| c.interfaces.len()),
            Ok(1)
        );
        assert_eq!(
            parse("[interface.abcdefghijklmno]\n").map(|c| c.interfaces.len()),
            Ok(1)
        );
        assert_eq!(
            name(""),
            refused(r#""" is not a valid interface name: it is empty"#)
        );
        assert_eq!(
            name("abcdefghijklmnop"),
            refused(
                r#""abcdefghijklmnop" is not a valid interface name: it is 16 bytes long; at most 15 are allowed"#
            )
        );
        for dots in [".", ".."] {
            assert_eq!(
                name(dots),
                refused(&format!(
                    r#"{dots:?} is not a valid interface name: "." and ".." are not interface names"#
                ))
            );
        }
        assert_eq!(
            name("eth/1"),
            refused(r#""eth/1" is not a valid interface name: it contains '/'"#)
        );
        assert_eq!(
            name("eth0:1"),
            refused(r#""eth0:1" is not a valid interface name: it contains ':'"#)
        );
        assert_eq!(
            name("eth 1"),
            refused(r#""eth 1" is not a valid interface name: it contains ' '"#)
        );
        assert_eq!(
            name("eth\t1"),
            refused(r#""eth\t1" is not a valid interface name: it contains '\t'"#)
        );
        // Named again by a group header further down: reported where it is first named.
        assert_eq!(
            problems(
                "[interface.\"eth/1\"]\n\n[[interface.\"eth/1\".group]]\n\
                      address = \"232.1.1.1\"\nmode = \"exclude\"\n"
            ),
            refused(r#""eth/1" is not a valid interface name: it contains '/'"#)
        );
    }

    #[test]
    fn addresses_must_be_addresses() {
        assert_eq!(
            problem(&one_group("232.1.1", "exclude", &[])),
            (3, r#""232.1.1" is not an IP address"#.to_owned())
        );
        assert_eq!(
            problem(&one_group(
                "232.1.1.1",
                "exclude",
                &["10.0.0.1", "host.example"]
            )),
            (5, r#""host.example" is not an IP address"#.to_owned())
        );
    }

    #[test]
    fn the_group_must_be_multicast() {
        assert_eq!(
            problem(&one_group("10.1.1.1", "exclude", &[])),
            (
                3,
                "10.1.1.1 is not a multicast address; a group must be multicast".to_owned()
            )
        );
        assert_eq!(
            problem(&one_group("fd00::1", "exclude", &[])),
            (
                3,
                "fd00::1 is not a multicast address; a group must be multicast".to_owned()
            )
        );
        assert_eq!(
            problem(&one_group("::ffff:239.1.1.1", "exclude", &[])),
            (
                3,
                "::ffff:239.1.1.1 is an IPv4-mapped IPv6 address; write the group as 239.1.1.1"
                    .to_owned()
            )
        );
    }

    #[test]
    fn sources_must_be_unicast_of_the_groups_family() {
        let source = |group: &str, source: &str| problem(&one_group(group, "include", &[source]));
        let at_5 = |message: &str| (5, message.to_owned());
        assert_eq!(
            source("232.1.1.1", "239.0.0.1"),
            at_5("239.0.0.1 is a multicast address; a source must be unicast")
        );
        assert_eq!(
            source("ff3e::1", "ff02::1"),
            at_5("ff02::1 is a multicast address; a source must be unicast")
        );
        assert_eq!(
            source("232.1.1.1", "0.0.0.0"),
            at_5("0.0.0.0 is the unspecified address; a source must be unicast")
        );
        assert_eq!(
            source("ff3e::1", "::"),
            at_5(":: is the unspecified address; a source must be unicast")
        );
        assert_eq!(
            source("232.1.1.1", "255.255.255.255"),
            at_5("255.255.255.255 is the IPv4 broadcast address; a source must be unicast")
        );
        assert_eq!(
            source("232.1.1.1", "fd00::7"),
            at_5("fd00::7 is an IPv6 source but group 232.1.1.1 is IPv4")
        );
        assert_eq!(
            source("ff3e::1", "10.0.0.1"),
            at_5("10.0.0.1 is an IPv4 source but group ff3e::1 is IPv6")
        );
        assert_eq!(
            source("ff3e::1", "::ffff:10.0.0.1"),
            at_5("::ffff:10.0.0.1 is an IPv4-mapped IPv6 address; write the source as 10.0.0.1")
        );
    }

    #[test]
    fn each_source_is_listed_once() {
        let text = "[[interface.eth1.group]]\naddress = \"232.1.1.1\"\nmode = \"exclude\"\n\
                    sources = [\n  \"10.0.0.1\",\n  \"10.0.0.2\",\n  \"10.0.0.1\",\n]\n";
        assert_eq!(
            problem(text),
            (
                7,
                "10.0.0.1 is listed more than once; a filter lists each source once".to_owned()
            )
        );
        assert_eq!(
            problem(&one_group("ff3e::1", "include", &["fd00::1", "FD00:0::1"])),
            (
                5,
                "fd00::1 is listed more than once; a filter lists each source once".to_owned()
            )
        );
    }

    #[test]
    fn each_group_is_listed_once_per_interface() {
        let text =
            one_group("ff3e::1", "exclude", &[]) + &one_group("FF3E:0::1", "include", &["fd00::1"]);
        assert_eq!(
            problem(&text),
            (
                8,
                "group ff3e::1 is listed twice on eth1 (first on line 3)".to_owned()
            )
        );
        let elsewhere = one_group("ff3e::1", "exclude", &[])
            + "[[interface.eth2.group]]\n\
                         address = \"ff3e::1\"\nmode = \"exclude\"\n";
        assert_eq!(parse(&elsewhere).map(|c| c.interfaces.len()), Ok(2));
    }

    #[test]
    fn mode_is_include_or_exclude() {
        assert_eq!(
            problem(&one_group("232.1.1.1", "any", &[])),
            (
                4,
                r#"mode must be "include" or "exclude", not "any""#.to_owned()
            )
        );
        assert_eq!(
            problem(&one_group("232.1.1.1", "INCLUDE", &["10.0.0.1"])),
            (
                4,
                r#"mode must be "include" or "exclude", not "INCLUDE""#.to_owned()
            )
        );
    }

    #[test]
    fn include_needs_a_source() {
        let message = "mode \"include\" with no sources is not a membership (INCLUDE {} means \
                       leave the group); list at least one source, or remove the group";
        assert_eq!(
            problem(&one_group("232.1.1.1", "include", &[])),
            (4, message.to_owned())
        );
        let without_sources =
            "[[interface.eth1.group]]\naddress = \"232.1.1.1\"\nmode = \"include\"\n";
        assert_eq!(problem(without_sources), (3, message.to_owned()));
        assert_eq!(
            parse(&one_group("232.1.1.1", "exclude", &[]))
                .unwrap()
                .interfaces["eth1"]
                .groups[&ip("232.1.1.1")],
            group(Mode::Exclude, &[])
        );
    }

    #[test]
    fn every_problem_is_reported_in_the_order_of_the_file() {
        let text = "[interface.eth2]\nxdp-mode = \"fast\"\n\n\
                    [[interface.eth1.group]]\naddress = \"10.0.0.1\"\nmode = \"some\"\n\
                    sources = [\"239.0.0.1\", \"nowhere\"]\n\n\
                    [[interface.eth1.group]]\naddress = \"232.1.1.1\"\nmode = \"include\"\n\
                    sources = [\"10.0.0.1\", \"fd00::1\", \"10.0.0.1\"]\n";
        assert_eq!(
            problems(text),
            [
                (2, r#"xdp-mode must be "driver" or "skb", not "fast""#),
                (
                    5,
                    "10.0.0.1 is not a multicast address; a group must be multicast"
                ),
                (6, r#"mode must be "include" or "exclude", not "some""#),
                (7, r#""nowhere" is not an IP address"#),
                (12, "fd00::1 is an IPv6 source but group 232.1.1.1 is IPv4"),
                (
                    12,
                    "10.0.0.1 is listed more than once; a filter lists each source once"
                ),
            ]
            .map(|(line, message)| (line, message.to_owned()))
        );
    }

    #[test]
    fn errors_name_the_file_and_the_line() {
        let error = |path: Option<&str>, line, column| ConfigError {
            path: path.map(PathBuf::from),
            line,
            column,
            message: "239.0.0.1 is a multicast address; a source must be unicast".to_owned(),
        };
        assert_eq!(
            error(Some("/etc/msfilter.toml"), Some(9), None).to_string(),
            "/etc/msfilter.toml line 9: 239.0.0.1 is a multicast address; a source must be unicast"
        );
        assert_eq!(
            error(Some("/etc/msfilter.toml"), Some(9), Some(4)).to_string(),
            "/etc/msfilter.toml line 9, column 4: 239.0.0.1 is a multicast address; a source \
             must be unicast"
        );
        assert_eq!(
            error(None, Some(9), None).to_string(),
            "line 9: 239.0.0.1 is a multicast address; a source must be unicast"
        );
        assert_eq!(
            error(Some("/etc/msfilter.toml"), None, None).to_string(),
            "/etc/msfilter.toml: 239.0.0.1 is a multicast address; a source must be unicast"
        );
        let two = ConfigErrors(vec![error(None, Some(1), None), error(None, Some(2), None)]);
        assert_eq!(
            two.to_string(),
            "line 1: 239.0.0.1 is a multicast address; a source must be unicast\n\
             line 2: 239.0.0.1 is a multicast address; a source must be unicast"
        );
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("msfilter-config-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("msfilter.toml");
        fs::write(&path, documented_example()).unwrap();
        assert_eq!(load(&path), Ok(example()));

        fs::write(&path, one_group("232.1.1.1", "exclude", &["239.0.0.1"])).unwrap();
        assert_eq!(
            load(&path).unwrap_err().to_string(),
            format!(
                "{} line 5: 239.0.0.1 is a multicast address; a source must be unicast",
                path.display()
            )
        );

        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            load(&path).unwrap_err().to_string(),
            format!("{}: No such file or directory (os error 2)", path.display())
        );
    }

    #[test]
    fn identical_configs_differ_in_nothing() {
        assert!(diff(&example(), &example()).is_empty());
        assert!(diff(&Config::default(), &Config::default()).is_empty());
    }

    #[test]
    fn group_changes() {
        let old = example();
        let mut new = example();
        let groups = &mut new.interfaces.get_mut("eth1").unwrap().groups;
        groups.insert(ip("232.9.9.9"), group(Mode::Include, &["10.0.0.9"]));
        groups.insert(
            ip("232.1.1.1"),
            group(Mode::Exclude, &["10.0.0.5", "10.0.0.6"]),
        );
        groups.insert(ip("239.1.2.3"), group(Mode::Include, &["10.0.0.1"]));
        groups.remove(&ip("ff3e::8000:1"));
        assert_eq!(
            diff(&old, &new),
            ConfigDiff {
                follow: vec![],
                drop_unjoined: vec![],
                attach: vec![],
                release: vec![],
                groups: vec![
                    (
                        "eth1".to_owned(),
                        ip("232.1.1.1"),
                        Some(group(Mode::Exclude, &["10.0.0.5", "10.0.0.6"]))
                    ),
                    (
                        "eth1".to_owned(),
                        ip("232.9.9.9"),
                        Some(group(Mode::Include, &["10.0.0.9"]))
                    ),
                    (
                        "eth1".to_owned(),
                        ip("239.1.2.3"),
                        Some(group(Mode::Include, &["10.0.0.1"]))
                    ),
                    ("eth1".to_owned(), ip("ff3e::8000:1"), None),
                ],
            }
        );
    }

    #[test]
    fn an_interface_added_is_attached_with_its_groups() {
        let old = Config::default();
        let new = example();
        assert_eq!(
            diff(&old, &new),
            ConfigDiff {
                follow: vec![("eth3".to_owned(), true)],
                drop_unjoined: vec![("eth3".to_owned(), true)],
                attach: vec![
                    ("eth1".to_owned(), Some(AttachMode::Driver)),
                    ("eth2".to_owned(), None),
                    ("eth3".to_owned(), None)
                ],
                release: vec![],
                groups: new.interfaces["eth1"]
                    .groups
                    .iter()
                    .map(|(g, f)| ("eth1".to_owned(), *g, Some(f.clone())))
                    .collect(),
            }
        );
    }

    #[test]
    fn an_interface_removed_is_released_and_its_groups_removed() {
        let old = example();
        let mut new = example();
        new.interfaces.remove("eth1");
        assert_eq!(
            diff(&old, &new),
            ConfigDiff {
                follow: vec![],
                drop_unjoined: vec![],
                attach: vec![],
                release: vec!["eth1".to_owned()],
                groups: vec![
                    ("eth1".to_owned(), ip("232.1.1.1"), None),
                    ("eth1".to_owned(), ip("239.1.2.3"), None),
                    ("eth1".to_owned(), ip("ff3e::8000:1"), None),
                ],
            }
        );
    }

    #[test]
    fn an_xdp_mode_changed_is_attached_again() {
        let old = example();
        let mut new = example();
        new.interfaces.get_mut("eth1").unwrap().xdp_mode = Some(AttachMode::Skb);
        new.interfaces.get_mut("eth2").unwrap().xdp_mode = Some(AttachMode::Driver);
        assert_eq!(
            diff(&old, &new),
            ConfigDiff {
                follow: vec![],
                drop_unjoined: vec![],
                attach: vec![
                    ("eth1".to_owned(), Some(AttachMode::Skb)),
                    ("eth2".to_owned(), Some(AttachMode::Driver)),
                ],
                release: vec![],
                groups: vec![],
            }
        );
        new.interfaces.get_mut("eth1").unwrap().xdp_mode = None;
        assert_eq!(diff(&old, &new).attach[0], ("eth1".to_owned(), None));
    }
}
