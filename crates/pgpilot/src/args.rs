//! The agent's command line (`pgpilot [OPTIONS] [CONFIG]`), parsed by hand from one table of
//! options, [`OPTIONS`]: the agent's `--help` and its man page (`pgpilot-docgen`, which builds
//! a clap command from the same table) both come from it.
//!
//! Not clap, as `pgpilotctl` uses: a handful of flags does not need it, and clap's code is
//! about 0.15 MiB of the agent's text, which stays resident in every agent (the kernel maps the
//! pages around each fault, and nearly all of the text ends up mapped).

use std::ffi::OsString;
use std::path::PathBuf;

/// What the agent is, first line of `--help` and the man page's description.
pub(crate) const ABOUT: &str =
    "PostgreSQL high availability, compatible with Patroni's configuration, DCS layout and REST API.";

/// The positional argument's name and help.
pub(crate) const CONFIG_VALUE: &str = "CONFIG";
pub(crate) const CONFIG_HELP: &str = "Patroni YAML configuration file or directory of *.yml files. Without it the configuration comes from PATRONI_CONFIGURATION or PATRONI_* variables.";

/// Which field of [`Args`] an option sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flag {
    ValidateConfig,
    GenerateSampleConfig,
    GenerateConfig,
    Dsn,
    Version,
    Guard,
    GuardLog,
    Help,
}

/// One `--long` option: the value's name when it takes one, its help, and whether `--help` and
/// the man page leave it out (the guard's options: the agent passes them, nobody else does).
pub(crate) struct Opt {
    pub flag: Flag,
    pub long: &'static str,
    pub value: Option<&'static str>,
    pub help: &'static str,
    pub hidden: bool,
}

pub(crate) const OPTIONS: &[Opt] = &[
    Opt {
        flag: Flag::ValidateConfig,
        long: "validate-config",
        value: None,
        help: "Check the configuration, list every problem with its key path, and exit.",
        hidden: false,
    },
    Opt {
        flag: Flag::GenerateSampleConfig,
        long: "generate-sample-config",
        value: None,
        help: "Write a sample configuration (defaults for the PostgreSQL of `postgresql.bin_dir`, over them the PATRONI_* variables) to CONFIG, or to stdout, and exit.",
        hidden: false,
    },
    Opt {
        flag: Flag::GenerateConfig,
        long: "generate-config",
        value: None,
        help: "Write a configuration read from the running PostgreSQL (settings, data directory, pg_hba.conf, binaries) to CONFIG, or to stdout, and exit.",
        hidden: false,
    },
    Opt {
        flag: Flag::Dsn,
        long: "dsn",
        value: Some("DSN"),
        help: "With --generate-config: how to connect to the running PostgreSQL (libpq key=value or URI); the libpq variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, ...) fill in the rest.",
        hidden: false,
    },
    Opt {
        flag: Flag::Version,
        long: "version",
        value: None,
        help: "Print the version and exit.",
        hidden: false,
    },
    Opt {
        flag: Flag::Guard,
        long: "guard",
        value: Some("DATA_DIR"),
        help: "Run as the guard of the PostgreSQL in this data directory (started by the agent).",
        hidden: true,
    },
    Opt {
        flag: Flag::GuardLog,
        long: "guard-log",
        value: Some("JSON"),
        help: "The agent's `log` section (JSON), for the guard's log lines.",
        hidden: true,
    },
    Opt {
        flag: Flag::Help,
        long: "help",
        value: None,
        help: "Print help.",
        hidden: false,
    },
];

/// The parsed command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Args {
    pub config: Option<PathBuf>,
    pub validate_config: bool,
    pub generate_sample_config: bool,
    pub generate_config: bool,
    pub dsn: Option<String>,
    pub version: bool,
    pub guard: Option<PathBuf>,
    pub guard_log: Option<String>,
    pub help: bool,
}

/// The first line of `--help` and of a usage error.
pub(crate) const USAGE: &str = "Usage: pgpilot [OPTIONS] [CONFIG]";

/// Parses the arguments after the program name. `--opt VALUE` and `--opt=VALUE` both work;
/// after `--` everything is the positional CONFIG. The error is the sentence to print before
/// the usage line.
pub(crate) fn parse(argv: impl IntoIterator<Item = OsString>) -> Result<Args, String> {
    let mut argv = argv.into_iter();
    let mut args = Args::default();
    let mut options_done = false;
    while let Some(arg) = argv.next() {
        let option = match arg.to_str() {
            Some("--") if !options_done => {
                options_done = true;
                continue;
            }
            Some(text) if !options_done && text.starts_with('-') && text != "-" => text,
            _ => {
                if args.config.is_some() {
                    return Err(format!("unexpected argument '{}'", arg.to_string_lossy()));
                }
                args.config = Some(PathBuf::from(arg));
                continue;
            }
        };
        let (name, inline) = match option.split_once('=') {
            Some((name, value)) => (name, Some(OsString::from(value))),
            None => (option, None),
        };
        let opt = OPTIONS
            .iter()
            .find(|o| {
                name.strip_prefix("--") == Some(o.long) || (name == "-h" && o.flag == Flag::Help)
            })
            .ok_or_else(|| format!("unexpected argument '{name}'"))?;
        let value = match (opt.value, inline) {
            (Some(_), Some(v)) => Some(v),
            (Some(v), None) => Some(
                argv.next()
                    .ok_or_else(|| format!("a value is required for '--{} <{v}>'", opt.long))?,
            ),
            (None, Some(_)) => return Err(format!("'--{}' takes no value", opt.long)),
            (None, None) => None,
        };
        set(&mut args, opt, value)?;
    }
    let given = |on: bool, long: &str| on.then(|| format!("--{long}"));
    if args.generate_sample_config {
        if let Some(other) = given(args.validate_config, "validate-config")
            .or_else(|| given(args.generate_config, "generate-config"))
        {
            return Err(format!(
                "'--generate-sample-config' can not be used with '{other}'"
            ));
        }
    }
    if args.generate_config && args.validate_config {
        return Err("'--generate-config' can not be used with '--validate-config'".into());
    }
    if args.dsn.is_some() && !args.generate_config {
        return Err("'--dsn' requires '--generate-config'".into());
    }
    if args.guard_log.is_some() && args.guard.is_none() {
        return Err("'--guard-log' requires '--guard'".into());
    }
    Ok(args)
}

fn set(args: &mut Args, opt: &Opt, value: Option<OsString>) -> Result<(), String> {
    let text = |v: Option<OsString>| {
        v.unwrap_or_default()
            .into_string()
            .map_err(|_| format!("the value of '--{}' is not UTF-8", opt.long))
    };
    match opt.flag {
        Flag::ValidateConfig => args.validate_config = true,
        Flag::GenerateSampleConfig => args.generate_sample_config = true,
        Flag::GenerateConfig => args.generate_config = true,
        Flag::Version => args.version = true,
        Flag::Help => args.help = true,
        Flag::Dsn => args.dsn = Some(text(value)?),
        Flag::GuardLog => args.guard_log = Some(text(value)?),
        Flag::Guard => args.guard = value.map(PathBuf::from),
    }
    Ok(())
}

/// `--help`: the usage line, the argument and the options that are not hidden.
pub(crate) fn help() -> String {
    let mut out = format!(
        "{ABOUT}\n\n{USAGE}\n\nArguments:\n  [{CONFIG_VALUE}]\n      {CONFIG_HELP}\n\nOptions:\n"
    );
    for opt in OPTIONS.iter().filter(|o| !o.hidden) {
        let short = if opt.flag == Flag::Help {
            "-h, "
        } else {
            "    "
        };
        match opt.value {
            Some(v) => out.push_str(&format!("  {short}--{} <{v}>\n", opt.long)),
            None => out.push_str(&format!("  {short}--{}\n", opt.long)),
        }
        out.push_str(&format!("          {}\n", opt.help));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Args, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn options_values_and_the_config_file() {
        let a = parse_strs(&["--validate-config", "/etc/patroni.yml"]).unwrap();
        assert!(a.validate_config);
        assert_eq!(a.config, Some(PathBuf::from("/etc/patroni.yml")));

        let a = parse_strs(&["--generate-config", "--dsn", "host=x", "out.yml"]).unwrap();
        assert_eq!(a.dsn.as_deref(), Some("host=x"));
        assert_eq!(a.config, Some(PathBuf::from("out.yml")));
        let b = parse_strs(&["--generate-config", "--dsn=host=x", "out.yml"]).unwrap();
        assert_eq!(a, b, "--dsn=VALUE splits at the first '=' only");

        let a = parse_strs(&["--guard", "/data", "--guard-log", "{\"level\":\"INFO\"}"]).unwrap();
        assert_eq!(a.guard, Some(PathBuf::from("/data")));
        assert_eq!(a.guard_log.as_deref(), Some("{\"level\":\"INFO\"}"));

        assert!(parse_strs(&["-h"]).unwrap().help);
        assert!(parse_strs(&["--version"]).unwrap().version);
        assert_eq!(parse_strs(&[]).unwrap(), Args::default());
        // After `--`, a name starting with '-' is the configuration file.
        assert_eq!(
            parse_strs(&["--", "-odd.yml"]).unwrap().config,
            Some(PathBuf::from("-odd.yml"))
        );
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        let cases: &[(&[&str], &str)] = &[
            (&["--validate"], "unexpected argument '--validate'"),
            (&["a.yml", "b.yml"], "unexpected argument 'b.yml'"),
            (&["--dsn"], "a value is required for '--dsn <DSN>'"),
            (&["--dsn", "x"], "'--dsn' requires '--generate-config'"),
            (&["--version=1"], "'--version' takes no value"),
            (
                &["--generate-sample-config", "--generate-config"],
                "'--generate-sample-config' can not be used with '--generate-config'",
            ),
            (
                &["--generate-config", "--validate-config"],
                "'--generate-config' can not be used with '--validate-config'",
            ),
            (&["--guard-log", "{}"], "'--guard-log' requires '--guard'"),
        ];
        for (argv, want) in cases {
            assert_eq!(parse_strs(argv).unwrap_err(), *want, "{argv:?}");
        }
    }

    #[test]
    fn help_lists_the_visible_options_only() {
        let h = help();
        for opt in OPTIONS {
            assert_eq!(
                h.contains(&format!("--{}", opt.long)),
                !opt.hidden,
                "{}",
                opt.long
            );
        }
        assert!(h.contains(USAGE) && h.contains(CONFIG_HELP));
    }
}
