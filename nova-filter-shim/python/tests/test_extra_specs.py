"""The trust: extra-spec validators, through Nova's own validation code."""
import importlib.metadata
import unittest

from nova.api.validation.extra_specs import validators
from nova import exception

from trustpool_filter import extra_specs


class ExtraSpecsTest(unittest.TestCase):
    def test_entry_point_installed(self):
        eps = importlib.metadata.entry_points(
            group='nova.api.extra_spec_validators')
        mine = [ep for ep in eps if ep.name == 'trustpool']
        self.assertEqual(
            [ep.value for ep in mine], ['trustpool_filter.extra_specs'],
            'trustpool-filter is not installed: pip install '
            '--break-system-packages --no-build-isolation -e '
            'nova-filter-shim/python (make deps)')
        # Nova loads it at import time of validators.
        self.assertIn('trust:trusted_host', validators.VALIDATORS)
        self.assertIn('trust', validators.NAMESPACES)

    def test_validate(self):
        for v in extra_specs.register():
            validators.VALIDATORS.setdefault(v.name, v)
        validators.NAMESPACES.add('trust')
        ok = [('trust:trusted_host', 'trusted'),
              ('trust:trusted_host', 'untrusted'),
              ('trust:trusted_host', 'unknown'),
              ('trust:profile', 'baseline'), ('trust:profile', 'gpu-2026.1')]
        for name, value in ok:
            validators.validate(name, value)
        bad = [('trust:trusted_host', 'required'),
               ('trust:trusted_host', 'TRUSTED'),
               ('trust:profile', 'two words'), ('trust:profile', ''),
               ('trust:profile', 'x' * 65),
               ('trust:trusted_hosts', 'trusted'),  # misspelt key
               ('trust:anything', 'x')]
        for name, value in bad:
            with self.assertRaises(exception.ValidationError, msg=name):
                validators.validate(name, value)


if __name__ == '__main__':
    unittest.main()
