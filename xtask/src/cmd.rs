//! Running external programs: each one is shown before it runs, each failure names it.

use std::{iter, process::Command};

use anyhow::{Context as _, Result, ensure};

/// Runs `cmd` with the terminal attached (its output is the user's to read).
pub fn run(tag: &str, cmd: &mut Command) -> Result<()> {
    let line = describe(cmd);
    crate::say(tag, format_args!("$ {line}"));
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    ensure!(status.success(), "`{line}` failed ({status})");
    Ok(())
}

/// Runs `cmd` quietly (a check or a query) and returns what it printed on stdout; on failure
/// the error carries what it printed on stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let line = describe(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    ensure!(
        out.status.success(),
        "`{line}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8(out.stdout).with_context(|| format!("`{line}` printed non-UTF-8 output"))
}

/// The command as a shell line, with the variables it sets in front.
fn describe(cmd: &Command) -> String {
    let vars = cmd
        .get_envs()
        .filter_map(|(name, value)| Some(format!("{}={}", name.display(), value?.display())));
    let words = iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|word| word.display().to_string());
    vars.chain(words).collect::<Vec<_>>().join(" ")
}
