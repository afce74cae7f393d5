//! Markdown written by operators (postmortems, post-incident reports) rendered to HTML
//! safely: raw HTML in the text is shown as text, never passed through; links keep only
//! `http`, `https`, `mailto` and relative destinations; images become their description.

use pulldown_cmark::{html, CowStr, Event, Options, Parser, Tag, TagEnd};

/// A link destination that may be followed from a page.
fn safe_destination(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    match lower.split_once(':') {
        // A colon before any '/', '?' or '#' is a scheme.
        Some((scheme, _)) if !scheme.contains(['/', '?', '#']) => {
            matches!(scheme, "http" | "https" | "mailto")
        }
        _ => true,
    }
}

/// `text` (Markdown, with tables and strikethrough) as an HTML fragment.
pub fn to_html(text: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let events = Parser::new_ext(text, options).filter_map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Some(Event::Text(raw)),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => Some(Event::Start(Tag::Link {
            link_type,
            dest_url: if safe_destination(&dest_url) {
                dest_url
            } else {
                CowStr::Borrowed("#")
            },
            title,
            id,
        })),
        // An image's description stays, as text: pages load nothing from elsewhere.
        Event::Start(Tag::Image { .. }) | Event::End(TagEnd::Image) => None,
        other => Some(other),
    });
    let mut out = String::with_capacity(text.len() * 3 / 2);
    html::push_html(&mut out, events);
    out
}

#[cfg(test)]
mod tests {
    use super::to_html;

    #[test]
    fn raw_html_and_scripts_are_shown_as_text() {
        let html = to_html(
            "# What happened\n\n<script>alert(1)</script>\n\nA <b onclick=\"x()\">bold</b> \
             claim and [a link](javascript:alert(2)) and [docs](https://example.net/a?b=1&c=2) \
             and ![a chart](https://evil.example/x.png).\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
        );
        assert!(html.contains("<h1>What happened</h1>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(
            html.contains("&lt;b onclick=\"x()\"&gt;bold&lt;/b&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("javascript:"), "{html}");
        assert!(html.contains("<a href=\"#\">a link</a>"), "{html}");
        assert!(
            html.contains("<a href=\"https://example.net/a?b=1&amp;c=2\">docs</a>"),
            "{html}"
        );
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("a chart"), "{html}");
        assert!(html.contains("<table>"), "{html}");
    }
}
