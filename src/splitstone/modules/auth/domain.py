"""Auth's rules, with no I/O: roles and their permissions, who may change whose role, opaque tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata

from email_validator import EmailNotValidError, validate_email

from splitstone.kernel.errors import Conflict, InvalidInput, PermissionDenied
from splitstone.modules.auth.api import Permission, Role

_MEMBER = frozenset(
    {
        Permission.ORG_READ,
        Permission.MEMBERS_READ,
        Permission.BILLING_READ,
        Permission.PROJECTS_READ,
        Permission.TASKS_READ,
        Permission.TASKS_WRITE,
    }
)
_ADMIN = _MEMBER | {
    Permission.ORG_UPDATE,
    Permission.MEMBERS_MANAGE,
    Permission.API_KEYS_MANAGE,
    Permission.BILLING_MANAGE,
    Permission.USAGE_WRITE,
    Permission.PROJECTS_MANAGE,
    Permission.WEBHOOKS_MANAGE,
}
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.MEMBER: _MEMBER,
    Role.ADMIN: frozenset(_ADMIN),
    Role.OWNER: frozenset(Permission),
}

_RANK = {Role.MEMBER: 0, Role.ADMIN: 1, Role.OWNER: 2}


class LastOwner(Conflict):
    code = "last-owner"
    title = "An organization needs an owner"


class RoleTooHigh(PermissionDenied):
    code = "role-too-high"
    title = "Cannot manage a role above your own"


def permissions_of(role: Role) -> frozenset[Permission]:
    return ROLE_PERMISSIONS[role]


def check_role_change(actor: Role, current: Role, new: Role, *, owners_left_after: int) -> None:
    """May `actor` move a member from `current` to `new`? Owners manage everyone; admins up to admin."""
    if _RANK[actor] < _RANK[Role.ADMIN]:
        raise RoleTooHigh("Only admins and owners manage members.")
    if (_RANK[current] > _RANK[actor]) or (_RANK[new] > _RANK[actor]):
        highest = current if _RANK[current] >= _RANK[new] else new
        raise RoleTooHigh(f"An {actor.value} cannot grant or change the {highest.value} role.")
    if current is Role.OWNER and new is not Role.OWNER and owners_left_after < 1:
        raise LastOwner("The last owner cannot be demoted; make someone else owner first.")


def check_removal(actor: Role, target: Role, *, is_self: bool, owners_left_after: int) -> None:
    """May `actor` remove a member with role `target` (or leave, when `is_self`)?

    Permission comes first: someone who may not remove a member learns nothing about owner counts.
    """
    if not is_self:
        if _RANK[actor] < _RANK[Role.ADMIN]:
            raise RoleTooHigh("Only admins and owners remove members.")
        if _RANK[target] > _RANK[actor]:
            raise RoleTooHigh(f"An {actor.value} cannot remove an {target.value}.")
    if target is Role.OWNER and owners_left_after < 1:
        raise LastOwner("The last owner cannot leave or be removed; make someone else owner first.")


def check_invitation(actor: Role, role: Role) -> None:
    """May `actor` invite someone as `role` (or revoke such an invitation)? Not above their own role."""
    if _RANK[actor] < _RANK[Role.ADMIN]:
        raise RoleTooHigh("Only admins and owners invite members.")
    if _RANK[role] > _RANK[actor]:
        raise RoleTooHigh(f"An {actor.value} cannot invite an {role.value}.")


class InvalidEmail(InvalidInput):
    code = "invalid-email"
    title = "Invalid email address"


def normalize_email(email: str) -> str:
    """The one spelling of an address, so two accounts can never look alike.

    NFKC folds compatibility forms (fullwidth letters, ligatures) into plain letters; the domain is kept in
    its ASCII (IDNA) form, so a look-alike domain shows as `xn--...`; a local part that is not ASCII
    (a Cyrillic a, U+0430, among Latin letters looks Latin) is refused rather than guessed at.
    """
    folded = unicodedata.normalize("NFKC", email).strip()
    try:
        checked = validate_email(folded, check_deliverability=False)
    except EmailNotValidError as error:
        raise InvalidEmail(f"Not a valid email address: {error}") from None
    if checked.ascii_email is None:
        raise InvalidEmail(
            "The part before the @ must use ASCII letters, digits and punctuation only; "
            "characters from other scripts can look like Latin ones."
        )
    return checked.ascii_email.lower()


def new_opaque_token() -> str:
    """A single-use secret for links (verification, reset, invitation): 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What is stored instead of a token. Tokens are random and long, so a fast hash suffices."""
    return hashlib.sha256(token.encode()).hexdigest()


def digests_match(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
