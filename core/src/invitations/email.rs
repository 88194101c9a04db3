//! The invitation email: French, a plain-text and an HTML part saying the
//! same, from the firm's name, with Message-ID, Date and Reply-To — what
//! spam filters look for in a clean message — and signed with DKIM when a
//! key is configured.
//!
//! The same [`Content`] gives the same bytes (the Date and the MIME
//! boundary come from it, not from the clock or a random draw): a message
//! sent again after a lost answer is the identical message.

use chrono::{DateTime, Datelike, Utc};
use lettre::Address;
use lettre::message::{Mailbox, Message, MultiPart, header::ContentType};

use crate::mail::{Outgoing, Signer};

const WEEKDAYS: [&str; 7] = [
    "lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche",
];
const MONTHS: [&str; 12] = [
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
];

/// `lundi 7 décembre 2026` (the day in UTC).
pub fn french_date(t: DateTime<Utc>) -> String {
    let d = t.date_naive();
    let day = if d.day() == 1 {
        "1er".to_string()
    } else {
        d.day().to_string()
    };
    format!(
        "{} {day} {} {}",
        WEEKDAYS[d.weekday().num_days_from_monday() as usize],
        MONTHS[d.month0() as usize],
        d.year()
    )
}

/// What the email says.
pub struct Content<'a> {
    pub firm_name: &'a str,
    pub from: &'a Address,
    pub contact: &'a Address,
    pub to: &'a Address,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub company: &'a str,
    pub link: &'a str,
    pub expires: DateTime<Utc>,
    /// Labels of the sections the person will see.
    pub themes: &'a [String],
    pub message_id: &'a str,
    /// The Date header: when the first attempt of this send composed it.
    pub date: DateTime<Utc>,
    /// The one reminder: says so, and that the earlier link no longer works.
    pub reminder: bool,
}

fn reminder_line(c: &Content) -> &'static str {
    if c.reminder {
        "Petit rappel : vous n'avez pas encore créé votre accès. Le lien de notre premier message ne fonctionne plus ; voici le nouveau.\n\n"
    } else {
        ""
    }
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn subject(c: &Content) -> String {
    let prefix = if c.reminder { "Rappel : " } else { "" };
    format!(
        "{prefix}{} vous invite à l'espace de {}",
        c.firm_name, c.company
    )
}

pub fn text(c: &Content) -> String {
    let themes = if c.themes.is_empty() {
        String::new()
    } else {
        format!("Vous y trouverez : {}.\n\n", c.themes.join(", "))
    };
    format!(
        "Bonjour {first} {last},\n\n\
         {reminder}{firm} vous invite à rejoindre l'espace de {company} sur sa plateforme : \
         vos documents comptables, fiscaux, sociaux et juridiques, partagés en \
         toute sécurité avec votre cabinet.\n\n\
         {themes}\
         Pour créer votre accès, ouvrez ce lien :\n{link}\n\n\
         Ce lien est personnel et ne fonctionne qu'une fois. Il expire le {expires}.\n\n\
         Une question ? Écrivez à {contact}.\n\n\
         {firm}\n",
        first = c.first_name,
        last = c.last_name,
        reminder = reminder_line(c),
        firm = c.firm_name,
        company = c.company,
        link = c.link,
        expires = french_date(c.expires),
        contact = c.contact,
    )
}

pub fn html(c: &Content) -> String {
    let e = html_escape;
    let themes = if c.themes.is_empty() {
        String::new()
    } else {
        format!(
            "<p>Vous y trouverez : {}.</p>\n",
            c.themes.iter().map(|t| e(t)).collect::<Vec<_>>().join(", ")
        )
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"fr\">\n<head><meta charset=\"utf-8\"><title>{subject}</title></head>\n\
         <body style=\"font-family: Arial, sans-serif; color: #222;\">\n\
         <p>Bonjour {first} {last},</p>\n\
         {reminder}<p>{firm} vous invite à rejoindre l'espace de <strong>{company}</strong> sur sa plateforme : \
         vos documents comptables, fiscaux, sociaux et juridiques, partagés en toute sécurité avec votre cabinet.</p>\n\
         {themes}\
         <p><a href=\"{link}\" style=\"display: inline-block; padding: 10px 18px; background: #1a4f8b; color: #fff; text-decoration: none; border-radius: 4px;\">Créer mon accès</a></p>\n\
         <p>Si le bouton ne fonctionne pas, copiez cette adresse dans votre navigateur :<br>{link_text}</p>\n\
         <p>Ce lien est personnel et ne fonctionne qu'une fois. Il expire le {expires}.</p>\n\
         <p>Une question ? Écrivez à <a href=\"mailto:{contact}\">{contact}</a>.</p>\n\
         <p>{firm}</p>\n</body>\n</html>\n",
        subject = e(&subject(c)),
        first = e(c.first_name),
        last = e(c.last_name),
        reminder = if c.reminder {
            format!("<p>{}</p>\n", e(reminder_line(c).trim_end()))
        } else {
            String::new()
        },
        firm = e(c.firm_name),
        company = e(c.company),
        link = e(c.link),
        link_text = e(c.link),
        expires = french_date(c.expires),
        contact = e(c.contact.as_ref()),
    )
}

/// Why a value cannot go into a header: header injection (a CR or LF
/// would start a header of the sender's choosing) and mangled names.
/// Entry points refuse such names already (`crate::text`); this catches
/// what came another way — a registry's company name, a row written before
/// the rule.
fn header_problems(c: &Content) -> Vec<String> {
    [
        ("the person's first name", c.first_name),
        ("the person's last name", c.last_name),
        ("the company name", c.company),
        ("the firm's name (mail.from_name)", c.firm_name),
    ]
    .into_iter()
    .filter_map(|(what, v)| {
        crate::text::check(v, crate::text::MAX_TEXT)
            .err()
            .map(|e| format!("{what} {e}"))
    })
    .collect()
}

/// The whole message, ready for a transport; signed when `signer` is set.
/// An error says why this message can never be composed as is.
pub fn compose(c: &Content, signer: Option<&Signer>) -> Result<Outgoing, String> {
    let problems = header_problems(c);
    if !problems.is_empty() {
        return Err(format!(
            "cannot compose the email: {}; correct it and resend",
            problems.join("; ")
        ));
    }
    // Unique per message, the same for each copy of it.
    let boundary = format!(
        "=_dossier_{}",
        &crate::digest::sha256_hex(c.message_id.as_bytes())[..32]
    );
    let mut message = Message::builder()
        .from(Mailbox::new(Some(c.firm_name.to_string()), c.from.clone()))
        .reply_to(Mailbox::new(
            Some(c.firm_name.to_string()),
            c.contact.clone(),
        ))
        .to(Mailbox::new(
            Some(format!("{} {}", c.first_name, c.last_name)),
            c.to.clone(),
        ))
        .subject(subject(c))
        .message_id(Some(format!("<{}>", c.message_id)))
        .date(std::time::SystemTime::from(c.date))
        .multipart(
            MultiPart::alternative()
                .boundary(boundary)
                .singlepart(
                    lettre::message::SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(text(c)),
                )
                .singlepart(
                    lettre::message::SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(html(c)),
                ),
        )
        .map_err(|e| format!("cannot build the email: {e}"))?;
    if let Some(signer) = signer {
        signer.sign(&mut message);
    }
    Ok(Outgoing {
        message_id: c.message_id.to_string(),
        from: c.from.clone(),
        to: c.to.clone(),
        bytes: message.formatted(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_french() {
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("time")
                .with_timezone(&Utc)
        };
        assert_eq!(
            french_date(t("2026-12-07T10:00:00Z")),
            "lundi 7 décembre 2026"
        );
        assert_eq!(
            french_date(t("2026-08-01T00:00:00Z")),
            "samedi 1er août 2026"
        );
        assert_eq!(
            french_date(t("2027-02-14T23:59:59Z")),
            "dimanche 14 février 2027"
        );
    }

    fn content<'a>(
        addresses: &'a [Address; 3],
        first_name: &'a str,
        themes: &'a [String],
    ) -> Content<'a> {
        let t = DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        Content {
            firm_name: "Cabinet Durand & Associés",
            from: &addresses[0],
            contact: &addresses[1],
            to: &addresses[2],
            first_name,
            last_name: "Lefèvre",
            company: "SCI Les Tilleuls",
            link: "https://app.cabinet-durand.fr/invitations/abc",
            expires: t,
            themes,
            message_id: "invitation.1.0@cabinet-durand.fr",
            date: t,
            reminder: false,
        }
    }

    fn addresses() -> [Address; 3] {
        [
            "invitations@cabinet-durand.fr",
            "accueil@cabinet-durand.fr",
            "h.lefevre@sci-tilleuls.fr",
        ]
        .map(|a| a.parse().expect("address"))
    }

    #[test]
    fn the_same_content_gives_the_same_bytes() {
        let (a, themes) = (addresses(), vec!["Comptabilité".to_string()]);
        let one = compose(&content(&a, "Hélène", &themes), None).expect("composed");
        let two = compose(&content(&a, "Hélène", &themes), None).expect("composed");
        assert_eq!(one.bytes, two.bytes);
        let text = String::from_utf8_lossy(&one.bytes);
        assert!(
            text.contains("Date: Fri, 04 Dec 2026 10:00:00 +0000"),
            "{text}"
        );
        assert!(text.contains("boundary=\"=_dossier_"), "{text}");
    }

    #[test]
    fn a_name_that_would_start_a_header_is_refused_not_sent() {
        let a = addresses();
        for name in ["Jean\r\nBcc: victime@example.org", "Jean\nX", "Je\u{7}an"] {
            let why = compose(&content(&a, name, &[]), None).expect_err("refused");
            assert!(
                why.contains("first name") && why.contains("control character"),
                "{why}"
            );
        }
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html_escape("<b>R&D \"x\"</b>"),
            "&lt;b&gt;R&amp;D &quot;x&quot;&lt;/b&gt;"
        );
    }
}
