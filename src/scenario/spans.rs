//! Where a field is written: the parsed document keeps the span of every
//! key and value, so an error about `service.partitions` or
//! `workload[1].rate` names the line of that field, whichever part of
//! validation finds it wrong.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// The spans of a parsed document's values, looked up by field path.
pub(super) struct FieldSpans<'a> {
    root: DeTable<'a>,
}

impl<'a> FieldSpans<'a> {
    pub fn new(root: DeTable<'a>) -> FieldSpans<'a> {
        FieldSpans { root }
    }

    /// The span of the value at `path` (`service.partitions`,
    /// `fault[2].target`, `resources.cores.table`), or `None` when the
    /// file does not write it.
    pub fn of(&self, path: &str) -> Option<Range<usize>> {
        let mut table = &self.root;
        let mut found: Option<Range<usize>> = None;
        let mut segments = path.split('.').peekable();
        while let Some(segment) = segments.next() {
            let (key, indices) = match segment.find('[') {
                Some(i) => (&segment[..i], &segment[i..]),
                None => (segment, ""),
            };
            let (_, mut value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == key)?;
            for index in indices.split('[').skip(1) {
                let i: usize = index.strip_suffix(']')?.parse().ok()?;
                let DeValue::Array(items) = value.get_ref() else { return None };
                value = items.get(i)?;
            }
            found = Some(value.span());
            match value.get_ref() {
                DeValue::Table(t) => table = t,
                _ if segments.peek().is_some() => return None,
                _ => {}
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_path_finds_the_line_of_its_value() {
        let text = "a = 1\n[t]\nx = 2\nm = { k = 3 }\n[[w]]\nr = 4\n[[w]]\nr = 5\n";
        let doc = DeTable::parse(text).unwrap().into_inner();
        let spans = FieldSpans::new(doc);
        let line = |p: &str| spans.of(p).map(|s| text[..s.start].matches('\n').count() + 1);
        assert_eq!(line("a"), Some(1));
        assert_eq!(line("t.x"), Some(3));
        assert_eq!(line("t.m.k"), Some(4));
        assert_eq!(line("w[1].r"), Some(8));
        assert_eq!(line("w[0].r"), Some(6));
        assert_eq!(line("w[2].r"), None);
        assert_eq!(line("t.y"), None);
        assert_eq!(line("a.b"), None);
    }
}
