//! The settings of the weekly run, declared once.
//!
//! Each setting is a `tally` flag and a `TALLY_*` environment variable, with
//! one name, one range and one message, here: the CLI flattens these
//! argument groups into its subcommands (clap reads the flag or, failing
//! that, the variable), and the Lambda functions parse the same groups from
//! their environment with [`WeeklyArgs::from_lookup`]. So a value that
//! `tally summarize` refuses, the weekly function refuses at its cold start
//! with the same words, and a new setting of the weekly run is added in one
//! place for both.
//!
//! What only one side has stays with it: the CLI's storage and server flags,
//! the functions' table, bucket, topic and share count.

use clap::{Args, FromArgMatches};
use tally_core::report_link::{DEFAULT_VALIDITY_DAYS, MAX_VALIDITY_DAYS, PublicUrl};
use tally_core::summary::{SummaryOptions, Thresholds, available_threads};

/// Most weeks the retention may say (`--retention-weeks`, `TALLY_RETENTION_WEEKS`).
pub const MAX_RETENTION_WEEKS: u32 = 10_000;

/// How the weekly summary is written.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct SummaryArgs {
    /// gzip level of the weekly records.ndjson.gz export: 1 is fastest, 9
    /// smallest (on typical records 6 is ~40% smaller than 1 at ~4x the CPU).
    #[arg(long, env = "TALLY_GZIP_LEVEL", default_value_t = SummaryOptions::default().gzip_level,
          value_parser = clap::value_parser!(u32).range(0..=9))]
    pub gzip_level: u32,
    /// Also summarize the records per value of this top-level string field
    /// (e.g. `kind`): the 20 most frequent values get a section of their own,
    /// with their own findings.
    #[arg(long, env = "TALLY_SEGMENT_BY", value_name = "FIELD")]
    pub segment_by: Option<String>,
    /// Override thresholds of the findings against the previous week, e.g.
    /// `volume=0.3,null_rate=0.05` (keys and defaults in the README).
    #[arg(long, env = "TALLY_THRESHOLDS", value_name = "KEY=VALUE,...", default_value = "")]
    pub thresholds: Thresholds,
    /// Parts of the week read, aggregated and compressed at once, each with
    /// threads of its own; the outputs are the same bytes for every N
    /// [default: half the available cores, at least 1].
    #[arg(long, env = "TALLY_THREADS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
}

impl SummaryArgs {
    /// The summary options these settings ask for.
    pub fn options(&self) -> SummaryOptions {
        SummaryOptions {
            gzip_level: self.gzip_level,
            segment_by: self.segment_by.clone().filter(|s| !s.trim().is_empty()).map(|s| s.trim().to_owned()),
            thresholds: self.thresholds.clone(),
            threads: self.threads.map_or_else(available_threads, usize::from),
            ..SummaryOptions::default()
        }
    }
}

/// How long records are kept.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RetentionArgs {
    /// Delete a week's records once the week ended more than N weeks ago and
    /// its summary exists (summaries stay) [default: keep forever].
    #[arg(long, env = "TALLY_RETENTION_WEEKS",
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_RETENTION_WEEKS)))]
    pub retention_weeks: Option<u32>,
}

/// Where each week's notification goes.
///
/// The signing secret is read from the environment variable
/// `TALLY_NOTIFY_SECRET` only, never from a flag: a command line is visible
/// to every user of the machine (`ps`, `/proc/<pid>/cmdline`) and lands in
/// shell history.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct NotifyArgs {
    /// After each week's summary is written, POST a JSON notification
    /// (week, records, warnings, findings, report link, text digest) to this
    /// URL, e.g. a Slack/Mattermost/Teams incoming webhook. Set
    /// TALLY_NOTIFY_SECRET to sign it (X-Tally-Signature).
    #[arg(long, env = "TALLY_NOTIFY_URL", value_name = "URL")]
    pub notify_url: Option<String>,
}

impl NotifyArgs {
    /// The webhook URL, if one is set (blank counts as unset).
    pub fn url(&self) -> Option<&str> {
        self.notify_url.as_deref().map(str::trim).filter(|u| !u.is_empty())
    }
}

/// Report links: where the report site is reached, how long a link works,
/// and which secret signs them.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct LinkArgs {
    /// The address people reach this tally at, the base of report links,
    /// e.g. https://tally.example.com [default: http://<--listen> for
    /// `serve`, else http://127.0.0.1:8080]. On AWS: the stack's ApiUrl.
    #[arg(long, env = "TALLY_PUBLIC_URL", value_name = "URL", value_parser = PublicUrl::parse)]
    pub public_url: Option<PublicUrl>,

    /// Days a report link works (notifications and `tally report-link`).
    #[arg(long, env = "TALLY_REPORT_LINK_DAYS", value_name = "DAYS",
          default_value_t = DEFAULT_VALIDITY_DAYS,
          value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_VALIDITY_DAYS)))]
    pub report_link_days: u16,

    /// Sign with this AWS Secrets Manager secret (the stack's
    /// ReportLinkSecretArn output) instead of DATA_DIR/report-link.secret:
    /// links for a deployed stack.
    #[arg(long, env = "TALLY_LINK_SECRET_ARN", value_name = "ARN")]
    pub link_secret_arn: Option<String>,
}

impl LinkArgs {
    /// The secret's ARN, if one is set (blank counts as unset).
    pub fn secret_arn(&self) -> Option<&str> {
        self.link_secret_arn.as_deref().map(str::trim).filter(|a| !a.is_empty())
    }
}

/// Every setting of the weekly run: what the weekly function reads from its
/// environment, and what `tally serve` (with the storage flags) takes.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct WeeklyArgs {
    #[command(flatten)]
    pub summary: SummaryArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
    #[command(flatten)]
    pub notify: NotifyArgs,
    #[command(flatten)]
    pub links: LinkArgs,
}

/// A setting the environment gives a value it does not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable} is {value:?}: {reason}; fix the value (the flag {flag} of `tally` takes the same) or unset it")]
pub struct SettingError {
    /// The environment variable, e.g. `TALLY_GZIP_LEVEL`.
    pub variable: String,
    pub value: String,
    /// The same flag of `tally`, e.g. `--gzip-level`.
    pub flag: String,
    /// Why, as the CLI says it, e.g. `10 is not in 0..=9`.
    pub reason: String,
}

impl WeeklyArgs {
    /// Parses the settings from the variables `var` gives (the process
    /// environment, for a Lambda: `|name| std::env::var(name).ok()`), the
    /// way clap parses `tally`'s: same ranges, same parsers. A variable
    /// that is unset, empty or blank counts as unset; values are trimmed.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, SettingError> {
        // Each variable is parsed alone, as its own flag, so a refusal names it.
        let command = Self::augment_args(clap::Command::new("tally-weekly").no_binary_name(true));
        // Only one flag at a time (the others take their defaults), with the
        // environment kept out so each variable is read through `var` alone.
        let alone = without_env(command.clone());
        let mut argv = Vec::new();
        for arg in command.get_arguments() {
            let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else { continue };
            let variable = env.to_string_lossy().into_owned();
            let Some(value) = var(&variable).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
                continue;
            };
            let flag = format!("--{long}={value}");
            if let Err(e) = alone.clone().try_get_matches_from([flag.as_str()]) {
                return Err(SettingError { variable, value, flag: format!("--{long}"), reason: reason(&e) });
            }
            argv.push(flag);
        }
        let matches = alone.try_get_matches_from(&argv).map_err(|e| SettingError {
            variable: "TALLY_*".into(),
            value: argv.join(" "),
            flag: "(several)".into(),
            reason: reason(&e),
        })?;
        Self::from_arg_matches(&matches).map_err(|e| SettingError {
            variable: "TALLY_*".into(),
            value: argv.join(" "),
            flag: "(several)".into(),
            reason: reason(&e),
        })
    }

    /// [`from_lookup`](Self::from_lookup) over the process environment.
    pub fn from_env() -> Result<Self, SettingError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

/// The command with no argument reading the process environment: the
/// values come only from the argv [`WeeklyArgs::from_lookup`] builds.
fn without_env(command: clap::Command) -> clap::Command {
    let ids: Vec<_> = command.get_arguments().map(|a| a.get_id().clone()).collect();
    ids.into_iter().fold(command, |c, id| c.mut_arg(id, |a| a.env(None::<&str>)))
}

/// clap's reason, without its "error: " prefix and usage lines.
fn reason(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).trim().to_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    /// The settings as `tally` parses its flags (no environment involved).
    fn from_flags(flags: &[&str]) -> WeeklyArgs {
        let command = without_env(WeeklyArgs::augment_args(clap::Command::new("tally").no_binary_name(true)));
        WeeklyArgs::from_arg_matches(&command.try_get_matches_from(flags).unwrap()).unwrap()
    }

    #[test]
    fn every_setting_is_both_a_flag_and_a_tally_variable() {
        let command = WeeklyArgs::augment_args(clap::Command::new("tally"));
        for arg in command.get_arguments() {
            let long = arg.get_long().unwrap_or_else(|| panic!("{} has no flag", arg.get_id()));
            let env = arg.get_env().unwrap_or_else(|| panic!("--{long} has no variable")).to_str().unwrap();
            assert_eq!(env, format!("TALLY_{}", long.replace('-', "_").to_uppercase()), "--{long}");
        }
    }

    #[test]
    fn unset_empty_and_blank_variables_give_the_flags_defaults() {
        let none = WeeklyArgs::from_lookup(lookup(&[])).unwrap();
        assert_eq!(none, from_flags(&[]));
        let blank = WeeklyArgs::from_lookup(lookup(&[
            ("TALLY_GZIP_LEVEL", ""),
            ("TALLY_RETENTION_WEEKS", " "),
            ("TALLY_NOTIFY_URL", ""),
            ("TALLY_SEGMENT_BY", "  "),
        ]))
        .unwrap();
        assert_eq!(blank, none);
        assert_eq!(none.summary.options(), SummaryOptions::default());
        assert_eq!((none.retention.retention_weeks, none.notify.url(), none.links.secret_arn()), (None, None, None));
        assert_eq!(none.links.report_link_days, DEFAULT_VALIDITY_DAYS);
    }

    #[test]
    fn each_variable_means_what_its_flag_means() {
        let env = WeeklyArgs::from_lookup(lookup(&[
            ("TALLY_GZIP_LEVEL", "6"),
            ("TALLY_SEGMENT_BY", " kind "),
            ("TALLY_THRESHOLDS", "volume=0.3"),
            ("TALLY_THREADS", "3"),
            ("TALLY_RETENTION_WEEKS", " 52 "),
            ("TALLY_NOTIFY_URL", "https://hooks.example.com/x"),
            ("TALLY_PUBLIC_URL", "https://abc.execute-api.eu-west-1.amazonaws.com/Prod/"),
            ("TALLY_REPORT_LINK_DAYS", "7"),
            ("TALLY_LINK_SECRET_ARN", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:x"),
        ]))
        .unwrap();
        let flags = from_flags(&[
            "--gzip-level=6",
            "--segment-by=kind",
            "--thresholds=volume=0.3",
            "--threads=3",
            "--retention-weeks=52",
            "--notify-url=https://hooks.example.com/x",
            "--public-url=https://abc.execute-api.eu-west-1.amazonaws.com/Prod/",
            "--report-link-days=7",
            "--link-secret-arn=arn:aws:secretsmanager:eu-west-1:123456789012:secret:x",
        ]);
        assert_eq!(env, flags);
        let options = env.summary.options();
        assert_eq!((options.gzip_level, options.segment_by.as_deref(), options.threads), (6, Some("kind"), 3));
        assert_eq!(options.thresholds.volume, 0.3);
        assert_eq!(env.retention.retention_weeks, Some(52));
        assert_eq!(env.links.public_url.unwrap().as_str(), "https://abc.execute-api.eu-west-1.amazonaws.com/Prod");
        assert_eq!(env.links.report_link_days, 7);
    }

    #[test]
    fn a_refused_value_names_its_variable_its_flag_and_why() {
        for (variable, value, why) in [
            ("TALLY_GZIP_LEVEL", "10", "0..=9"),
            ("TALLY_GZIP_LEVEL", "fast", "invalid digit"),
            ("TALLY_RETENTION_WEEKS", "10001", "0..=10000"),
            ("TALLY_RETENTION_WEEKS", "-1", "0..=10000"),
            ("TALLY_RETENTION_WEEKS", "52w", "invalid digit"),
            ("TALLY_THRESHOLDS", "loud=1", "unknown key"),
            ("TALLY_THREADS", "0", "1..=1024"),
            ("TALLY_REPORT_LINK_DAYS", "367", "1..=366"),
            ("TALLY_PUBLIC_URL", "abc", "not a public URL"),
        ] {
            let err = WeeklyArgs::from_lookup(lookup(&[(variable, value)])).unwrap_err();
            let flag = format!("--{}", variable.trim_start_matches("TALLY_").to_lowercase().replace('_', "-"));
            assert_eq!(
                (err.variable.as_str(), err.value.as_str(), err.flag.as_str()),
                (variable, value, flag.as_str())
            );
            let message = err.to_string();
            assert!(message.contains(variable) && message.contains(why), "{variable}={value}: {message}");
        }
    }
}
