"""Password policy for every new password, in the spirit of NIST SP 800-63B (section 5.1.1.2).

A new password (user creation, an admin's update, a user's own change) is refused when:

- it is shorter than :data:`PASSWORD_MIN_CHARS` (8) or longer than :data:`PASSWORD_MAX_CHARS`
  (128) Unicode code points, counted after NFKC normalisation;
- it contains a control character (Unicode category ``Cc``: NUL, tab, newline, DEL, C1 controls)
  or a lone surrogate;
- it is made only of whitespace, or of one character repeated;
- it is on a list of common passwords (case-insensitively, after NFKC): the 30,000 most frequent
  passwords of leaked password sets that ``zxcvbn`` ships (its ``passwords`` frequency list),
  read offline;
- it is the account's email address or the part of it before ``@`` (context-specific words).

There are no composition rules (no "one digit, one symbol") and no expiry, as NIST recommends;
spaces and any printable Unicode character are allowed. The password is hashed as given (not
normalised), so existing passwords keep working. :func:`password_problem` returns the reason as
a short sentence for a 400 answer; it never contains the password.

The administrator seeded from ``ADMIN_PASSWORD`` is exempt only in the ``embedded`` profile
(with a loud warning at every start), see ``AuthService.seed_admin``.
"""

from __future__ import annotations

import unicodedata
from functools import cache

PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_CHARS = 128


@cache
def common_passwords() -> frozenset[str]:
    """The common-password list (lower case), loaded once (about 0.15 s, a few MB)."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(p.casefold() for p in FREQUENCY_LISTS["passwords"] if len(p) >= PASSWORD_MIN_CHARS)


def _context_words(email: str | None) -> set[str]:
    if not email:
        return set()
    email = unicodedata.normalize("NFKC", email.strip()).casefold()
    local = email.partition("@")[0]
    return {w for w in (email, local) if w}


def password_problem(password: str, *, email: str | None = None) -> str | None:
    """Why ``password`` may not be set (a sentence without the password), or ``None`` if it may.

    ``email``: the account's email address, which the password may not be (nor its local part).
    """
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (no lone surrogates)"
    if any(unicodedata.category(c) == "Cc" for c in password):
        return "must not contain control characters (NUL, tab, newline, ...)"
    normalised = unicodedata.normalize("NFKC", password)
    if len(normalised) < PASSWORD_MIN_CHARS:
        return f"must be at least {PASSWORD_MIN_CHARS} characters long"
    if len(normalised) > PASSWORD_MAX_CHARS:
        return f"must be at most {PASSWORD_MAX_CHARS} characters long"
    if normalised.isspace() or not normalised.strip():
        return "must not be only whitespace"
    folded = normalised.casefold()
    if len(set(folded)) == 1:
        return "must not be one character repeated"
    if folded in common_passwords() or folded.strip() in common_passwords():
        return "is too common: it appears in lists of leaked passwords; choose another"
    if folded in _context_words(email):
        return "must not be your email address or its part before @"
    return None


def check_new_password(password: str, *, email: str | None = None) -> str:
    """``password`` unchanged if the policy allows it; ``ValueError`` with the reason otherwise."""
    problem = password_problem(password, email=email)
    if problem is not None:
        raise ValueError(problem)
    return password
