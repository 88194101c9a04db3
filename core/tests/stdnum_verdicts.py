"""python-stdnum's verdicts on the corpus of core/tests/stdnum.rs.

Reads `rule<TAB>value` lines (values may hold spaces, dots, no-break
spaces and tabs, never a newline) from the file named by argv[1] and writes
one line per input line to argv[2]:
  siren, siret, vat: `1 <compact form>` when stdnum accepts the value, else `0`
  vat_of:            the VAT number stdnum derives from a valid SIREN.
"""

import sys

from stdnum.fr import siren, siret, tva

RULES = {"siren": siren, "siret": siret, "vat": tva}


def verdict(rule: str, value: str) -> str:
    if rule == "vat_of":
        return "FR" + siren.to_tva(value)
    module = RULES[rule]
    if module.is_valid(value):
        return "1 " + module.compact(value)
    return "0"


def main() -> None:
    with open(sys.argv[1], encoding="utf-8", newline="\n") as src, open(
        sys.argv[2], "w", encoding="utf-8", newline="\n"
    ) as out:
        for line in src:
            rule, value = line.rstrip("\n").split("\t", 1)
            out.write(verdict(rule, value) + "\n")


if __name__ == "__main__":
    main()
