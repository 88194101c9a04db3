//! Draws a list of paths the way `tree` does.

/// One line to draw: its path ("A/B/C") and a note shown after the name.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: String,
    pub note: String,
}

#[derive(Default)]
struct Node {
    name: String,
    note: String,
    children: Vec<Node>,
}

impl Node {
    fn child(&mut self, name: &str) -> &mut Node {
        let i = match self.children.iter().position(|c| c.name == name) {
            Some(i) => i,
            None => {
                self.children.push(Node {
                    name: name.to_string(),
                    ..Node::default()
                });
                self.children.len() - 1
            }
        };
        &mut self.children[i]
    }
}

/// Entries keep their order among siblings; a parent missing from the list
/// is drawn without a note.
pub fn render(root: &str, entries: &[Entry]) -> String {
    let mut tree = Node::default();
    for e in entries {
        let mut node = &mut tree;
        for part in e.path.split('/') {
            node = node.child(part);
        }
        node.note.clone_from(&e.note);
    }
    let mut out = format!("{root}\n");
    draw(&tree.children, "", &mut out);
    out
}

fn draw(nodes: &[Node], prefix: &str, out: &mut String) {
    for (i, n) in nodes.iter().enumerate() {
        let last = i + 1 == nodes.len();
        let (branch, carry) = if last {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        out.push_str(prefix);
        out.push_str(branch);
        out.push_str(&n.name);
        if !n.note.is_empty() {
            out.push_str("  ");
            out.push_str(&n.note);
        }
        out.push('\n');
        draw(&n.children, &format!("{prefix}{carry}"), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_like_tree() {
        let e = |p: &str, n: &str| Entry {
            path: p.into(),
            note: n.into(),
        };
        let out = render(
            ".",
            &[
                e("A", ""),
                e("A/x", "[note]"),
                e("A/y", ""),
                e("B", ""),
                e("B/z/deep", ""),
            ],
        );
        assert_eq!(
            out,
            ".\n├── A\n│   ├── x  [note]\n│   └── y\n└── B\n    └── z\n        └── deep\n"
        );
    }
}
