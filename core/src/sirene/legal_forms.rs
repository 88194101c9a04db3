//! Usual names of the common legal forms, by INSEE legal category code
//! (catégorie juridique, level III). Other codes keep their number only.

/// The short label accountants use for a legal category code.
pub fn label(code: &str) -> Option<&'static str> {
    Some(match code {
        "1000" => "EI (entrepreneur individuel)",
        "5202" => "SNC",
        "5306" => "SCS",
        "5308" => "SCA",
        "5385" => "SELCA",
        "5485" => "SELARL",
        "5498" => "EURL",
        "5499" => "SARL",
        "5505" | "5510" | "5515" | "5520" | "5522" | "5525" | "5530" | "5531" | "5532" | "5599" => {
            "SA"
        }
        "5605" | "5610" | "5615" | "5620" | "5622" | "5625" | "5630" | "5631" | "5632" | "5699" => {
            "SA"
        }
        "5710" => "SAS",
        "5720" => "SASU",
        "5785" => "SELAS",
        "6540" => "SCI",
        "6541" => "SCI de construction-vente",
        "6589" => "SCM",
        "6599" => "Société civile",
        "9210" => "Association non déclarée",
        "9220" => "Association déclarée",
        "9221" => "Association déclarée d'insertion par l'économique",
        "9222" => "Association intermédiaire",
        "9230" => "Association déclarée reconnue d'utilité publique",
        "9260" => "Association de droit local",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn common_forms() {
        assert_eq!(super::label("5710"), Some("SAS"));
        assert_eq!(super::label("5499"), Some("SARL"));
        assert_eq!(super::label("5498"), Some("EURL"));
        assert_eq!(super::label("6540"), Some("SCI"));
        assert_eq!(super::label("1000"), Some("EI (entrepreneur individuel)"));
        assert_eq!(super::label("9220"), Some("Association déclarée"));
        assert_eq!(super::label("0000"), None);
    }
}
