//! Command line: patronictl's commands, options and defaults.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Command-line interface for interacting with Patroni-compatible clusters (pgpilot, Patroni).
#[derive(Parser, Debug)]
#[command(name = "pgpilotctl", disable_version_flag = true)]
pub struct Cli {
    /// Configuration file
    #[arg(short = 'c', long = "config-file", env = "PATRONICTL_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// The DCS connect url (DCS://HOST:PORT/NAMESPACE)
    #[arg(short = 'd', long = "dcs-url", visible_alias = "dcs", env = "DCS_URL")]
    pub dcs_url: Option<String>,
    /// Allow connections to SSL sites without certs
    #[arg(short = 'k', long)]
    pub insecure: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// `-r/--role` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Leader,
    Primary,
    #[value(name = "standby-leader")]
    StandbyLeader,
    Replica,
    Standby,
    Any,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Primary => "primary",
            Role::StandbyLeader => "standby-leader",
            Role::Replica => "replica",
            Role::Standby => "standby",
            Role::Any => "any",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutFormat {
    Pretty,
    Tsv,
    Json,
    Yaml,
    Yml,
}

impl OutFormat {
    pub fn to_format(self) -> crate::table::Format {
        use crate::table::Format;
        match self {
            OutFormat::Pretty => Format::Pretty,
            OutFormat::Tsv => Format::Tsv,
            OutFormat::Json => Format::Json,
            OutFormat::Yaml | OutFormat::Yml => Format::Yaml,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FlushTarget {
    Restart,
    Switchover,
}

#[derive(Args, Debug, Clone)]
pub struct Watch {
    /// Auto update the screen every 2 seconds
    #[arg(short = 'W')]
    pub w: bool,
    /// Auto update the screen every X seconds
    #[arg(short = 'w', long = "watch")]
    pub watch: Option<f64>,
}

impl Watch {
    pub fn interval(&self) -> Option<f64> {
        match (self.w, self.watch) {
            (_, Some(w)) if w > 0.0 => Some(w),
            (true, _) => Some(2.0),
            _ => None,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the Patroni members for a given Patroni
    List {
        cluster_names: Vec<String>,
        /// Citus group
        #[arg(long)]
        group: Option<i64>,
        /// Show some extra information
        #[arg(short = 'e', long)]
        extended: bool,
        /// Print timestamp
        #[arg(short = 't', long = "timestamp")]
        ts: bool,
        /// Output format
        #[arg(short = 'f', long = "format", value_enum, default_value = "pretty")]
        fmt: OutFormat,
        #[command(flatten)]
        watch: Watch,
    },
    /// Prints ASCII topology for given cluster
    Topology {
        cluster_names: Vec<String>,
        /// Citus group
        #[arg(long)]
        group: Option<i64>,
        #[command(flatten)]
        watch: Watch,
    },
    /// Generate a dsn for the provided member, defaults to a dsn of the leader
    Dsn {
        cluster_name: Option<String>,
        /// Citus group
        #[arg(long)]
        group: Option<i64>,
        /// Give a dsn of any member with this role
        #[arg(short = 'r', long, value_enum)]
        role: Option<Role>,
        /// Generate a dsn for this member
        #[arg(short = 'm', long)]
        member: Option<String>,
    },
    /// Query a Patroni PostgreSQL member
    Query {
        cluster_name: Option<String>,
        /// Citus group
        #[arg(long)]
        group: Option<i64>,
        /// Output format (pretty, tsv, json, yaml)
        #[arg(long = "format", value_enum, default_value = "tsv")]
        fmt: OutFormat,
        /// Execute the SQL commands from this file
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// force password prompt
        #[arg(long)]
        password: bool,
        /// database user name
        #[arg(short = 'U', long)]
        username: Option<String>,
        #[command(flatten)]
        watch: Watch,
        /// The role of the query
        #[arg(short = 'r', long, value_enum)]
        role: Option<Role>,
        /// Query a specific member
        #[arg(short = 'm', long)]
        member: Option<String>,
        /// The column delimiter
        #[arg(long, default_value = "\t")]
        delimiter: String,
        /// The SQL commands to execute
        #[arg(short = 'c', long)]
        command: Option<String>,
        /// database name to connect to
        #[arg(short = 'd', long)]
        dbname: Option<String>,
    },
    /// Remove cluster from DCS
    Remove {
        cluster_name: String,
        /// Citus group
        #[arg(long)]
        group: Option<i64>,
        /// Output format
        #[arg(short = 'f', long = "format", value_enum, default_value = "pretty")]
        fmt: OutFormat,
    },
    /// Reload cluster member configuration
    Reload {
        cluster_name: String,
        member_names: Vec<String>,
        /// Citus group
        #[arg(long)]
        group: Option<i64>,
        /// Reload only members with this role
        #[arg(short = 'r', long, value_enum, default_value = "any")]
        role: Role,
        /// Do not ask for confirmation at any point
        #[arg(long)]
        force: bool,
    },
    /// Restart cluster member
    Restart {
        cluster_name: String,
        member_names: Vec<String>,
        /// Citus group
        #[arg(long)]
        group: Option<i64>,
        /// Restart only members with this role
        #[arg(short = 'r', long, value_enum, default_value = "any")]
        role: Role,
        /// Restart a single member only
        #[arg(long = "any")]
        p_any: bool,
        /// Timestamp of a scheduled restart in unambiguous format (e.g. ISO 8601)
        #[arg(long)]
        scheduled: Option<String>,
        /// Restart if the PostgreSQL version is less than provided (e.g. 9.5.2)
        #[arg(long = "pg-version")]
        pg_version: Option<String>,
        /// Restart if pending
        #[arg(long)]
        pending: bool,
        /// Return error and fail over if necessary when restarting takes longer than this.
        #[arg(long)]
        timeout: Option<String>,
        /// Do not ask for confirmation at any point
        #[arg(long)]
        force: bool,
    },
    /// Reinitialize cluster member
    Reinit {
        cluster_name: String,
        member_names: Vec<String>,
        /// Citus group
        #[arg(long)]
        group: Option<i64>,
        /// Do not ask for confirmation at any point
        #[arg(long)]
        force: bool,
        /// Get basebackup from leader
        #[arg(long = "from-leader")]
        from_leader: bool,
        /// Wait until reinitialization completes
        #[arg(long)]
        wait: bool,
    },
    /// Failover to a replica
    Failover {
        cluster_name: Option<String>,
        /// Citus group
        #[arg(long)]
        group: Option<i64>,
        /// The name of the candidate
        #[arg(long)]
        candidate: Option<String>,
        /// Do not ask for confirmation at any point
        #[arg(long)]
        force: bool,
    },
    /// Switchover to a replica
    Switchover {
        cluster_name: Option<String>,
        /// Citus group
        #[arg(long)]
        group: Option<i64>,
        /// The name of the current leader
        #[arg(long, visible_alias = "primary")]
        leader: Option<String>,
        /// The name of the candidate
        #[arg(long)]
        candidate: Option<String>,
        /// Timestamp of a scheduled switchover in unambiguous format (e.g. ISO 8601)
        #[arg(long)]
        scheduled: Option<String>,
        /// Do not ask for confirmation at any point
        #[arg(long)]
        force: bool,
    },
    /// Discard scheduled events
    Flush {
        cluster_name: String,
        /// [MEMBER_NAMES]... {restart|switchover}
        #[arg(required = true, value_name = "MEMBER_NAMES... TARGET")]
        args: Vec<String>,
        /// Citus group
        #[arg(long)]
        group: Option<i64>,
        /// Flush only members with this role
        #[arg(short = 'r', long, value_enum, default_value = "any")]
        role: Role,
        /// Do not ask for confirmation at any point
        #[arg(long)]
        force: bool,
    },
    /// Disable auto failover
    Pause {
        cluster_name: Option<String>,
        /// Citus group
        #[arg(long)]
        group: Option<i64>,
        /// Wait until pause is applied on all nodes
        #[arg(long)]
        wait: bool,
    },
    /// Resume auto failover
    Resume {
        cluster_name: Option<String>,
        /// Citus group
        #[arg(long)]
        group: Option<i64>,
        /// Wait until pause is cleared on all nodes
        #[arg(long)]
        wait: bool,
    },
    /// Edit cluster configuration
    #[command(name = "edit-config")]
    EditConfig {
        cluster_name: Option<String>,
        /// Citus group
        #[arg(long)]
        group: Option<i64>,
        /// Do not show changes
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Set specific configuration value. Can be specified multiple times
        #[arg(short = 's', long = "set")]
        kvpairs: Vec<String>,
        /// Set specific PostgreSQL parameter value. Shorthand for -s postgresql.parameters.
        /// Can be specified multiple times
        #[arg(short = 'p', long = "pg")]
        pgkvpairs: Vec<String>,
        /// Apply configuration from file. Use - for stdin.
        #[arg(long = "apply")]
        apply_filename: Option<String>,
        /// Apply configuration from file, replacing existing configuration. Use - for stdin.
        #[arg(long = "replace")]
        replace_filename: Option<String>,
        /// Do not ask for confirmation at any point
        #[arg(long)]
        force: bool,
    },
    /// Show cluster configuration
    #[command(name = "show-config")]
    ShowConfig {
        cluster_name: Option<String>,
        /// Citus group
        #[arg(long)]
        group: Option<i64>,
    },
    /// Output version of patronictl command or a running Patroni instance
    Version {
        cluster_name: Option<String>,
        member_names: Vec<String>,
        /// Citus group
        #[arg(long)]
        group: Option<i64>,
    },
    /// Show the history of failovers/switchovers
    History {
        cluster_name: Option<String>,
        /// Citus group
        #[arg(long)]
        group: Option<i64>,
        /// Output format
        #[arg(short = 'f', long = "format", value_enum, default_value = "pretty")]
        fmt: OutFormat,
    },
    /// Demote cluster to a standby cluster
    #[command(name = "demote-cluster")]
    DemoteCluster {
        cluster_name: Option<String>,
        /// Do not ask for confirmation at any point
        #[arg(long)]
        force: bool,
        /// Address of the remote node
        #[arg(long)]
        host: Option<String>,
        /// Port of the remote node
        #[arg(long)]
        port: Option<u16>,
        /// Command to restore WAL records from the remote primary
        #[arg(long = "restore-command")]
        restore_command: Option<String>,
        /// Name of the slot on the remote node to use for replication
        #[arg(long = "primary-slot-name")]
        primary_slot_name: Option<String>,
    },
    /// Promote cluster, make it run standalone
    #[command(name = "promote-cluster")]
    PromoteCluster {
        cluster_name: Option<String>,
        /// Do not ask for confirmation at any point
        #[arg(long)]
        force: bool,
    },
}

/// Splits `flush`'s trailing arguments into member names and the target, as click does for
/// `MEMBER_NAMES... TARGET`.
pub fn split_flush_args(args: &[String]) -> Result<(Vec<String>, FlushTarget), String> {
    let Some((target, members)) = args.split_last() else {
        return Err("Missing argument 'TARGET'.".into());
    };
    let target = match target.as_str() {
        "restart" => FlushTarget::Restart,
        "switchover" => FlushTarget::Switchover,
        other => {
            return Err(format!(
                "Invalid value for '{{restart|switchover}}': '{other}' is not one of 'restart', 'switchover'."
            ))
        }
    };
    Ok((members.to_vec(), target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pgpilotctl").chain(args.iter().copied()))
    }

    #[test]
    fn group_options_precede_the_command() {
        let cli = parse(&[
            "-c",
            "/x.yml",
            "--dcs",
            "etcd3://h:1",
            "list",
            "-f",
            "json",
            "-e",
        ])
        .unwrap();
        assert_eq!(
            cli.config_file.as_deref(),
            Some(std::path::Path::new("/x.yml"))
        );
        assert_eq!(cli.dcs_url.as_deref(), Some("etcd3://h:1"));
        match cli.command {
            Command::List { fmt, extended, .. } => {
                assert_eq!(fmt, OutFormat::Json);
                assert!(extended);
            }
            other => panic!("{other:?}"),
        }
    }

    /// Regression: `-c`/`-d` of the group clashed with `query -c SQL -d DBNAME`.
    #[test]
    fn query_short_options_do_not_clash_with_group_options() {
        let cli = parse(&[
            "-c",
            "/x.yml",
            "-d",
            "etcd3://h:1",
            "query",
            "-c",
            "select 1",
            "-d",
            "postgres",
            "-U",
            "u",
        ])
        .unwrap();
        assert_eq!(
            cli.config_file.as_deref(),
            Some(std::path::Path::new("/x.yml"))
        );
        match cli.command {
            Command::Query {
                command,
                dbname,
                username,
                ..
            } => {
                assert_eq!(command.as_deref(), Some("select 1"));
                assert_eq!(dbname.as_deref(), Some("postgres"));
                assert_eq!(username.as_deref(), Some("u"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(&["list", "-c", "/x.yml"]).unwrap_err().kind(),
            clap::error::ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn edit_config_repeats_set_and_pg() {
        let cli = parse(&[
            "edit-config",
            "demo",
            "-s",
            "ttl=20",
            "-s",
            "loop_wait=5",
            "-p",
            "max_connections=200",
            "--force",
        ])
        .unwrap();
        match cli.command {
            Command::EditConfig {
                cluster_name,
                kvpairs,
                pgkvpairs,
                force,
                ..
            } => {
                assert_eq!(cluster_name.as_deref(), Some("demo"));
                assert_eq!(kvpairs, vec!["ttl=20", "loop_wait=5"]);
                assert_eq!(pgkvpairs, vec!["max_connections=200"]);
                assert!(force);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn argument_errors() {
        assert_eq!(
            parse(&["list", "-f", "xml"]).unwrap_err().kind(),
            ErrorKind::InvalidValue
        );
        assert_eq!(
            parse(&["restart"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["reload", "demo", "-r", "master"])
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidValue
        );
        assert_eq!(
            parse(&["switchover", "--master", "pg1"])
                .unwrap_err()
                .kind(),
            ErrorKind::UnknownArgument
        );
        assert_eq!(
            parse(&["scaffold"]).unwrap_err().kind(),
            ErrorKind::InvalidSubcommand
        );
        assert!(parse(&["switchover", "--primary", "pg1", "--candidate", "pg2"]).is_ok());
        assert!(parse(&["dsn", "-r", "standby-leader"]).is_ok());
    }

    #[test]
    fn flush_target_is_the_last_argument() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            split_flush_args(&args(&["pg1", "pg2", "restart"])).unwrap(),
            (args(&["pg1", "pg2"]), FlushTarget::Restart)
        );
        assert_eq!(
            split_flush_args(&args(&["switchover"])).unwrap(),
            (vec![], FlushTarget::Switchover)
        );
        assert!(split_flush_args(&args(&["pg1"]))
            .unwrap_err()
            .contains("'pg1' is not one of"));
    }
}
