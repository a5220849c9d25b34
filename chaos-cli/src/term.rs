//! The terminal: whether to redraw in place, colours, width.
use std::io::IsTerminal;

/// A style of text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Bold.
    Bold,
    /// Dim grey.
    Dim,
    /// Green.
    Green,
    /// Red.
    Red,
    /// Yellow.
    Yellow,
}

/// How output is drawn on stderr.
#[derive(Clone, Copy, Debug)]
pub struct Term {
    live: bool,
    colour: bool,
}

impl Term {
    /// stderr as it is: live redraws and colour on a terminal (not with `TERM=dumb`, and no
    /// colour with `NO_COLOR`); plain lines in CI logs and pipes.
    pub fn stderr() -> Self {
        let tty = std::io::stderr().is_terminal()
            && std::env::var("TERM").map(|t| t != "dumb").unwrap_or(true);
        Term {
            live: tty,
            colour: tty && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    /// No redraws, no colour.
    #[cfg(test)]
    pub fn plain() -> Self {
        Term {
            live: false,
            colour: false,
        }
    }

    /// Whether the display redraws in place.
    pub fn live(&self) -> bool {
        self.live
    }

    /// `text` in `style` (unchanged without colour).
    pub fn paint(&self, style: Style, text: &str) -> String {
        if !self.colour {
            return text.to_string();
        }
        let code = match style {
            Style::Bold => "1",
            Style::Dim => "2",
            Style::Green => "32",
            Style::Red => "31",
            Style::Yellow => "33",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    /// The terminal's width (COLUMNS, then the tty, then 100).
    pub fn columns(&self) -> usize {
        if let Some(c) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
            return c;
        }
        // SAFETY: TIOCGWINSZ fills a winsize struct we own; fd 2 is stderr.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) };
        if r == 0 && ws.ws_col > 0 {
            ws.ws_col as usize
        } else {
            100
        }
    }
}

/// Cuts a line to `max` visible characters, not counting ANSI escapes (a reset closes a cut).
pub fn truncate_visible(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut visible = 0;
    let mut chars = s.chars().peekable();
    let mut cut = false;
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            out.push(c);
            for d in chars.by_ref() {
                out.push(d);
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        if visible >= max {
            cut = true;
            continue;
        }
        out.push(c);
        visible += 1;
    }
    if cut && out.contains('\x1b') {
        out.push_str("\x1b[0m");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_skips_escapes() {
        assert_eq!(truncate_visible("abcdef", 3), "abc");
        assert_eq!(
            truncate_visible("\x1b[32mabcdef\x1b[0m", 2),
            "\x1b[32mab\x1b[0m\x1b[0m"
        );
        assert_eq!(truncate_visible("ab", 5), "ab");
        assert_eq!(Term::plain().paint(Style::Red, "x"), "x");
    }
}
