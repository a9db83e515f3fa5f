//! Configuration from flags, `BERTH_*` environment variables and an optional
//! TOML file (`--config PATH` or `BERTH_CONFIG`), in that order of
//! precedence, over the built-in defaults.
//!
//! The file's keys are the long flag names (`etcd-endpoints`, `tls-ca`, …).
//! Each value becomes the flag's default before clap parses the command
//! line, so clap's own precedence (command line, then environment, then
//! default) gives flag > env > file > built-in default, and the same value
//! parsers check the file's values. Unknown keys and values of the wrong
//! shape are refused with the file and key named.
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::error::ErrorKind;
use clap::{ArgAction, Command, Parser};

/// The flag and the environment variable that name the file.
pub const CONFIG_FLAG: &str = "config";
pub const CONFIG_ENV: &str = "BERTH_CONFIG";

/// Parses `T` from the process's command line, environment and config
/// file; prints the error and exits (status 2) as clap does on failure.
pub fn parse<T: Parser>() -> T {
    match try_parse_from::<T, _, _>(std::env::args_os()) {
        Ok(t) => t,
        Err(e) => e.exit(),
    }
}

/// Like [`parse`], from `args` (the first is the binary's name).
pub fn try_parse_from<T, I, A>(args: I) -> Result<T, clap::Error>
where
    T: Parser,
    I: IntoIterator<Item = A>,
    A: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut cmd = T::command();
    let path = config_path(&args).or_else(|| {
        std::env::var_os(CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(path) = path {
        cmd = apply_file(cmd, Path::new(&path))?;
    }
    let matches = cmd.try_get_matches_from_mut(args)?;
    T::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
}

/// The value of `--config PATH` / `--config=PATH` before any `--`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let flag = format!("--{CONFIG_FLAG}");
    let with_eq = format!("--{CONFIG_FLAG}=");
    let mut it = args.iter().skip(1);
    let mut found = None;
    while let Some(a) = it.next() {
        let Some(s) = a.to_str() else { continue };
        if s == "--" {
            break;
        }
        if s == flag {
            found = it.next().map(PathBuf::from);
        } else if let Some(v) = s.strip_prefix(&with_eq) {
            found = Some(PathBuf::from(v));
        }
    }
    found
}

/// The keys a file may set for `cmd`: its top-level long flags.
pub fn file_keys(cmd: &Command) -> Vec<String> {
    cmd.get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !matches!(*l, CONFIG_FLAG | "help" | "version"))
        .map(str::to_string)
        .collect()
}

/// Reads `path` and makes each of its values the default of its flag.
pub fn apply_file(mut cmd: Command, path: &Path) -> Result<Command, clap::Error> {
    let where_ = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| cmd.error(ErrorKind::Io, format!("cannot read config file {where_}: {e}")))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        cmd.error(
            ErrorKind::InvalidValue,
            format!("config file {where_}: {}", e.to_string().trim()),
        )
    })?;
    let keys = file_keys(&cmd);
    for (key, value) in table {
        if !keys.contains(&key) {
            let hint = if key.contains('_') && keys.contains(&key.replace('_', "-")) {
                format!(" (did you mean '{}'?)", key.replace('_', "-"))
            } else {
                String::new()
            };
            return Err(cmd.error(
                ErrorKind::UnknownArgument,
                format!(
                    "config file {where_}: unknown key '{key}'{hint}; known keys: {}",
                    keys.join(", ")
                ),
            ));
        }
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
            .expect("key listed")
            .clone();
        let many = matches!(arg.get_action(), ArgAction::Append) || arg.get_value_delimiter().is_some();
        let values = to_strings(&value, many).map_err(|why| {
            cmd.error(
                ErrorKind::InvalidValue,
                format!("config file {where_}: key '{key}': {why}"),
            )
        })?;
        check_values(&arg, &key, &values).map_err(|why| {
            cmd.error(
                ErrorKind::InvalidValue,
                format!("config file {where_}: key '{key}': {why}"),
            )
        })?;
        let id = arg.get_id().clone();
        cmd = cmd.mut_arg(id, |a| a.required(false).default_values(values));
    }
    Ok(cmd)
}

/// A TOML value as flag values: strings, integers, floats and booleans;
/// arrays of those for flags that take several values.
fn to_strings(value: &toml::Value, many: bool) -> Result<Vec<String>, String> {
    use toml::Value;
    let one = |v: &Value| -> Result<String, String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Integer(i) => Ok(i.to_string()),
            Value::Float(f) => Ok(f.to_string()),
            Value::Boolean(b) => Ok(b.to_string()),
            other => Err(format!(
                "expected a string, number or boolean, found a {}",
                other.type_str()
            )),
        }
    };
    match value {
        Value::Array(items) if many => items.iter().map(one).collect(),
        Value::Array(_) => Err("takes one value, found an array".to_string()),
        v => Ok(vec![one(v)?]),
    }
}

/// Runs the flag's own value parser on each value, so a bad value in the
/// file is reported against the file.
fn check_values(arg: &clap::Arg, key: &str, values: &[String]) -> Result<(), String> {
    let probe_arg = arg.clone().required(false).global(false);
    for v in values {
        let probe = Command::new("config")
            .no_binary_name(true)
            .disable_help_flag(true)
            .disable_version_flag(true)
            .arg(probe_arg.clone());
        let is_flag = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let argv = if is_flag {
            match v.as_str() {
                "true" | "false" => continue,
                _ => return Err(format!("expected true or false, found {v:?}")),
            }
        } else {
            vec![format!("--{key}={v}")]
        };
        if let Err(e) = probe.try_get_matches_from(argv) {
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or_default();
            return Err(first.trim_start_matches("error: ").to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    #[command(name = "t")]
    struct T {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value = "info")]
        log: String,
        #[arg(long, default_value_t = 10)]
        ttl: u32,
        #[arg(long, value_delimiter = ',', default_value = "a")]
        endpoints: Vec<String>,
        #[arg(long)]
        name: String,
        #[arg(long)]
        verbose: bool,
    }

    fn file(body: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, body).unwrap();
        (dir, p.display().to_string())
    }

    fn parse(args: &[&str]) -> Result<T, clap::Error> {
        try_parse_from::<T, _, _>(std::iter::once("t").chain(args.iter().copied()))
    }

    #[test]
    fn file_values_are_defaults_under_flags() {
        let (_d, p) =
            file("log = \"debug\"\nttl = 4\nendpoints = [\"x\", \"y\"]\nname = \"n1\"\nverbose = true\n");
        let t = parse(&["--config", &p]).unwrap();
        assert_eq!(
            (
                t.log.as_str(),
                t.ttl,
                t.endpoints.clone(),
                t.name.as_str(),
                t.verbose
            ),
            ("debug", 4, vec!["x".to_string(), "y".to_string()], "n1", true)
        );
        let t = parse(&[&format!("--config={p}"), "--ttl", "7", "--name", "cli"]).unwrap();
        assert_eq!((t.ttl, t.name.as_str(), t.log.as_str()), (7, "cli", "debug"));
        // Without a file the built-in defaults hold and --name stays required.
        let t = parse(&["--name", "n"]).unwrap();
        assert_eq!((t.ttl, t.log.as_str(), t.verbose), (10, "info", false));
        assert_eq!(parse(&[]).unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn bad_files_are_refused_clearly() {
        let (_d, p) = file("name = \"n\"\nlogg = \"x\"\n");
        let e = parse(&["--config", &p]).unwrap_err().to_string();
        assert!(e.contains(&format!("config file {p}: unknown key 'logg'")), "{e}");
        assert!(
            e.contains("known keys: log, ttl, endpoints, name, verbose"),
            "{e}"
        );

        let (_d, p) = file("ttl = \"soon\"\n");
        let e = parse(&["--config", &p]).unwrap_err().to_string();
        assert!(e.contains("key 'ttl': invalid value 'soon' for '--ttl"), "{e}");

        let (_d, p) = file("log = [\"a\"]\n");
        let e = parse(&["--config", &p]).unwrap_err().to_string();
        assert!(e.contains("key 'log': takes one value"), "{e}");

        let (_d, p) = file("verbose = \"yes\"\n");
        let e = parse(&["--config", &p]).unwrap_err().to_string();
        assert!(e.contains("expected true or false"), "{e}");

        let (_d, p) = file("name = \n");
        let e = parse(&["--config", &p]).unwrap_err().to_string();
        assert!(e.contains(&format!("config file {p}:")), "{e}");

        let e = parse(&["--config", "/nonexistent/berth.toml"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot read config file /nonexistent/berth.toml"),
            "{e}"
        );
    }

    #[test]
    fn config_path_stops_at_double_dash() {
        let args: Vec<OsString> = ["t", "x", "--", "--config", "f"].iter().map(Into::into).collect();
        assert_eq!(config_path(&args), None);
        let args: Vec<OsString> = ["t", "--config", "f"].iter().map(Into::into).collect();
        assert_eq!(config_path(&args), Some(PathBuf::from("f")));
    }
}
