//! A small YAML emitter for CloudFormation templates built as typed Rust values.
//!
//! The template is serialised with serde to a JSON value first, so the YAML and any JSON form are
//! the same data; this module only chooses a readable block layout. Every scalar is written in a
//! form whose meaning no YAML 1.1 or 1.2 reader can change: plain only for identifier-like
//! strings that are not booleans, nulls or numbers; JSON double quotes (a subset of YAML's double
//! quoted style) for everything else on one line; literal blocks for multi-line text such as PEM
//! certificates.

use serde_json::Value;

/// The YAML text of `value`, ending with a newline.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => emit_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => emit_seq(&mut out, items, 0),
        other => {
            out.push_str(&inline(other, 0));
            out.push('\n');
        }
    }
    out
}

fn emit_map(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&scalar(key));
        out.push(':');
        emit_value(out, value, indent);
    }
}

fn emit_seq(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        match item {
            // `- key: value` with the other keys aligned under the first.
            Value::Object(map) if !map.is_empty() => {
                let mut nested = String::new();
                emit_map(&mut nested, map, indent + 2);
                out.push_str(&" ".repeat(indent));
                out.push_str("- ");
                out.push_str(&nested[indent + 2..]);
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push_str(&" ".repeat(indent));
                out.push_str("-\n");
                emit_seq(out, inner, indent + 2);
            }
            other => {
                out.push_str(&" ".repeat(indent));
                out.push_str("- ");
                out.push_str(&inline(other, indent + 2));
                out.push('\n');
            }
        }
    }
}

/// Writes what follows `key:` (a space and a scalar, or a nested block).
fn emit_value(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            emit_map(out, map, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            emit_seq(out, items, indent + 2);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other, indent + 2));
            out.push('\n');
        }
    }
}

/// A value on the current line; `indent` is where a literal block's lines go.
fn inline(value: &Value, indent: usize) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => match literal_block(s, indent) {
            Some(block) => block,
            None => scalar(s),
        },
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

/// A string as a plain scalar when that is unambiguous, JSON-quoted otherwise.
fn scalar(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_owned()
    } else {
        // serde_json escapes exactly what YAML's double-quoted style needs, with the same syntax.
        Value::String(s.to_owned()).to_string()
    }
}

fn is_plain_safe(s: &str) -> bool {
    const RESERVED: [&str; 11] = [
        "true", "false", "yes", "no", "on", "off", "null", "y", "n", "~", "<<",
    ];
    let Some(first) = s.chars().next() else {
        return false;
    };
    first.is_ascii_alphabetic()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:@=+".contains(c))
        && !s.ends_with(':')
        && !RESERVED.contains(&s.to_ascii_lowercase().as_str())
}

/// Multi-line text as a literal block (`|`), if it can be one without changing it.
fn literal_block(s: &str, indent: usize) -> Option<String> {
    if !s.contains('\n') {
        return None;
    }
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    let lines: Vec<&str> = body.split('\n').collect();
    let representable = lines.iter().all(|l| {
        !l.is_empty()
            && !l.starts_with([' ', '\t'])
            && !l.ends_with([' ', '\t'])
            && l.chars().all(|c| !c.is_control())
    });
    if !representable {
        return None;
    }
    let chomp = match trailing {
        0 => "-",
        1 => "",
        _ => return None,
    };
    let pad = " ".repeat(indent);
    let mut out = format!("|{chomp}");
    for line in lines {
        out.push('\n');
        out.push_str(&pad);
        out.push_str(line);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ambiguous_strings_are_quoted_and_identifiers_are_not() {
        assert_eq!(scalar("AWS::IoT::CACertificate"), "AWS::IoT::CACertificate");
        for s in [
            "yes", "No", "null", "123", "", "a: b", "#x", "x #y", "- a", "ends:",
        ] {
            assert!(scalar(s).starts_with('"'), "{s:?} -> {}", scalar(s));
        }
    }

    #[test]
    fn pem_becomes_a_literal_block_and_nesting_is_indented() {
        let v = json!({
            "Resources": {"Ca": {"Properties": {"Pem": "-----BEGIN X-----\nAAA\n-----END X-----\n"}}},
            "List": [{"a": 1, "b": [true, null]}, "s"],
        });
        let text = to_string(&v);
        assert!(
            text.contains("      Pem: |\n        -----BEGIN X-----\n        AAA\n"),
            "{text}"
        );
        assert!(
            text.contains("List:\n  - a: 1\n    b:\n      - true\n      - null\n  - s\n"),
            "{text}"
        );
    }

    #[test]
    fn any_value_reads_back_identically_with_a_yaml_parser() {
        let v = json!({
            "plain": "AWS::IoT::Policy",
            "reserved": ["yes", "NO", "on", "null", "~", "1e3", "0x1F", "-1", ".5", "2012-10-17"],
            "quotes": "say \"hi\" and 'bye' \\ done",
            "colon": "a: b # not a comment",
            "unicode": "\u{e9}t\u{e9} \u{1f321}",
            "control": "tab\there\u{1}",
            "pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            "no_final_newline": "line one\nline two",
            "blank_line": "a\n\nb\n",
            "indented": "  leading\nspace",
            "nested": [[1, 2.5], [], {}, {"k": [{"deep": true}]}, null],
            "empty": "",
        });
        let text = to_string(&v);
        let back: Value = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back, v, "{text}");
    }
}
