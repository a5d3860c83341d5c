"""Trustpool's Nova scheduler filter.

``trustpool_filter.TrustedFilter`` is the class to list in
``[filter_scheduler] available_filters``; see :mod:`trustpool_filter.filter`.
"""

from trustpool_filter.filter import TrustedFilter

__all__ = ['TrustedFilter']
