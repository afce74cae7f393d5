//! The languages people read Lifeboat in: message catalogs (Fluent files under `locales/`,
//! built into the binary), choosing a language for a request, and times written for
//! people. Anything that renders text for people (pages here, emails elsewhere) asks
//! `Lang::negotiate` or `Lang::from_tag` for a language and `Lang::text` for each message.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};

/// A language the catalogs ship, the default (English) first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lang {
    En,
    De,
    Ja,
}

/// A message argument: a number (chooses plural forms) or text.
pub type Arg<'a> = FluentValue<'a>;

const SOURCES: [(Lang, &str); 3] = [
    (Lang::En, include_str!("../locales/en.ftl")),
    (Lang::De, include_str!("../locales/de.ftl")),
    (Lang::Ja, include_str!("../locales/ja.ftl")),
];

/// The catalogs, parsed once per process.
fn bundles() -> &'static [FluentBundle<FluentResource>; 3] {
    static BUNDLES: OnceLock<[FluentBundle<FluentResource>; 3]> = OnceLock::new();
    BUNDLES.get_or_init(|| SOURCES.map(|(lang, source)| bundle(lang, source)))
}

fn bundle(lang: Lang, source: &str) -> FluentBundle<FluentResource> {
    // The catalogs are part of the binary and checked by the tests: an error here is a
    // build that must not ship.
    let resource = FluentResource::try_new(source.to_string())
        .unwrap_or_else(|(_, errors)| panic!("locales/{}.ftl: {errors:?}", lang.code()));
    let id: unic_langid::LanguageIdentifier = lang
        .code()
        .parse()
        .expect("the shipped language codes are valid tags");
    let mut bundle = FluentBundle::new_concurrent(vec![id]);
    // Pages are HTML without bidirectional text: no isolation marks around placeables.
    bundle.set_use_isolating(false);
    bundle
        .add_resource(resource)
        .unwrap_or_else(|errors| panic!("locales/{}.ftl: {errors:?}", lang.code()));
    bundle
}

impl Lang {
    /// Every shipped language, the default first.
    pub const ALL: [Lang; 3] = [Lang::En, Lang::De, Lang::Ja];
    /// The language pages fall back to, and the one an incident update's default text is in.
    pub const DEFAULT: Lang = Lang::En;

    /// Its BCP 47 primary language subtag: `en`, `de`, `ja`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
            Lang::Ja => "ja",
        }
    }

    fn index(self) -> usize {
        match self {
            Lang::En => 0,
            Lang::De => 1,
            Lang::Ja => 2,
        }
    }

    /// The shipped language of a language tag (`de`, `de-AT`, `ja_JP`; by its primary
    /// subtag, any case), if there is one.
    pub fn from_tag(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next()?;
        Lang::ALL
            .into_iter()
            .find(|l| l.code().eq_ignore_ascii_case(primary))
    }

    /// The language of a request: `?lang=` if it names a shipped language, else the best
    /// shipped one in `Accept-Language` by its q-values, else the default.
    pub fn negotiate(query: Option<&str>, accept_language: Option<&str>) -> Lang {
        query
            .and_then(Lang::from_tag)
            .or_else(|| accept_language.and_then(Lang::from_accept_language))
            .unwrap_or(Lang::DEFAULT)
    }

    /// The shipped language an `Accept-Language` header prefers most: the highest q-value
    /// (1 when absent), the earlier entry among equals; `q=0` means "not this one". `*`
    /// stands for the default language.
    pub fn from_accept_language(header: &str) -> Option<Lang> {
        let mut best: Option<(f32, Lang)> = None;
        let mut refused = Vec::new();
        for entry in header.split(',') {
            let mut parts = entry.split(';');
            let tag = parts.next().unwrap_or("").trim();
            let mut q = 1.0f32;
            for param in parts {
                if let Some((name, value)) = param.split_once('=') {
                    if name.trim().eq_ignore_ascii_case("q") {
                        // A malformed q-value ranks the entry last, not first.
                        q = value.trim().parse().unwrap_or(0.0);
                    }
                }
            }
            let lang = if tag == "*" {
                Some(Lang::DEFAULT)
            } else {
                Lang::from_tag(tag)
            };
            let Some(lang) = lang else { continue };
            if q <= 0.0 {
                refused.push(lang);
                continue;
            }
            if best.is_none_or(|(b, _)| q > b) {
                best = Some((q, lang));
            }
        }
        best.map(|(_, lang)| lang)
            .filter(|lang| !refused.contains(lang))
    }

    /// Message `id` with `args`, from this language's catalog, else the default's; the id
    /// itself when no catalog has it (a test keeps every catalog complete).
    pub fn text(self, id: &str, args: &[(&str, Arg)]) -> String {
        let all = bundles();
        for bundle in [&all[self.index()], &all[Lang::DEFAULT.index()]] {
            let Some(pattern) = bundle.get_message(id).and_then(|m| m.value()) else {
                continue;
            };
            let mut fluent_args = FluentArgs::new();
            for (name, value) in args {
                fluent_args.set(*name, value.clone());
            }
            let mut errors = Vec::new();
            let text = bundle.format_pattern(pattern, Some(&fluent_args), &mut errors);
            if errors.is_empty() {
                return text.into_owned();
            }
            tracing::warn!("message {id} in {}: {errors:?}", self.code());
        }
        id.to_string()
    }

    /// A time for people, in UTC, to the minute: `Apr 12, 14:32 UTC`, with the year when
    /// it is not the year of `now_us`.
    pub fn time(self, us: i64, now_us: i64) -> String {
        self.calendar(us, now_us, true)
    }

    /// A day for people: `Apr 12`, with the year when it is not the year of `now_us`.
    pub fn day(self, us: i64, now_us: i64) -> String {
        self.calendar(us, now_us, false)
    }

    /// `time` (`with_time`) or `day`: the catalog's pattern for this year or another.
    fn calendar(self, us: i64, now_us: i64, with_time: bool) -> String {
        let (Some(t), Some(now)) = (
            chrono::DateTime::from_timestamp_micros(us),
            chrono::DateTime::from_timestamp_micros(now_us),
        ) else {
            return String::new();
        };
        use chrono::{Datelike, Timelike};
        let id = match (with_time, t.year() == now.year()) {
            (true, true) => "time-this-year",
            (true, false) => "time-other-year",
            (false, true) => "day-this-year",
            (false, false) => "day-other-year",
        };
        let month = self.text(&format!("month-{}", t.month()), &[]);
        let mut args = vec![
            ("month", month.into()),
            ("day", t.day().to_string().into()),
            ("year", t.year().to_string().into()),
        ];
        if with_time {
            args.push(("time", format!("{:02}:{:02}", t.hour(), t.minute()).into()));
        }
        self.text(id, &args)
    }

    /// How long ago (or, for a time after `now_us`, how soon) `us` is, in whole minutes,
    /// hours or days, rounded down: `3 hours ago`, `in 20 minutes`.
    pub fn relative(self, us: i64, now_us: i64) -> String {
        let seconds = (now_us - us) / 1_000_000;
        let (past, seconds) = (seconds >= 0, seconds.unsigned_abs());
        let (unit, n) = match seconds {
            s if s < 60 => return self.text("ago-now", &[]),
            s if s < 3_600 => ("minutes", s / 60),
            s if s < 86_400 => ("hours", s / 3_600),
            s => ("days", s / 86_400),
        };
        let id = if past {
            format!("ago-{unit}")
        } else {
            format!("in-{unit}")
        };
        self.text(&id, &[("n", n.into())])
    }
}

/// An incident update's translations keyed by language code, checked: each key a shipped
/// language other than the default (`de`, `de-DE` and `DE` are all `de`), each text not
/// empty. Anything else is a usage error that names the languages.
pub fn check_translations(
    given: impl IntoIterator<Item = (String, String)>,
) -> lifeboat_core::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (tag, text) in given {
        let others: Vec<&str> = Lang::ALL
            .iter()
            .filter(|l| **l != Lang::DEFAULT)
            .map(|l| l.code())
            .collect();
        let lang = Lang::from_tag(&tag)
            .filter(|l| *l != Lang::DEFAULT)
            .ok_or_else(|| {
                lifeboat_core::Error::usage(format!(
                    "no translation into {tag:?}: the message itself is in {}; translations \
                     may be in {}",
                    Lang::DEFAULT.code(),
                    others.join(", ")
                ))
            })?;
        if text.trim().is_empty() {
            return Err(lifeboat_core::Error::usage(format!(
                "the {lang} translation of the message is empty"
            )));
        }
        if out.insert(lang.code().to_string(), text).is_some() {
            return Err(lifeboat_core::Error::usage(format!(
                "two translations into {lang}"
            )));
        }
    }
    Ok(out)
}

impl std::fmt::Display for Lang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::Lang;

    fn at(text: &str) -> i64 {
        lifeboat_core::time::parse(text).expect("time")
    }

    #[test]
    fn every_catalog_parses_and_has_every_message_of_the_default() {
        fn ids(source: &str) -> Vec<String> {
            let resource =
                fluent_bundle::FluentResource::try_new(source.to_string()).expect("parses");
            resource
                .entries()
                .filter_map(|e| match e {
                    fluent_syntax::ast::Entry::Message(m) => Some(m.id.name.to_string()),
                    _ => None,
                })
                .collect()
        }
        let default = ids(super::SOURCES[0].1);
        assert!(default.len() > 50, "{default:?}");
        for (lang, source) in super::SOURCES {
            let mine = ids(source);
            for id in &default {
                assert!(mine.contains(id), "{lang} has no message {id}");
            }
            for id in &mine {
                assert!(
                    default.contains(id),
                    "{lang} has {id}, which English has not"
                );
            }
            // Every message formats without errors with its arguments absent or present.
            assert_ne!(lang.text("stale", &[("seconds", 5.into())]), "stale");
        }
    }

    #[test]
    fn times_read_as_people_write_them_in_each_language() {
        let now = at("2026-04-12T17:40:00Z");
        let t = at("2026-04-12T14:32:59.928826Z");
        assert_eq!(Lang::En.time(t, now), "Apr 12, 14:32 UTC");
        assert_eq!(Lang::De.time(t, now), "12. Apr., 14:32 UTC");
        assert_eq!(Lang::Ja.time(t, now), "4月12日 14:32 UTC");
        let last_year = at("2025-12-01T02:37:23.928826Z");
        assert_eq!(Lang::En.time(last_year, now), "Dec 1, 2025, 02:37 UTC");
        assert_eq!(Lang::De.time(last_year, now), "1. Dez. 2025, 02:37 UTC");
        assert_eq!(Lang::Ja.time(last_year, now), "2025年12月1日 02:37 UTC");
        assert_eq!(Lang::En.day(t, now), "Apr 12");
        assert_eq!(Lang::De.day(t, now), "12. Apr.");
        assert_eq!(Lang::Ja.day(t, now), "4月12日");
        let may = at("2026-05-03T09:05:00Z");
        assert_eq!(Lang::De.time(may, now), "3. Mai, 09:05 UTC");
    }

    #[test]
    fn relative_times_in_each_language_with_plural_forms() {
        let now = at("2026-04-12T17:40:00Z");
        let cases = [
            (
                "2026-04-12T14:32:00Z",
                ["3 hours ago", "vor 3 Stunden", "3 時間前"],
            ),
            (
                "2026-04-12T16:40:00Z",
                ["1 hour ago", "vor 1 Stunde", "1 時間前"],
            ),
            (
                "2026-04-12T17:39:30Z",
                ["just now", "gerade eben", "たった今"],
            ),
            (
                "2026-04-12T17:39:00Z",
                ["1 minute ago", "vor 1 Minute", "1 分前"],
            ),
            (
                "2026-04-12T17:15:00Z",
                ["25 minutes ago", "vor 25 Minuten", "25 分前"],
            ),
            (
                "2026-04-10T17:40:00Z",
                ["2 days ago", "vor 2 Tagen", "2 日前"],
            ),
            (
                "2026-04-12T18:00:00Z",
                ["in 20 minutes", "in 20 Minuten", "20 分後"],
            ),
            ("2026-04-13T17:40:00Z", ["in 1 day", "in 1 Tag", "1 日後"]),
        ];
        for (time, expected) in cases {
            for (lang, want) in Lang::ALL.into_iter().zip(expected) {
                assert_eq!(lang.relative(at(time), now), want, "{time} in {lang}");
            }
        }
    }

    #[test]
    fn the_query_wins_then_accept_language_by_q_value_then_english() {
        assert_eq!(Lang::negotiate(Some("ja"), Some("de")), Lang::Ja);
        assert_eq!(Lang::negotiate(Some("DE-at"), None), Lang::De);
        // An unknown ?lang= is ignored, not an error.
        assert_eq!(
            Lang::negotiate(Some("fr"), Some("de-DE,de;q=0.9")),
            Lang::De
        );
        assert_eq!(Lang::negotiate(None, None), Lang::En);
        assert_eq!(Lang::negotiate(None, Some("fr-FR, fr;q=0.9")), Lang::En);
        let header = |h: &str| Lang::from_accept_language(h);
        assert_eq!(header("en;q=0.5, ja;q=0.8, de;q=0.7"), Some(Lang::Ja));
        assert_eq!(header("fr, de;q=0.3, en;q=0.2"), Some(Lang::De));
        assert_eq!(header("ja-JP"), Some(Lang::Ja));
        assert_eq!(header("de;q=0.9, ja;q=0.9"), Some(Lang::De));
        assert_eq!(header("ja;q=0, de;q=0.1"), Some(Lang::De));
        assert_eq!(header("*;q=0.5, ja;q=0.4"), Some(Lang::En));
        assert_eq!(header("ja;q=oops, de;q=0.2"), Some(Lang::De));
        assert_eq!(header(""), None);
        assert_eq!(header("ja;q=0"), None);
    }

    #[test]
    fn translations_are_keyed_by_shipped_languages_other_than_the_default() {
        let given = |pairs: &[(&str, &str)]| {
            super::check_translations(pairs.iter().map(|(l, t)| (l.to_string(), t.to_string())))
        };
        let ok = given(&[("DE-de", "Hallo"), ("ja", "こんにちは")]).expect("valid");
        assert_eq!(
            ok.into_iter().collect::<Vec<_>>(),
            [
                ("de".to_string(), "Hallo".to_string()),
                ("ja".into(), "こんにちは".into())
            ]
        );
        for (bad, why) in [
            (vec![("fr", "Bonjour")], "translations may be in de, ja"),
            (vec![("en", "Hello")], "the message itself is in en"),
            (vec![("de", "  ")], "empty"),
            (vec![("de", "a"), ("de-AT", "b")], "two translations"),
        ] {
            let e = given(&bad).expect_err("refused");
            assert!(e.to_string().contains(why), "{e}");
        }
    }
}
