//! Property-based fuzzing of the API's own parsers: the CSV reader, the bulk
//! importer built on it, and the list cursors. Each property runs a modest
//! number of cases in CI; `PROPTEST_CASES=100000 cargo nextest run -p
//! admit-api -E 'test(/::fuzz::/)'` is the long run (README "Fuzzing").

use std::collections::BTreeSet;

use admit_domain::values::{EmailAddress, LinkLifetime, PersonName, RoleName};
use axum::http::StatusCode;
use chrono::{DateTime, Datelike, Utc};
use proptest::prelude::*;
use uuid::Uuid;

use super::audit::{decode_position_cursor, encode_position_cursor};
use super::bulk::csv_rows;
use super::csv;
use super::invitations::{decode_cursor, encode_cursor};
use crate::Error;

/// `ci_cases` cases, unless `PROPTEST_CASES` asks for another number.
fn config(ci_cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = ci_cases;
    }
    config
}

/// The most lines a text can have, however its line breaks are spelled.
fn most_lines(text: &str) -> usize {
    text.matches(['\n', '\r']).count() + 1
}

/// The line an error detail names (`line N: ...`).
fn named_line(detail: &str) -> Option<usize> {
    detail.strip_prefix("line ")?.split(':').next()?.parse().ok()
}

// ---------------------------------------------------------------------------
// The CSV reader
// ---------------------------------------------------------------------------

/// A field quoted as RFC 4180 says (always quoted).
fn quoted(field: &str) -> String {
    format!("\"{}\"", field.replace('"', "\"\""))
}

/// A field quoted only when it must be: it holds a quote, a line break or
/// either separator (an unquoted other one could sway the detection).
fn minimally_quoted(field: &str) -> String {
    if field.contains([',', ';', '"', '\n', '\r']) || field.starts_with('\u{feff}') {
        quoted(field)
    } else {
        field.to_string()
    }
}

/// A CSV text of `records` (each field quoted when `always` or needed).
fn csv_text(records: &[Vec<String>], sep: char, newline: &str, bom: bool, always: bool) -> String {
    let mut text = if bom { "\u{feff}".to_string() } else { String::new() };
    for record in records {
        let cells: Vec<String> = record.iter().map(|f| if always { quoted(f) } else { minimally_quoted(f) }).collect();
        text.push_str(&cells.join(&sep.to_string()));
        text.push_str(newline);
    }
    text
}

/// Records of one width whose first field is not blank (blank records are
/// skipped by design) and whose fields hold no carriage return (read as a
/// line break).
fn records() -> impl Strategy<Value = Vec<Vec<String>>> {
    (1..5usize).prop_flat_map(|width| {
        let field = "[^\r]{0,12}";
        let first = "[^\r\\s]{1,6}[^\r]{0,6}";
        prop::collection::vec(
            (first, prop::collection::vec(field, width - 1)).prop_map(|(f, mut rest)| {
                rest.insert(0, f);
                rest
            }),
            1..8,
        )
    })
}

fn separator() -> impl Strategy<Value = char> {
    prop::sample::select(vec![',', ';'])
}

fn newline() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["\n", "\r\n"])
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn csv_read_never_panics_and_errors_name_a_line(text in any::<String>(), max in 0..20usize) {
        match csv::read(&text, max) {
            Err(e) => prop_assert!(e.line >= 1 && e.line <= most_lines(&text), "{e} in {text:?}"),
            Ok(Some((_, records))) => {
                prop_assert!(records.len() <= max);
                for pair in records.windows(2) {
                    prop_assert!(pair[0].line < pair[1].line);
                }
                for r in &records {
                    prop_assert!(r.line >= 1 && r.line <= most_lines(&text));
                    prop_assert!(r.fields.iter().any(|f| !f.trim().is_empty()));
                }
            }
            Ok(None) => {}
        }
    }

    #[test]
    fn csv_read_round_trips_quoted_records(
        records in records(),
        sep in separator(),
        newline in newline(),
        bom in any::<bool>(),
        always in any::<bool>(),
    ) {
        // With one column the separator cannot be told from the header.
        let sep = if records[0].len() == 1 { ',' } else { sep };
        let text = csv_text(&records, sep, newline, bom, always);
        let (detected, read) = csv::read(&text, 100).unwrap().unwrap();
        prop_assert_eq!(detected, sep);
        let fields: Vec<Vec<String>> = read.iter().map(|r| r.fields.clone()).collect();
        prop_assert_eq!(&fields, &records);
        // Each record starts on the line after the previous one's last.
        let mut line = 1;
        for (r, original) in read.iter().zip(&records) {
            prop_assert_eq!(r.line, line);
            line += 1 + original.iter().map(|f| f.matches('\n').count()).sum::<usize>();
        }
    }

    #[test]
    fn csv_write_row_round_trips_through_read(
        rows in (2..6usize).prop_flat_map(|width| {
            prop::collection::vec(prop::collection::vec("[^\r=+@\t-][^\r]{0,10}", width), 1..5)
        }),
    ) {
        // As the exports write: a header of column names, then the rows.
        let header: Vec<String> = (0..rows[0].len()).map(|i| format!("column_{i}")).collect();
        let text: String = std::iter::once(&header).chain(&rows).map(|r| csv::write_row(r)).collect();
        let (_, read) = csv::read(&text, 10).unwrap().unwrap();
        let fields: Vec<Vec<String>> = read.into_iter().skip(1).map(|r| r.fields).collect();
        let written: Vec<Vec<String>> =
            rows.iter().filter(|r| r.iter().any(|f| !f.trim().is_empty())).cloned().collect();
        prop_assert_eq!(fields, written);
    }
}

// ---------------------------------------------------------------------------
// The bulk importer (CSV upload to invitation requests)
// ---------------------------------------------------------------------------

/// What the importer may answer for a whole file: rows, or the file refused
/// with `malformed_csv` naming a line of it.
fn refused_with_a_line(body: &[u8]) -> Result<(), TestCaseError> {
    match csv_rows(body) {
        Ok(rows) => {
            for row in rows {
                let line = row.line.unwrap_or(0);
                prop_assert!(line >= 2, "data rows come after the header");
                prop_assert!(line <= most_lines(&String::from_utf8_lossy(body)));
                if let Err(e) = row.request {
                    prop_assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY, "{:?}", e);
                }
            }
        }
        Err(Error::BadRequest { code: "malformed_csv", detail }) => {
            let line = named_line(&detail);
            prop_assert!(line.is_some_and(|l| l >= 1 && l <= body.len() + 1), "{detail}");
        }
        Err(other) => prop_assert!(false, "unexpected {other:?}"),
    }
    Ok(())
}

/// One row of a valid upload, as typed in a spreadsheet.
#[derive(Debug, Clone)]
struct Row {
    email: String,
    name: String,
    roles: Vec<&'static str>,
    expires_in: &'static str,
}

fn row() -> impl Strategy<Value = Row> {
    (
        "[A-Za-z0-9]{1,8}([._+-][a-z0-9]{1,4})?@[A-Za-z]{1,8}\\.(com|org|DE|co\\.uk)",
        "|[A-Za-zÄÖÜäöüßÉé][A-Za-zÄÖÜäöüßÉé ,;'\"-]{0,20}[a-z]",
        prop::sample::subsequence(vec!["admin", "editor", "viewer", "support"], 0..=3),
        prop::sample::select(vec!["", "48", "48h", "2D", "90m", "3600s", " 12h "]),
    )
        .prop_map(|(email, name, roles, expires_in)| Row { email, name, roles, expires_in })
}

/// The columns of an upload: email and any of the others, in any order and case.
fn columns() -> impl Strategy<Value = Vec<String>> {
    (prop::sample::subsequence(vec!["name", "roles", "expires_in"], 0..=3), any::<bool>()).prop_flat_map(
        |(others, upper)| {
            let columns: Vec<String> = std::iter::once("email")
                .chain(others)
                .map(|c| if upper { c.to_uppercase() } else { c.to_string() })
                .collect();
            Just(columns).prop_shuffle()
        },
    )
}

fn cell(row: &Row, column: &str) -> String {
    match column.to_lowercase().as_str() {
        "email" => row.email.clone(),
        "name" => row.name.clone(),
        "roles" => row.roles.join(";"),
        _ => row.expires_in.to_string(),
    }
}

/// A valid upload of `rows` with `columns`.
fn upload(rows: &[Row], columns: &[String], sep: char, newline: &str, bom: bool, always: bool) -> String {
    let mut records = vec![columns.to_vec()];
    records.extend(rows.iter().map(|r| columns.iter().map(|c| cell(r, c)).collect()));
    csv_text(&records, sep, newline, bom, always)
}

/// The lifetime an `expires_in` cell asks for.
fn lifetime(cell: &str) -> Option<LinkLifetime> {
    let seconds = match cell.trim().to_lowercase().as_str() {
        "" => return None,
        "48" | "48h" | "2d" => 48 * 3600,
        "90m" => 5400,
        "3600s" => 3600,
        "12h" => 12 * 3600,
        other => panic!("no lifetime {other}"),
    };
    Some(LinkLifetime::from_seconds(seconds).unwrap())
}

/// A change that may break a valid upload.
#[derive(Debug, Clone)]
enum Damage {
    Insert(prop::sample::Index, char),
    Delete(prop::sample::Index),
    Truncate(prop::sample::Index),
}

fn damage() -> impl Strategy<Value = Damage> {
    let c = prop::sample::select(vec!['"', ',', ';', '\n', '\r', '\u{feff}', 'x', ' ', '\0']);
    prop_oneof![
        (any::<prop::sample::Index>(), c).prop_map(|(i, c)| Damage::Insert(i, c)),
        any::<prop::sample::Index>().prop_map(Damage::Delete),
        any::<prop::sample::Index>().prop_map(Damage::Truncate),
    ]
}

fn apply(text: &str, damage: &Damage) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let at = |i: &prop::sample::Index, extra: usize| i.index(chars.len() + extra);
    match damage {
        Damage::Insert(i, c) => chars.insert(at(i, 1), *c),
        Damage::Delete(i) if !chars.is_empty() => {
            chars.remove(at(i, 0));
        }
        Damage::Truncate(i) => chars.truncate(at(i, 1)),
        Damage::Delete(_) => {}
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn importer_never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..400)) {
        refused_with_a_line(&body)?;
    }

    #[test]
    fn importer_never_panics_on_arbitrary_text(body in any::<String>()) {
        refused_with_a_line(body.as_bytes())?;
    }

    #[test]
    fn importer_reads_valid_rows_back(
        rows in prop::collection::vec(row(), 1..8),
        columns in columns(),
        sep in separator(),
        newline in newline(),
        bom in any::<bool>(),
        always in any::<bool>(),
    ) {
        let sep = if columns.len() == 1 { ',' } else { sep };
        let text = upload(&rows, &columns, sep, newline, bom, always);
        let parsed = csv_rows(text.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e:?}\n{text}")))?;
        prop_assert_eq!(parsed.len(), rows.len());
        let has = |c: &str| columns.iter().any(|k| k.eq_ignore_ascii_case(c));
        for (i, (parsed, row)) in parsed.into_iter().zip(&rows).enumerate() {
            prop_assert_eq!(parsed.line, Some(i + 2));
            prop_assert_eq!(parsed.email.as_deref(), Some(row.email.as_str()));
            let request = parsed.request.map_err(|e| TestCaseError::fail(format!("{e:?}\n{text}")))?;
            prop_assert_eq!(&request.email, &EmailAddress::parse(&row.email).unwrap());
            let name = (has("name") && !row.name.is_empty()).then(|| PersonName::parse(&row.name).unwrap());
            prop_assert_eq!(&request.name, &name);
            let roles: BTreeSet<RoleName> =
                if has("roles") { row.roles.iter().map(|r| RoleName::parse(r).unwrap()).collect() } else { BTreeSet::new() };
            prop_assert_eq!(&request.access.roles, &roles);
            let expires_in = if has("expires_in") { lifetime(row.expires_in) } else { None };
            prop_assert_eq!(request.expires_in, expires_in);
        }
    }

    #[test]
    fn importer_refuses_damaged_uploads_with_a_line(
        rows in prop::collection::vec(row(), 1..6),
        columns in columns(),
        sep in separator(),
        newline in newline(),
        always in any::<bool>(),
        damages in prop::collection::vec(damage(), 1..4),
    ) {
        let mut text = upload(&rows, &columns, sep, newline, false, always);
        for d in &damages {
            text = apply(&text, d);
        }
        refused_with_a_line(text.as_bytes())?;
    }
}

// ---------------------------------------------------------------------------
// List cursors
// ---------------------------------------------------------------------------

/// A cursor refused the stable way: 400 `invalid_cursor`.
fn refused_as_invalid_cursor(e: &Error) -> Result<(), TestCaseError> {
    prop_assert_eq!(e.code(), "invalid_cursor");
    prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    Ok(())
}

/// Something shaped like a list cursor: base64url of `micros|id`, with any
/// number and any text for the id.
fn near_valid_cursor() -> impl Strategy<Value = String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let id = prop_oneof![any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()), ".{0,40}"];
    (any::<i64>(), prop::sample::select(vec!["|", "||", ",", ""]), id)
        .prop_map(|(micros, bar, id)| URL_SAFE_NO_PAD.encode(format!("{micros}{bar}{id}")))
}

/// The times a list cursor may carry: what both databases store.
fn storable(at: DateTime<Utc>) -> bool {
    (1..=9999).contains(&at.year())
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn list_cursor_decoding_never_panics(cursor in any::<String>()) {
        match decode_cursor(&cursor) {
            Ok((at, _)) => prop_assert!(storable(at)),
            Err(e) => refused_as_invalid_cursor(&e)?,
        }
    }

    #[test]
    fn near_valid_list_cursors_decode_to_storable_times_or_400(cursor in near_valid_cursor()) {
        match decode_cursor(&cursor) {
            Ok((at, _)) => prop_assert!(storable(at), "{cursor} decodes to {at}"),
            Err(e) => refused_as_invalid_cursor(&e)?,
        }
    }

    #[test]
    fn issued_list_cursors_round_trip(micros in -62_135_596_800_000_000i64..253_402_300_799_000_000, id in any::<u128>()) {
        let at = DateTime::from_timestamp_micros(micros).unwrap();
        let id = Uuid::from_u128(id);
        prop_assert_eq!(decode_cursor(&encode_cursor(at, id)).unwrap(), (at, id));
    }

    #[test]
    fn event_cursor_decoding_never_panics(cursor in prop_oneof![any::<String>(), "p-?[0-9]{0,21}"]) {
        match decode_position_cursor(&cursor) {
            Ok(position) => prop_assert!(position >= 0),
            Err(e) => refused_as_invalid_cursor(&e)?,
        }
    }

    #[test]
    fn issued_event_cursors_round_trip(position in 0..i64::MAX) {
        prop_assert_eq!(decode_position_cursor(&encode_position_cursor(position)).unwrap(), position);
    }
}
