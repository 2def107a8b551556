//! Log lines as logfmt: `ts=… level=… target=… msg="…" key=value …`, every value that
//! holds a space, a quote, `=` or nothing quoted (with `\"` and `\\` escaped), so that
//! `leaderless_for=3s 431ms` or a reason with spaces never splits into bogus keys.
//! This is the `--log-format text` default; `json` is the other.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The logfmt event format (see the module docs).
pub struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let ts = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        let level = meta.level().as_str();
        write!(writer, "ts={ts} level={level} target={}", meta.target())?;
        let mut line = Line::default();
        event.record(&mut line);
        writer.write_str(&line.0)?;
        writeln!(writer)
    }
}

/// The fields of one event, already in logfmt (each with a leading space).
#[derive(Default)]
struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let key = match field.name() {
            "message" => "msg",
            name => name,
        };
        // `%x` fields arrive as Display wrapped in Debug; `?x` as Debug.
        let value = format!("{value:?}");
        let _ = write!(self.0, " {key}={}", quoted(&value));
    }

    /// A string field (`kind = e.kind()`) is always quoted, as tracing's default
    /// format writes it; Display and Debug fields only when they must be.
    fn record_str(&mut self, field: &Field, value: &str) {
        let key = if field.name() == "message" {
            "msg"
        } else {
            field.name()
        };
        let _ = write!(self.0, " {key}={}", escaped(value));
    }
}

/// `value` as a logfmt value: bare when it can be, else in quotes with `"` and `\`
/// escaped (and newlines as `\n`, so one event stays one line).
pub fn quoted(value: &str) -> String {
    let bare = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=' || c == '\\' || c.is_control());
    if bare {
        return value.to_string();
    }
    escaped(value)
}

/// `value` in quotes, with `"` and `\` escaped and control characters spelled out.
fn escaped(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bare_or_quoted_and_escaped() {
        let cases = [
            ("dc1", "dc1"),
            ("http://127.0.0.1:8200/", "http://127.0.0.1:8200/"),
            ("3s 431ms", "\"3s 431ms\""),
            ("", "\"\""),
            ("a=b", "\"a=b\""),
            ("say \"hi\"", "\"say \\\"hi\\\"\""),
            ("two\nlines", "\"two\\nlines\""),
        ];
        for (value, want) in cases {
            assert_eq!(quoted(value), want, "{value:?}");
        }
    }
}
