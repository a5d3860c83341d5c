"""Validators for the trust: extra specs (nova.api.extra_spec_validators).

Registering them also makes ``trust:`` a namespace Nova knows, so a
misspelt ``trust:...`` key is rejected by nova-api (microversion >= 2.86)
instead of being silently ignored by the filter.
"""

from nova.api.validation.extra_specs import base

from trustpool_filter import specs

EXTRA_SPEC_VALIDATORS = [
    base.ExtraSpecValidator(
        name=specs.TRUSTED_HOST,
        description=(
            'Place the instance only on hosts whose current Trustpool '
            'attestation verdict has this status (the removed Nova '
            'TrustedFilter\'s key). A host without a verdict, or with an '
            'expired one, is unknown. Needs the TrustedFilter scheduler '
            'filter.'
        ),
        value={
            'type': str,
            'description': 'The verdict status a host must have.',
            'enum': list(specs.LEVELS),
        },
    ),
    base.ExtraSpecValidator(
        name=specs.PROFILE,
        description=(
            'Place the instance only on hosts whose current Trustpool '
            'verdict is trusted and satisfies this attestation profile. '
            'Needs the TrustedFilter scheduler filter.'
        ),
        value={
            'type': str,
            'description': 'An attestation profile name.',
            'pattern': specs.PROFILE_PATTERN,
        },
    ),
]


def register():
    return EXTRA_SPEC_VALIDATORS
