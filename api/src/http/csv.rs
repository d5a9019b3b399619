//! CSV in and out, without a dependency: the reader the bulk upload needs
//! (byte-order mark, `;` or `,` separators, quoted fields with doubled
//! quotes and line breaks, CRLF, blank lines) and the writer the exports
//! need (quoting, and cells neutralised against formula injection).

/// One record of a CSV file and the line it starts on (from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRecord {
    /// The line of the file where the record starts.
    pub line: usize,
    /// Its fields, unquoted.
    pub fields: Vec<String>,
}

/// Why a file is not CSV, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvError {
    /// The line of the problem (from 1).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for CsvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Picks the separator from the first line: `;` when it has more of them
/// than commas outside quotes (spreadsheets in many locales save so), else `,`.
pub fn detect_separator(text: &str) -> char {
    let (mut semicolons, mut commas, mut quoted) = (0, 0, false);
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            '\n' | '\r' if !quoted => break,
            ';' if !quoted => semicolons += 1,
            ',' if !quoted => commas += 1,
            _ => {}
        }
    }
    if semicolons > commas {
        ';'
    } else {
        ','
    }
}

/// Reads a whole CSV text (a leading byte-order mark is skipped) into
/// records, skipping blank lines. Stops with an error naming the line at
/// the first malformed spot, or once more than `max_records` were read
/// (`Ok(None)`: the caller refuses the file as too large).
pub fn read(text: &str, max_records: usize) -> Result<Option<(char, Vec<CsvRecord>)>, CsvError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let sep = detect_separator(text);
    let mut records = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    loop {
        // One record.
        let start = line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut end_of_file = false;
        loop {
            // One field.
            let Some(&c) = chars.peek() else {
                end_of_file = true;
                fields.push(std::mem::take(&mut field));
                break;
            };
            if c == '"' {
                chars.next();
                let quote_line = line;
                loop {
                    match chars.next() {
                        None => {
                            return Err(CsvError { line: quote_line, message: "a quoted field is never closed".into() })
                        }
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some('\r') => {
                            if chars.peek() == Some(&'\n') {
                                chars.next();
                            }
                            line += 1;
                            field.push('\n');
                        }
                        Some('\n') => {
                            line += 1;
                            field.push('\n');
                        }
                        Some(other) => field.push(other),
                    }
                }
                match chars.peek() {
                    None | Some('\r') | Some('\n') => {}
                    Some(&c) if c == sep => {}
                    Some(other) => {
                        return Err(CsvError {
                            line,
                            message: format!("unexpected {other:?} after a closing quote (quote the whole field and double quotes inside it)"),
                        })
                    }
                }
            }
            // Unquoted part (or what follows a closing quote).
            loop {
                match chars.peek().copied() {
                    None => break,
                    Some(c) if c == sep => {
                        chars.next();
                        fields.push(std::mem::take(&mut field));
                        break;
                    }
                    Some('\r') | Some('\n') => break,
                    Some('"') => {
                        return Err(CsvError {
                            line,
                            message:
                                "a quote inside an unquoted field (quote the whole field and double quotes inside it)"
                                    .into(),
                        })
                    }
                    Some(c) => {
                        chars.next();
                        field.push(c);
                    }
                }
            }
            match chars.peek() {
                None => {
                    end_of_file = true;
                    fields.push(std::mem::take(&mut field));
                    break;
                }
                Some('\r') | Some('\n') => {
                    if chars.next() == Some('\r') && chars.peek() == Some(&'\n') {
                        chars.next();
                    }
                    line += 1;
                    fields.push(std::mem::take(&mut field));
                    break;
                }
                // A separator was consumed: the next field follows (a
                // separator at the very end gives one more empty field).
                _ => {}
            }
        }
        // Blank lines, and rows of empty cells (`,,`) that spreadsheets
        // leave at the end, are skipped.
        let blank = fields.iter().all(|f| f.trim().is_empty());
        if !blank {
            if records.len() == max_records {
                return Ok(None);
            }
            records.push(CsvRecord { line: start, fields });
        }
        if end_of_file {
            return Ok(Some((sep, records)));
        }
    }
}

/// Makes a cell safe to open in a spreadsheet: a value starting with `=`,
/// `+`, `-`, `@` (or a tab or carriage return, which some spreadsheets skip
/// before such a sign) is prefixed with `'`, so it is shown as text and
/// never run as a formula.
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => std::borrow::Cow::Owned(format!("'{cell}")),
        _ => std::borrow::Cow::Borrowed(cell),
    }
}

/// One CSV line (with CRLF, as RFC 4180 says) of neutralised cells, quoted
/// when they hold a comma, quote or line break, or start with a byte-order
/// mark (which [`read`] would take for the file's own at its start).
pub fn write_row<S: AsRef<str>>(cells: &[S]) -> String {
    let mut out = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let cell = neutralise(cell.as_ref());
        if cell.contains([',', '"', '\n', '\r']) || cell.starts_with('\u{feff}') {
            out.push('"');
            out.push_str(&cell.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&cell);
        }
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str) -> Vec<(usize, Vec<String>)> {
        read(text, 100).unwrap().unwrap().1.into_iter().map(|r| (r.line, r.fields)).collect()
    }

    fn row(line: usize, f: &[&str]) -> (usize, Vec<String>) {
        (line, f.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn reads_bom_crlf_quotes_semicolons_and_blank_lines() {
        assert_eq!(
            fields("\u{feff}email;name;roles\r\na@x.org;\"Doe; Jane\";\"editor;viewer\"\r\n\r\nb@x.org;\"Say \"\"hi\"\"\";\r\n\r\n\r\n"),
            vec![
                row(1, &["email", "name", "roles"]),
                row(2, &["a@x.org", "Doe; Jane", "editor;viewer"]),
                row(4, &["b@x.org", "Say \"hi\"", ""]),
            ]
        );
        assert_eq!(
            fields("email,name\na@x.org,\"two\nlines\"\nb@x.org,B"),
            vec![row(1, &["email", "name"]), row(2, &["a@x.org", "two\nlines"]), row(4, &["b@x.org", "B"])]
        );
        assert_eq!(fields("email,name\na@x.org,\n"), vec![row(1, &["email", "name"]), row(2, &["a@x.org", ""])]);
    }

    #[test]
    fn malformed_files_name_the_line() {
        assert_eq!(read("email,name\na@x.org,\"open\nb@x.org,B\n", 10).unwrap_err().line, 2);
        assert_eq!(read("email,name\na@x.org,B\nb@x.org,\"B\"x\n", 10).unwrap_err().line, 3);
        assert_eq!(read("email,name\na@x.org,B\"\n", 10).unwrap_err().line, 2);
    }

    #[test]
    fn stops_past_the_limit() {
        assert!(read("email\na@x.org\nb@x.org\n", 2).unwrap().is_none());
        assert!(read("email\na@x.org\n", 2).unwrap().is_some());
    }

    #[test]
    fn writes_neutralised_quoted_cells() {
        assert_eq!(
            write_row(&["=1+2", "a,b", "say \"x\"", "@home", "-5", "+1", "plain"]),
            "'=1+2,\"a,b\",\"say \"\"x\"\"\",'@home,'-5,'+1,plain\r\n"
        );
    }
}
