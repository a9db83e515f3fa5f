//! `--format TEMPLATE` for `ls` and `inspect`: the part of Go's templates
//! Docker users write. `{{.Field}}` (a path: `{{.Networks.bridge.IPAddress}}`),
//! `{{json .}}` and `{{json .Field}}`, literal text between them with `\t`
//! and `\n` for a tab and a newline, and the `table` prefix, which prints a
//! header row (the fields' names in capitals) and aligns the tab-separated
//! columns. Fields are the keys of the `--output json` document of each
//! item; a key matches case-insensitively (`{{.ID}}` finds `Id`). Anything
//! else in `{{ }}` (functions, pipes, `range`) is refused, as is a field the
//! document does not have.
use anyhow::{Result, bail};
use serde_json::Value;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// `{{.A.B}}`; an empty path is `{{.}}`.
    Field(Vec<String>),
    /// `{{json .A}}`.
    Json(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    table: bool,
    pieces: Vec<Piece>,
}

fn unescape(s: &str) -> String {
    s.replace("\\t", "\t").replace("\\n", "\n")
}

fn path(expr: &str, whole: &str) -> Result<Vec<String>> {
    if expr == "." {
        return Ok(Vec::new());
    }
    let Some(rest) = expr.strip_prefix('.') else {
        bail!("invalid --format {whole:?}: {{{{{expr}}}}} is not a field (write {{{{.Name}}}})");
    };
    let parts: Vec<String> = rest.split('.').map(str::to_string).collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || !p.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-'))
    {
        bail!("invalid --format {whole:?}: {{{{{expr}}}}} is not a field (write {{{{.Name}}}})");
    }
    Ok(parts)
}

impl Template {
    pub fn parse(s: &str) -> Result<Self> {
        let (table, body) = match s.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                (true, rest.trim_start())
            }
            _ => (false, s),
        };
        let mut pieces = Vec::new();
        let mut rest = body;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(unescape(&rest[..open])));
            }
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                bail!("invalid --format {s:?}: a {{{{ without its }}}}");
            };
            let expr = after[..close].trim();
            let words: Vec<&str> = expr.split_whitespace().collect();
            pieces.push(match words[..] {
                [one] => Piece::Field(path(one, s)?),
                ["json", arg] => Piece::Json(path(arg, s)?),
                _ => bail!(
                    "invalid --format {s:?}: {{{{{expr}}}}}: only {{{{.Field}}}} and {{{{json .Field}}}} are supported"
                ),
            });
            rest = &after[close + 2..];
        }
        if rest.contains("}}") {
            bail!("invalid --format {s:?}: a }}}} without its {{{{");
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(unescape(rest)));
        }
        Ok(Self { table, pieces })
    }

    /// Checks that every field's first key exists in one of `docs` (a
    /// sample item of the listing, built from an empty message, and the
    /// items), so a typo is an error even with no items, while a key some
    /// items leave out (`ContainerID`) prints `<no value>`.
    pub fn check(&self, docs: &[&Value], what: &str) -> Result<()> {
        for p in &self.pieces {
            if let Piece::Field(path) | Piece::Json(path) = p
                && let Some(first) = path.first()
                && docs
                    .iter()
                    .all(|d| lookup(d, std::slice::from_ref(first)).is_none())
            {
                let mut keys: Vec<&str> = docs
                    .iter()
                    .filter_map(|d| d.as_object())
                    .flat_map(|o| o.keys().map(String::as_str))
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                bail!(
                    "invalid --format: {what} has no field {first:?} (fields: {})",
                    keys.join(", ")
                );
            }
        }
        Ok(())
    }

    /// One item, as one line (or several, if the template has `\n`);
    /// a field the item lacks is `<no value>` (after [`Template::check`]).
    pub fn render(&self, item: &Value) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(path) => match lookup(item, path) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(Value::Null) | None => out.push_str("<no value>"),
                    Some(v) => out.push_str(&v.to_string()),
                },
                Piece::Json(path) => match lookup(item, path) {
                    Some(v) => out.push_str(&v.to_string()),
                    None => out.push_str("null"),
                },
            }
        }
        out
    }

    /// Every item: with `table`, a header and aligned columns.
    pub fn render_all(&self, items: &[Value]) -> String {
        let lines: Vec<String> = items.iter().map(|i| self.render(i)).collect();
        if !self.table {
            return lines.join("\n");
        }
        let header = self.header();
        let headers: Vec<&str> = header.split('\t').collect();
        let rows: Vec<Vec<String>> = lines
            .iter()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect();
        crate::output::render_table(&headers, &rows)
    }

    /// The header row: the template with each field as its name in capitals.
    fn header(&self) -> String {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.clone(),
                Piece::Field(path) | Piece::Json(path) => match path.last() {
                    None => String::new(),
                    Some(k) => k.to_uppercase(),
                },
            })
            .collect()
    }
}

/// The value at `path`: keys matched exactly, else case-insensitively.
fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for key in path {
        let obj = cur.as_object()?;
        cur = match obj.get(key) {
            Some(x) => x,
            None => obj
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, x)| x)?,
        };
    }
    Some(cur)
}

/// Prints `items` through `template`, each as its `--output json` document;
/// `sample` is an item built from an empty message (its keys are the fields).
pub fn print<T: serde::Serialize>(template: &Template, sample: &T, items: &[T], what: &str) -> Result<()> {
    let sample = serde_json::to_value(sample)?;
    let docs = items
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()?;
    let all: Vec<&Value> = std::iter::once(&sample).chain(&docs).collect();
    template.check(&all, what)?;
    let text = template.render_all(&docs);
    if !text.is_empty() || template.table {
        crate::output::print(&text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({"Name": "web", "Id": "3c1f0e2a9b7d", "Ports": [], "Networks": {"bridge": {"IPAddress": "172.17.0.2"}}, "Mtu": 1500})
    }

    #[test]
    fn fields_text_and_escapes() {
        let t = Template::parse("{{.Name}}\\t{{.ID}} mtu={{ .Mtu }}").unwrap();
        assert_eq!(t.render(&doc()), "web\t3c1f0e2a9b7d mtu=1500");
        let t = Template::parse("{{.Networks.bridge.IPAddress}}").unwrap();
        assert_eq!(t.render(&doc()), "172.17.0.2");
        let t = Template::parse("{{.Networks.other.IPAddress}}").unwrap();
        assert_eq!(t.render(&doc()), "<no value>");
        assert_eq!(Template::parse("plain").unwrap().render(&doc()), "plain");
    }

    #[test]
    fn json_of_the_whole_and_of_a_field() {
        let t = Template::parse("{{json .}}").unwrap();
        let v: Value = serde_json::from_str(&t.render(&doc())).unwrap();
        assert_eq!(v, doc());
        let t = Template::parse("{{json .Networks}}").unwrap();
        assert_eq!(t.render(&doc()), r#"{"bridge":{"IPAddress":"172.17.0.2"}}"#);
        let t = Template::parse("{{json .Ports}}").unwrap();
        assert_eq!(t.render(&doc()), "[]");
    }

    #[test]
    fn table_prefix_makes_a_header_and_aligns() {
        let t = Template::parse("table {{.Name}}\\t{{.Id}}").unwrap();
        let other = json!({"Name": "database", "Id": "ab"});
        assert_eq!(
            t.render_all(&[doc(), other]),
            "NAME       ID\nweb        3c1f0e2a9b7d\ndatabase   ab"
        );
        // `tablefoo` is not the prefix.
        assert!(!Template::parse("tablefoo").unwrap().table);
    }

    #[test]
    fn bad_templates_and_unknown_fields_are_errors() {
        let err = |s: &str| Template::parse(s).unwrap_err().to_string();
        assert!(err("{{.Name").contains("without its }}"));
        assert!(err("x}}").contains("without its {{"));
        assert!(err("{{Name}}").contains("is not a field"));
        assert!(err("{{.Name | upper}}").contains("only {{.Field}} and {{json .Field}}"));
        assert!(err("{{range .Ports}}").contains("only"));
        assert!(err("{{.A..B}}").contains("is not a field"));
        let t = Template::parse("{{.Nmae}}").unwrap();
        let e = t.check(&[&doc()], "sandbox ls").unwrap_err().to_string();
        assert!(
            e.starts_with("invalid --format: sandbox ls has no field \"Nmae\" (fields: Id, Mtu, "),
            "{e}"
        );
        assert!(
            Template::parse("{{.name}}")
                .unwrap()
                .check(&[&doc()], "x")
                .is_ok()
        );
        // A key only some items have: known, and <no value> where missing.
        let t = Template::parse("{{.ContainerID}}").unwrap();
        let cni = json!({"ContainerID": "c0ffee"});
        assert!(t.check(&[&doc()], "x").is_err());
        assert!(t.check(&[&doc(), &cni], "x").is_ok());
        assert_eq!(t.render(&doc()), "<no value>");
        assert_eq!(t.render(&cni), "c0ffee");
    }
}
