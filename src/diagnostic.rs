//! Diagnostics: what every stage returns when the user's input is wrong.
//!
//! A `Diagnostic` has a stable code (`E0301`), a message, a primary span, optional extra
//! labels and an optional help line. `render` turns a list of them into text with
//! `file.nn:line:col`, the source line and an underline (miette's graphical handler).
//! Only the CLI decides where that text goes.

use std::fmt;

/// Which source text a span points into (see `SourceMap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FileId(pub u32);

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Span {
    /// The file (`SourceMap::name`, `SourceMap::text`).
    pub file: FileId,
    /// Byte offset of the first byte.
    pub start: u32,
    /// Byte offset one past the last byte.
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Span {
        Span { file, start: start as u32, end: end as u32 }
    }
    /// The smallest span covering both (they must be in the same file).
    pub fn to(self, other: Span) -> Span {
        if self.file != other.file {
            return self;
        }
        Span { file: self.file, start: self.start.min(other.start), end: self.end.max(other.end) }
    }
}

/// The texts that spans point into: the user's files, `use`d files and the prelude.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    files: Vec<(String, String)>,
}

impl SourceMap {
    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        self.files.push((name.into(), text.into()));
        FileId(self.files.len() as u32 - 1)
    }
    pub fn name(&self, id: FileId) -> &str {
        self.files.get(id.0 as usize).map(|f| f.0.as_str()).unwrap_or("<unknown>")
    }
    pub fn text(&self, id: FileId) -> &str {
        self.files.get(id.0 as usize).map(|f| f.1.as_str()).unwrap_or("")
    }
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, id: FileId, offset: u32) -> (usize, usize) {
        let text = self.text(id);
        let offset = (offset as usize).min(text.len());
        let before = text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        (line, col)
    }
}

/// A secondary label: another place that explains the error.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    /// What it underlines.
    pub span: Span,
    /// What it says there.
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// Stable error code, documented in docs/errors.md.
    pub code: &'static str,
    /// The one-line message.
    pub message: String,
    /// Where the error is (`SourceMap::line_col` gives line and column).
    pub span: Span,
    /// What to write under the primary underline (empty: the message is enough).
    pub label: String,
    /// Related places (another definition, the other operand).
    pub labels: Vec<Label>,
    /// How to fix it, when there is something to say.
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(code: &'static str, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic { code, message: message.into(), span, label: String::new(), labels: Vec::new(), help: None }
    }
    pub fn with_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = label.into();
        self
    }
    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }
    pub fn with_note(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label { span, message: message.into() });
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error[{}]: {}", self.code, self.message)
    }
}

/// The diagnostics of a failed stage.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

/// How `render` draws.
#[derive(Clone, Copy, Debug, Default)]
pub struct RenderOptions {
    /// ANSI colours.
    pub color: bool,
}

struct Report<'a> {
    diag: &'a Diagnostic,
    source: miette::NamedSource<String>,
    /// Labels in the same file as the primary span (miette shows one source per report).
    labels: Vec<miette::LabeledSpan>,
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.diag)
    }
}
impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error[{}]: {}", self.diag.code, self.diag.message)
    }
}
impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        // No source (a file that could not be read): no empty snippet box.
        (!self.source.inner().is_empty()).then_some(&self.source as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        if self.source.inner().is_empty() {
            return None;
        }
        Some(Box::new(self.labels.iter().cloned()))
    }
}

/// Renders diagnostics as text: `error[E...]: message (file.nn:3:5)`, then the source
/// line(s) with the span underlined, labels, and help.
pub fn render(diags: &[Diagnostic], sources: &SourceMap, opts: RenderOptions) -> String {
    let theme = if opts.color { miette::GraphicalTheme::unicode() } else { miette::GraphicalTheme::unicode_nocolor() };
    let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(100).with_links(false);
    let mut out = String::new();
    for d in diags.iter().take(crate::limits::MAX_RENDERED_DIAGNOSTICS) {
        let file = d.span.file;
        let text = sources.text(file).to_string();
        let clamp = |s: Span| {
            let start = (s.start as usize).min(text.len());
            let end = (s.end as usize).clamp(start, text.len());
            (start, end - start)
        };
        let mut labels = vec![miette::LabeledSpan::new_primary_with_span(
            (!d.label.is_empty()).then(|| d.label.clone()),
            clamp(d.span),
        )];
        let mut notes = Vec::new();
        for l in &d.labels {
            if l.span.file == file {
                labels.push(miette::LabeledSpan::new_with_span(Some(l.message.clone()), clamp(l.span)));
            } else {
                let (nl, nc) = sources.line_col(l.span.file, l.span.start);
                notes.push(format!("note: {} ({}:{}:{})", l.message, sources.name(l.span.file), nl, nc));
            }
        }
        let report = Report { diag: d, source: miette::NamedSource::new(sources.name(file), text.clone()), labels };
        let mut s = String::new();
        if handler.render_report(&mut s, &report).is_err() {
            s = format!("error[{}]: {}\n", d.code, d.message);
        }
        out.push_str(&s);
        if text.is_empty() {
            // No snippet to show: name the file on its own line.
            out.push_str(&format!("  --> {}\n", sources.name(file)));
        }
        for n in notes {
            out.push_str("  ");
            out.push_str(&n);
            out.push('\n');
        }
        out.push('\n');
    }
    if diags.len() > crate::limits::MAX_RENDERED_DIAGNOSTICS {
        let more = diags.len() - crate::limits::MAX_RENDERED_DIAGNOSTICS;
        out.push_str(&format!(
            "... and {more} more error{} (the first {} are shown)\n",
            if more == 1 { "" } else { "s" },
            crate::limits::MAX_RENDERED_DIAGNOSTICS
        ));
    }
    out
}

/// The closest candidate by edit distance, for "did you mean".
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let limit = (name.len().max(c.len()) / 3).max(1);
        // The distance is at least the difference in length: skip the table.
        if name.len().abs_diff(c.len()) > limit {
            continue;
        }
        let d = edit_distance(name, c);
        if d <= limit && best.is_none_or(|(bd, bc)| d < bd || (d == bd && c < bc)) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().take(64).collect();
    // Optimal string alignment distance: a swap of two neighbours counts as one edit.
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}
