"""The flavor extra specs TrustedFilter reads, and how to read them.

Standard library only, so nova-api's validators and the filter share it.
"""

import re

#: Legacy key of the removed Nova TrustedFilter.
TRUSTED_HOST = 'trust:trusted_host'
#: Trustpool profile key.
PROFILE = 'trust:profile'

#: Values of trust:trusted_host (the verdict statuses).
LEVELS = ('trusted', 'untrusted', 'unknown')

#: What a profile name may look like (the shim accepts the same).
PROFILE_PATTERN = r'[A-Za-z0-9][A-Za-z0-9._-]{0,63}'
_PROFILE_RE = re.compile(PROFILE_PATTERN)


class InvalidTrustSpec(ValueError):
    """A flavor carries a trust extra spec with a value the filter cannot use."""


def trust_request(extra_specs):
    """Return (trusted_host, profile) asked for by extra_specs, or None.

    None means the flavor asks for no trust at all. Either element of the
    pair may be None (not asked for), never both.

    :raises InvalidTrustSpec: a value that is not a level or profile name
    """
    if not extra_specs:
        return None
    level = extra_specs.get(TRUSTED_HOST)
    profile = extra_specs.get(PROFILE)
    if level is None and profile is None:
        return None
    if level is not None and level not in LEVELS:
        raise InvalidTrustSpec('%s=%r is not one of %s'
                               % (TRUSTED_HOST, level, ', '.join(LEVELS)))
    if profile is not None and not _PROFILE_RE.fullmatch(profile):
        raise InvalidTrustSpec('%s=%r is not a profile name (%s)'
                               % (PROFILE, profile, PROFILE_PATTERN))
    return level, profile
